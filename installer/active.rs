//! The active profile, `/etc/vgpuctl/profile.toml`: the copy of what the operator asked for
//! (host policy, `[[gpus]]`, `[cloudpods]`), read by setup, restore (its `[cloudpods]`) and export.
//! It never holds the driver link, nor the pins: those live in [`crate::pins`]
//! (`/etc/vgpuctl/vgpus.toml`); an older release's copy may still hold them until
//! [`crate::pins::migrate`] moves them.

use anyhow::{Context, Result};

use crate::host::{Host, WriteOpts};
use crate::profile::Profile;

pub const PATH: &str = "etc/vgpuctl/profile.toml";

pub fn load(host: &Host) -> Result<Option<Profile>> {
    let text = match host.read(PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format!("cannot read /{PATH}")),
    };
    // The same validation as any profile: its pins become sysfs paths (parents, type ids).
    let p = Profile::parse(&text, &format!("/{PATH}")).map_err(|e| {
        anyhow::anyhow!("{e}: not a valid vgpuctl profile; fix it or restore it from a backup")
    })?;
    Ok(Some(p))
}

/// The profile as stored: the driver section is dropped (its link is a credential and restore
/// has no use for it), and so are the pins (`sriov`, `[[vgpus]]`: they go to the pins file).
pub fn render(profile: &Profile) -> Result<String> {
    let mut p = profile.clone();
    p.driver = None;
    p.sriov.clear();
    p.vgpus.clear();
    let body = toml::to_string_pretty(&p)?;
    Ok(format!(
        "# vgpuctl active profile: a copy of the profile setup applied (without its driver link).\n\
         # Written by vgpuctl; the vGPUs it pins are in /etc/vgpuctl/vgpus.toml.\n{body}"
    ))
}

/// Save atomically. Returns whether the file changed.
pub fn save(host: &Host, profile: &Profile) -> Result<bool> {
    host.write_file(PATH, render(profile)?.as_bytes(), WriteOpts::state())
}
