//! Enabling SR-IOV: `sriov-manage -e`, then wait until the VFs and their type listings are
//! really there. The exit status is never trusted (vGPU 17.x returns 0 when VF creation failed).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::facts::gpus::{virtfns, PCI_DEVICES};
use crate::facts::vgpus::{mdev_types_dir, vendor_dir};
use crate::host::{Cmd, Host};
use crate::wait;

pub const SRIOV_MANAGE: &str = "/usr/lib/nvidia/sriov-manage";

/// How long one `sriov-manage -e` gets before it is run again (VFs that never come are given up
/// on at the caller's timeout).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs of sriov-manage are serialized: concurrent runs were seen to race.
static SRIOV_MANAGE_LOCK: Mutex<()> = Mutex::new(());

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enabled {
    /// The VFs were already there.
    Already(u32),
    /// We enabled them; how long they took to appear.
    Now { vfs: u32, waited: Duration },
}

fn attr(pf: &str, name: &str) -> String {
    format!("{PCI_DEVICES}/{pf}/{name}")
}

fn read_u32(host: &Host, rel: &str) -> Option<u32> {
    host.read_trim(rel).and_then(|s| s.parse().ok())
}

/// Every VF of `pf` is enumerated and shows a vGPU type listing (mdev or vendor VFIO), or, for a
/// non-NVIDIA PF (any SR-IOV device), simply exists. `sriov_totalvfs` is read afresh: a driver
/// may lower it when it binds (igb turns the capability's 8 into 7), so a value read before that
/// is stale.
fn vfs_ready(host: &Host, pf: &str, nvidia: bool) -> bool {
    let Some(total) = read_u32(host, &attr(pf, "sriov_totalvfs")).filter(|t| *t > 0) else {
        return false;
    };
    if read_u32(host, &attr(pf, "sriov_numvfs")) != Some(total) {
        return false;
    }
    let vfs = virtfns(host, pf);
    if vfs.len() != total as usize {
        return false;
    }
    !nvidia
        || vfs.iter().all(|vf| {
            mdev_types_dir(host, vf).is_some()
                || host.exists(&format!("{}/creatable_vgpu_types", vendor_dir(vf)))
        })
}

/// The PF's driver. At boot udev binds drivers asynchronously, so a unit can run before it.
fn driver(host: &Host, pf: &str) -> Option<String> {
    host.link_name(&attr(pf, "driver"))
}

fn current_total(host: &Host, pf: &str, fallback: u32) -> u32 {
    read_u32(host, &attr(pf, "sriov_totalvfs")).unwrap_or(fallback)
}

fn rebind_nvidia(host: &Host, pf: &str) {
    tracing::warn!(pf, "PF has no driver; binding it to nvidia");
    if let Err(e) = host.write_attr("sys/bus/pci/drivers/nvidia/bind", pf) {
        tracing::warn!(pf, error = %e, "bind to nvidia failed");
    }
}

/// Enable the VFs of one PF and wait for them, bounded by `timeout`.
pub fn enable(host: &Host, pf: &str, timeout: Duration) -> Result<Enabled> {
    let start = Instant::now();
    let nvidia = host.read_trim(&attr(pf, "vendor")).as_deref() == Some("0x10de");
    // Wait (bounded) for a driver that exposes sriov_totalvfs.
    let total = wait::until(timeout / 2, || {
        read_u32(host, &attr(pf, "sriov_totalvfs")).filter(|_| driver(host, pf).is_some())
    });
    let total = match total {
        Some(t) => t,
        None if nvidia && driver(host, pf).is_none() => {
            rebind_nvidia(host, pf);
            wait::until(timeout / 4, || read_u32(host, &attr(pf, "sriov_totalvfs")))
                .ok_or_else(|| anyhow::anyhow!("{pf} has no driver bound and binding it to nvidia did not help: is the vGPU host driver loaded (lsmod | grep nvidia)?"))?
        }
        None => bail!(
            "{pf} shows no sriov_totalvfs after {:.0?}: its driver ({}) does not support SR-IOV",
            start.elapsed(),
            driver(host, pf).unwrap_or_else(|| "none".into())
        ),
    };
    if total == 0 {
        bail!("{pf} advertises no virtual functions (sriov_totalvfs = 0)");
    }
    if vfs_ready(host, pf, nvidia) {
        return Ok(Enabled::Already(current_total(host, pf, total)));
    }
    // Retried within the bound: right after a driver binds, enabling can fail (EIO was seen on a
    // real kernel at boot), and a failed run can leave the PF without its driver.
    let mut attempt = 0;
    while start.elapsed() < timeout {
        attempt += 1;
        let out = {
            let _serial = SRIOV_MANAGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            host.run(&Cmd::new(SRIOV_MANAGE).arg("-e").arg(pf))?
        };
        if !out.success() {
            tracing::warn!(pf, attempt, status = out.status, output = %out.tail(3), "sriov-manage failed");
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        let window = remaining.min(RETRY_AFTER);
        let ready = wait::until(window, || {
            if vfs_ready(host, pf, nvidia) {
                return Some(true);
            }
            // numvfs still 0 and no driver: stop waiting and retry.
            (nvidia && driver(host, pf).is_none()).then_some(false)
        });
        match ready {
            Some(true) => {
                return Ok(Enabled::Now {
                    vfs: current_total(host, pf, total),
                    waited: start.elapsed(),
                })
            }
            Some(false) => rebind_nvidia(host, pf),
            // VFs on their way (some, not all): keep waiting rather than re-running.
            None if read_u32(host, &attr(pf, "sriov_numvfs")).unwrap_or(0) > 0 => {
                let rest = timeout.saturating_sub(start.elapsed());
                if wait::until(rest, || vfs_ready(host, pf, nvidia).then_some(())).is_some() {
                    return Ok(Enabled::Now {
                        vfs: total,
                        waited: start.elapsed(),
                    });
                }
            }
            None => {}
        }
    }
    let now = read_u32(host, &attr(pf, "sriov_numvfs")).unwrap_or(0);
    let total = current_total(host, pf, total);
    bail!(
        "{pf} advertises {total} virtual functions but {now} appeared within {:.0?} \
         (sriov-manage -e said nothing useful; a T4 advertises VFs but never creates them; check \
         `dmesg | grep -i nvrm` and that SR-IOV is enabled in the firmware)",
        start.elapsed()
    )
}
