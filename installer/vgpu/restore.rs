//! `vgpuctl restore`'s report: at every boot the restore re-enables SR-IOV and recreates each
//! pinned vGPU with its saved UUID on its saved parent (planned by `setup::planner::restore`,
//! run by `setup::apply::restore`); this is what it says it did, in `run/vgpuctl/restore.json`
//! and one summary line.

use anyhow::Result;
use serde::Serialize;

use crate::host::{Host, WriteOpts};

pub const REPORT: &str = "run/vgpuctl/restore.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Present,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceResult {
    pub uuid: String,
    pub state: State,
    pub reason: String,
    pub ms: u64,
    pub parent: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SriovResult {
    pub pf: String,
    pub ok: bool,
    pub vfs: u32,
    pub ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub boot_id: Option<String>,
    pub ok: bool,
    pub ms: u64,
    pub sriov: Vec<SriovResult>,
    pub devices: Vec<DeviceResult>,
}

impl Report {
    pub fn summary(&self) -> String {
        let count = |s: State| self.devices.iter().filter(|d| d.state == s).count();
        format!(
            "vgpuctl restore: {} saved vGPU(s): {} created, {} present, {} failed; SR-IOV on {}/{} GPU(s); {} ms",
            self.devices.len(),
            count(State::Created),
            count(State::Present),
            count(State::Failed),
            self.sriov.iter().filter(|s| s.ok).count(),
            self.sriov.len(),
            self.ms
        )
    }
}

/// Write the report where `vgpuctl status` and the tests read it.
pub fn write(host: &Host, report: &Report) -> Result<()> {
    host.write_file(
        REPORT,
        serde_json::to_string_pretty(report)?.as_bytes(),
        WriteOpts::state(),
    )?;
    Ok(())
}
