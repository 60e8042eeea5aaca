//! The profile's `[nova]` section: keep the nova.conf fragment (`conf`, a file vgpuctl owns,
//! [`crate::nova::fragment`] of the pins) in step with the pinned vGPUs at every setup and
//! restore, and restart nova-compute after a change when the profile says so.
//!
//! nova-compute reads its configuration when it starts, so a changed fragment needs a restart.
//! A restart that failed is remembered in [`RESTART_PENDING`] and retried by the next setup or
//! restore, even though the file is then already right (as for CloudPods).

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use crate::host::{Cmd, Host, WriteOpts};
use crate::pins::Pins;
use crate::profile::NovaConfig;

/// Marker: the fragment changed but nova-compute was not restarted yet.
pub const RESTART_PENDING: &str = "var/lib/vgpuctl/nova-restart-pending";

/// nova-compute's unit: `openstack-nova-compute` on RDO (RHEL, Rocky), `nova-compute` on
/// Debian and Ubuntu.
pub fn restart_cmd(host: &Host) -> Cmd {
    let unit = if crate::facts::system::unit_exists(host, "openstack-nova-compute.service") {
        "openstack-nova-compute"
    } else {
        "nova-compute"
    };
    Cmd::new("systemctl").args(["restart", unit])
}

/// Why `cfg` cannot be kept here (its directory is missing, or it names a directory), checked
/// before setup changes anything.
pub fn check(host: &Host, cfg: &NovaConfig) -> Result<(), String> {
    let path = &cfg.conf;
    let rel = path.trim_start_matches('/');
    if host.is_dir(rel) {
        return Err(format!(
            "{path} is a directory; give the fragment's file, e.g. {}",
            crate::profile::NOVA_CONF
        ));
    }
    let dir = std::path::Path::new(rel)
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dir.is_empty() && !host.is_dir(&dir) {
        return Err(format!(
            "/{dir} does not exist: is nova-compute installed on this host? Install it first, \
             or set conf to a file in a directory nova-compute reads (vgpuctl creates no \
             directories for Nova)"
        ));
    }
    Ok(())
}

/// Bring `cfg`'s file in line with `pins` and restart nova-compute when asked to. What was
/// done, to print; errors say what to do next.
pub fn sync(host: &Host, cfg: &NovaConfig, pins: &Pins) -> anyhow::Result<String> {
    let path = &cfg.conf;
    let rel = path.trim_start_matches('/');
    check(host, cfg).map_err(|e| anyhow::anyhow!("Nova: {e}"))?;
    let ids: BTreeMap<_, _> = pins
        .vgpus
        .iter()
        .filter(|v| v.interface == "vendor-vfio")
        .filter_map(|v| crate::facts::gpus::pci_ids(host, &v.parent).map(|i| (v.parent.clone(), i)))
        .collect();
    let (text, _) = crate::nova::fragment(pins, &ids).map_err(|e| anyhow::anyhow!("Nova: {e}"))?;
    let changed = host
        .write_file(rel, text.as_bytes(), WriteOpts::default())
        .with_context(|| format!("Nova: cannot write {path}"))?;
    let n = pins
        .vgpus
        .iter()
        .filter(|v| crate::pci::PciAddr::parse(&v.parent).is_ok())
        .count();
    let mut lines = vec![if changed {
        format!("Nova: wrote {path} ({n} pinned vGPU(s))")
    } else {
        format!("Nova: {path} already lists the {n} pinned vGPU(s)")
    }];
    let pending = host.exists(RESTART_PENDING);
    let cmd = restart_cmd(host);
    match (cfg.restart, changed || pending) {
        (true, true) => {
            // Remembered before it is tried: a failure (or a power cut) is retried.
            if let Some(why) = host.run_remembered(RESTART_PENDING, &cmd)? {
                lines.push(format!(
                    "Nova: restarting nova-compute failed: `{cmd}` {why}. Run it by hand; \
                     vgpuctl tries again at the next setup or restore"
                ));
                bail!("{}", lines.join("\n"));
            }
            lines.push(format!("Nova: restarted nova-compute (`{cmd}`)"));
        }
        (false, true) if changed => lines.push(format!(
            "Nova: nova-compute reads it when it starts: run `{cmd}` (or set restart = true in \
             [nova])"
        )),
        _ => {}
    }
    Ok(lines.join("\n"))
}
