//! The active profile, `/etc/vgpuctl/profile.toml`: what the operator asked for plus the vGPUs
//! pinned with their UUIDs. `restore` reads it at every boot. It never holds the driver link.

use anyhow::{Context, Result};

use crate::host::{Host, WriteOpts};
use crate::profile::{Profile, SavedVgpu};

pub const PATH: &str = "etc/vgpuctl/profile.toml";

pub fn load(host: &Host) -> Result<Option<Profile>> {
    let text = match host.read(PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format!("cannot read /{PATH}")),
    };
    let p: Profile = toml::from_str(&text).with_context(|| {
        format!("/{PATH} is not a valid vgpuctl profile; fix it or restore it from a backup")
    })?;
    Ok(Some(p))
}

/// The profile as stored: the driver section is dropped (its link is a credential and restore
/// has no use for it).
pub fn render(profile: &Profile) -> Result<String> {
    let mut p = profile.clone();
    p.driver = None;
    let body = toml::to_string_pretty(&p)?;
    Ok(format!(
        "# vgpuctl active profile: restored at every boot by vgpuctl-restore.service.\n\
         # Written by vgpuctl; [[vgpus]] entries pin each vGPU's UUID, type and parent.\n{body}"
    ))
}

/// Save atomically. Returns whether the file changed.
pub fn save(host: &Host, profile: &Profile) -> Result<bool> {
    host.write_file(PATH, render(profile)?.as_bytes(), WriteOpts::state())
}

/// Add or replace pins by UUID, keeping the order of first appearance.
pub fn pin(profile: &mut Profile, vgpus: impl IntoIterator<Item = SavedVgpu>) {
    for v in vgpus {
        match profile.vgpus.iter_mut().find(|s| s.uuid == v.uuid) {
            Some(s) => *s = v,
            None => profile.vgpus.push(v),
        }
    }
}
