//! The checkpoint state, `/var/lib/vgpuctl/state.toml`, written atomically after every step.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::host::{Host, WriteOpts};

pub const PATH: &str = "var/lib/vgpuctl/state.toml";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The profile this setup runs (a path inside the root, or where the wizard saved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Set when a step needed a reboot: the boot id at that moment. A different boot id on the
    /// next run means the reboot happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_boot_id: Option<String>,
    /// Why the reboot is needed (shown when a run finds it still pending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_reasons: Vec<String>,
    /// Steps done, in order (ids), for the operator's benefit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    #[serde(default)]
    pub finished: bool,
    /// A driver install started and did not finish (a full disk, a crash): whatever files it
    /// left (the manager's unit among them) are not an installed driver, and it is redone.
    /// Set before the installer runs, cleared only after it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_install_started: Option<String>,
}

pub fn load(host: &Host) -> Result<State> {
    match host.read(PATH) {
        Ok(t) => toml::from_str(&t).with_context(|| {
            format!(
                "/{PATH} is corrupt; delete it to start setup over (nothing else depends on it)"
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).context(format!("cannot read /{PATH}")),
    }
}

pub fn save(host: &Host, s: &State) -> Result<()> {
    host.write_file(
        PATH,
        toml::to_string_pretty(s)?.as_bytes(),
        WriteOpts::state(),
    )?;
    Ok(())
}

/// Record that a driver install starts (`Some(what)`) or finished (`None`), keeping the rest.
pub fn mark_driver_install(host: &Host, started: Option<&str>) -> Result<()> {
    let mut s = load(host)?;
    s.driver_install_started = started.map(str::to_string);
    save(host, &s)
}

/// A driver install started and did not finish (read from the state file; unreadable = no).
pub fn driver_install_unfinished(host: &Host) -> bool {
    load(host).is_ok_and(|s| s.driver_install_started.is_some())
}
