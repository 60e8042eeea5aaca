//! `vgpuctl restore`: at every boot, re-enable SR-IOV and recreate each pinned vGPU with its
//! saved UUID on its saved parent. GPUs are independent: each runs in its own thread and one
//! failing GPU never stops the others. Only sriov-manage runs are serialized.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::facts::gpus::virtfns;
use crate::facts::vgpus::{read_parent, vendor_dir};
use crate::facts::Interface;
use crate::host::{Host, WriteOpts};
use crate::pins::Pins;
use crate::profile::SavedVgpu;

use super::create::{self, mdev_type_dir, mdev_type_of, name_matches, vendor_current};
use super::place::Create;
use super::sriov;

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

/// The physical function a pinned device's SR-IOV depends on (None: PF parent or non-PCI parent).
fn sriov_pf(v: &SavedVgpu) -> Option<&str> {
    v.gpu.as_deref().filter(|g| *g != v.parent)
}

pub fn restore(host: &Host, pins: &Pins, vf_timeout: Duration) -> Result<Report> {
    let start = Instant::now();
    // Group by GPU (or by mdev parent when it is not a PCI function of a GPU).
    let mut groups: BTreeMap<String, Vec<SavedVgpu>> = BTreeMap::new();
    for v in &pins.vgpus {
        let key = v.gpu.clone().unwrap_or_else(|| v.parent.clone());
        groups.entry(key).or_default().push(v.clone());
    }
    for pf in &pins.sriov {
        groups.entry(pf.clone()).or_default();
    }
    let needs_sriov = |key: &str, devs: &[SavedVgpu]| {
        pins.sriov.iter().any(|p| p == key) || devs.iter().any(|d| sriov_pf(d) == Some(key))
    };
    let results: Vec<(Option<SriovResult>, Vec<DeviceResult>)> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|(key, devs)| {
                let sriov = needs_sriov(key, devs);
                s.spawn(move || restore_group(host, key, devs, sriov, vf_timeout))
            })
            .collect();
        handles
            .into_iter()
            .zip(groups.iter())
            .map(|(h, (key, devs))| {
                h.join().unwrap_or_else(|_| {
                    let failed = devs
                        .iter()
                        .map(|d| failed(d, format!("internal error restoring {key}"), 0))
                        .collect();
                    (None, failed)
                })
            })
            .collect()
    });
    let mut report = Report {
        boot_id: host.read_trim("proc/sys/kernel/random/boot_id"),
        ok: true,
        ms: 0,
        sriov: Vec::new(),
        devices: Vec::new(),
    };
    for (s, d) in results {
        report.sriov.extend(s);
        report.devices.extend(d);
    }
    report.ok = report.devices.iter().all(|d| d.state != State::Failed)
        && report.sriov.iter().all(|s| s.ok);
    report.ms = start.elapsed().as_millis() as u64;
    host.write_file(
        REPORT,
        serde_json::to_string_pretty(&report)?.as_bytes(),
        WriteOpts::state(),
    )?;
    Ok(report)
}

fn failed(d: &SavedVgpu, reason: String, ms: u64) -> DeviceResult {
    DeviceResult {
        uuid: d.uuid.clone(),
        state: State::Failed,
        reason,
        ms,
        parent: d.parent.clone(),
        type_name: d.type_name.clone(),
    }
}

fn restore_group(
    host: &Host,
    key: &str,
    devs: &[SavedVgpu],
    sriov: bool,
    vf_timeout: Duration,
) -> (Option<SriovResult>, Vec<DeviceResult>) {
    let mut sriov_result = None;
    if sriov {
        let t = Instant::now();
        match sriov::enable(host, key, vf_timeout) {
            Ok(e) => {
                let vfs = match e {
                    sriov::Enabled::Already(n) => n,
                    sriov::Enabled::Now { vfs, .. } => vfs,
                };
                sriov_result = Some(SriovResult {
                    pf: key.to_string(),
                    ok: true,
                    vfs,
                    ms: t.elapsed().as_millis() as u64,
                    reason: String::new(),
                });
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(pf = key, "{reason}");
                let ms = t.elapsed().as_millis() as u64;
                let devices = devs
                    .iter()
                    .map(|d| failed(d, format!("SR-IOV: {reason}"), ms))
                    .collect();
                return (
                    Some(SriovResult {
                        pf: key.to_string(),
                        ok: false,
                        vfs: 0,
                        ms,
                        reason,
                    }),
                    devices,
                );
            }
        }
    }
    // VFs already claimed by a pinned device that is present, so a moved device never takes one.
    let mut claimed: Vec<String> = devs
        .iter()
        .filter(|d| d.interface == "vendor-vfio")
        .filter(|d| vendor_current(host, &d.parent).as_deref() == Some(d.type_id.as_str()))
        .map(|d| d.parent.clone())
        .collect();
    let results = devs
        .iter()
        .map(|d| {
            let t = Instant::now();
            let (state, reason) = match restore_one(host, d, &mut claimed) {
                Ok((state, reason)) => (state, reason),
                Err(e) => (State::Failed, format!("{e:#}")),
            };
            DeviceResult {
                uuid: d.uuid.clone(),
                state,
                reason,
                ms: t.elapsed().as_millis() as u64,
                parent: d.parent.clone(),
                type_name: d.type_name.clone(),
            }
        })
        .collect();
    (sriov_result, results)
}

fn interface_of(d: &SavedVgpu) -> Interface {
    if d.interface == "vendor-vfio" {
        Interface::VendorVfio
    } else {
        Interface::Mdev
    }
}

fn restore_one(host: &Host, d: &SavedVgpu, claimed: &mut Vec<String>) -> Result<(State, String)> {
    let interface = interface_of(d);
    // Present already?
    match interface {
        Interface::Mdev => {
            if let Some(name) = mdev_type_of(host, &d.uuid) {
                return if name_matches(&name, &d.type_name) || name == d.type_id {
                    Ok((State::Present, String::new()))
                } else {
                    anyhow::bail!("exists with type {name}, not {}: left alone", d.type_name)
                };
            }
        }
        _ => {
            if claimed.contains(&d.parent)
                && vendor_current(host, &d.parent).as_deref() == Some(d.type_id.as_str())
            {
                return Ok((State::Present, String::new()));
            }
        }
    }
    let on = |parent: &str| Create {
        gpu: d.gpu.clone().unwrap_or_default(),
        parent: parent.to_string(),
        type_id: d.type_id.clone(),
        type_name: d.type_name.clone(),
        uuid: d.uuid.clone(),
        interface,
    };
    // The saved parent first, if it can take it.
    if parent_free(host, d, &d.parent, claimed) {
        create::create(host, &on(&d.parent))?;
        claim(claimed, d, &d.parent);
        return Ok((State::Created, String::new()));
    }
    // Else any free VF of the same GPU.
    if let Some(gpu) = d.gpu.as_deref() {
        for vf in virtfns(host, gpu) {
            if vf != d.parent && parent_free(host, d, &vf, claimed) {
                create::create(host, &on(&vf))?;
                claim(claimed, d, &vf);
                return Ok((
                    State::Created,
                    format!(
                        "saved parent {} was gone or taken; created on {vf}",
                        d.parent
                    ),
                ));
            }
        }
    }
    anyhow::bail!(
        "no parent can take it: saved parent {} is gone or full and no other free parent of {} \
         offers {} now (in NVIDIA's default equal-size mode a GPU holds one vGPU type at a time)",
        d.parent,
        d.gpu.as_deref().unwrap_or("its device"),
        d.type_name
    )
}

/// A vendor-VFIO VF holds one vGPU and shows no UUID, so a VF used by one pin is taken for the
/// others. mdev parents say themselves how many more they take (a pre-Ampere PF takes many).
fn claim(claimed: &mut Vec<String>, d: &SavedVgpu, parent: &str) {
    if interface_of(d) == Interface::VendorVfio {
        claimed.push(parent.to_string());
    }
}

/// Can `parent` take device `d` now?
fn parent_free(host: &Host, d: &SavedVgpu, parent: &str, claimed: &[String]) -> bool {
    if claimed.iter().any(|c| c == parent) {
        return false;
    }
    match interface_of(d) {
        Interface::Mdev => {
            let Some(dir) = mdev_type_dir(host, parent, &d.type_name, &d.type_id) else {
                return false;
            };
            host.read_trim(&format!("{dir}/available_instances"))
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0)
                > 0
        }
        _ => {
            vendor_current(host, parent).is_none()
                && host.exists(&format!("{}/current_vgpu_type", vendor_dir(parent)))
                && read_parent(host, parent, &Default::default())
                    .map(|p| p.types.iter().any(|t| t.id == d.type_id))
                    .unwrap_or(false)
        }
    }
}
