//! Who may change the host: the check every mutating command (and setup) makes first.

use crate::exit::Failure;
use crate::host::Host;

/// Mutating commands on the real `/` need root: refuse before doing anything, with the fix.
pub fn require_root(host: &Host, what: &str) -> Result<(), Failure> {
    if host.is_system_root() && !nix::unistd::geteuid().is_root() {
        return Err(Failure::usage(format!(
            "{what} changes the host (sysfs, systemd units, /etc): run it as root (sudo vgpuctl {what} ...)"
        )));
    }
    Ok(())
}
