//! Enabling SR-IOV: `sriov-manage -e`, then wait until the VFs and their type listings are
//! really there. The exit status is never trusted (vGPU 17.x returns 0 when VF creation failed).

use std::sync::{Condvar, Mutex};
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

/// How many times a run that failed for a passing reason (an NVML client holding the GPU, the
/// vGPU manager still starting at boot) is tried in all, and the pause after the first failure
/// (doubled each time, at most [`BACKOFF_MAX`]).
const TRIES: u32 = 6;
const BACKOFF: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Runs of sriov-manage are serialized: the script rebinds the GPU through `pci-pf-stub`, whose
/// `new_id` is shared by every GPU of one model, and two runs at once fail on it (`File exists`).
/// Each hold is bounded (the run is killed at its timeout), and so is the wait for it: one
/// GPU's hung run delays the others by at most its bound, never stops them.
static SRIOV_MANAGE_BUSY: Mutex<bool> = Mutex::new(false);
static SRIOV_MANAGE_FREE: Condvar = Condvar::new();

/// The longest a GPU waits for another GPU's run before it gives up: longer than any one run's
/// bound, so only a queue of runs that each used their whole bound ends here.
fn lock_wait_max() -> Duration {
    crate::host::kernel::default_timeout("sriov-manage") * 2
}

/// The right to run sriov-manage, given back when dropped.
struct Serial;

impl Drop for Serial {
    fn drop(&mut self) {
        *SRIOV_MANAGE_BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
        SRIOV_MANAGE_FREE.notify_one();
    }
}

/// Take the right to run sriov-manage within `max` (woken the moment it is given back); how
/// long the wait took.
fn lock_bounded(max: Duration) -> Option<(Serial, Duration)> {
    let start = Instant::now();
    let mut busy = SRIOV_MANAGE_BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        let left = max.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        busy = SRIOV_MANAGE_FREE
            .wait_timeout(busy, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *busy = true;
    Some((Serial, start.elapsed()))
}

/// Why a run of `sriov-manage -e` failed, as its recorded messages say (recorded-behaviour §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// `Cannot obtain unbindLock for <bdf>`: an NVML client holds the GPU.
    UnbindLock,
    /// `awk: ... File exists` / `No such device` at boot: the vGPU manager is still starting.
    BootRace,
    /// Any other non-zero exit.
    Other,
}

impl Failure {
    fn of(out: &crate::host::RunOutput) -> Option<Failure> {
        if out.success() {
            return None;
        }
        let text = format!("{}\n{}", out.stdout, out.stderr);
        Some(if text.contains("Cannot obtain unbindLock") {
            Failure::UnbindLock
        } else if text.contains("File exists") || text.contains("No such device") {
            Failure::BootRace
        } else {
            Failure::Other
        })
    }

    fn passing(self) -> bool {
        self != Failure::Other
    }

    /// The cause and the fix, for the operator.
    fn advice(self) -> &'static str {
        match self {
            Failure::UnbindLock => {
                "another NVML client holds the GPU (nvidia-smi, DCGM, nvidia-persistenced): \
                 stop it (e.g. `systemctl stop nvidia-persistenced nvidia-dcgm`) and run again"
            }
            Failure::BootRace => {
                "the vGPU manager was still starting: check `systemctl status nvidia-vgpu-mgr` \
                 and `dmesg | grep NVRM`, then run again"
            }
            Failure::Other => "see its output above and `dmesg | grep -i nvrm`",
        }
    }
}

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

/// Enable the VFs of one PF and wait for them, bounded by `timeout` (plus the time spent
/// waiting for another GPU's sriov-manage run, itself bounded). Success is judged by
/// `sriov_numvfs` and the VFs' type listings, never by the exit status alone: vGPU 17.x exits
/// 0 when VF creation failed, and 0 on a GPU it does not support.
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
    let mut deadline = start + timeout;
    let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
    // Retried within the bound: right after a driver binds, enabling can fail (EIO was seen on a
    // real kernel at boot), and a failed run can leave the PF without its driver.
    let mut attempt = 0;
    let mut passing_failures = 0;
    let mut last: Option<(Failure, String)> = None;
    while !left(deadline).is_zero() {
        attempt += 1;
        let out = {
            let Some((_serial, waited)) = lock_bounded(lock_wait_max()) else {
                bail!(
                    "{pf}: sriov-manage runs for other GPUs held its lock for more than {} s; \
                     look for a hung sriov-manage (`ps -ef | grep sriov-manage`) and `dmesg | grep NVRM`",
                    lock_wait_max().as_secs()
                );
            };
            // Another GPU's run is not this GPU's time.
            deadline += waited;
            let bound = left(deadline)
                .min(crate::host::kernel::default_timeout("sriov-manage"))
                .max(Duration::from_secs(1));
            let cmd = Cmd::new(SRIOV_MANAGE).arg("-e").arg(pf).timeout(bound);
            match host.run(&cmd) {
                Ok(out) => out,
                Err(e) if e.to_string().starts_with("timed out after") => bail!(
                    "{pf}: {e:#}; it was killed, and the other GPUs went on. The driver may be \
                     stuck: check `dmesg | grep NVRM` and `systemctl status nvidia-vgpu-mgr`, \
                     then run again"
                ),
                Err(e) => return Err(e),
            }
        };
        if let Some(f) = Failure::of(&out) {
            tracing::warn!(pf, attempt, status = out.status, output = %out.tail(3), "sriov-manage failed");
            last = Some((f, out.tail(2)));
            if f.passing() {
                passing_failures += 1;
                if passing_failures >= TRIES {
                    break;
                }
                let pause = (BACKOFF * 2u32.saturating_pow(passing_failures - 1))
                    .min(BACKOFF_MAX)
                    .min(left(deadline));
                std::thread::sleep(pause);
                // The run stopped before touching the VFs: nothing to wait for.
                if read_u32(host, &attr(pf, "sriov_numvfs")).unwrap_or(0) == 0 {
                    continue;
                }
            }
        }
        let window = left(deadline).min(RETRY_AFTER);
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
            // VFs there (some, or all with type listings still coming in, per VF): keep
            // waiting rather than re-running.
            None if read_u32(host, &attr(pf, "sriov_numvfs")).unwrap_or(0) > 0
                && wait::until(left(deadline), || vfs_ready(host, pf, nvidia).then_some(()))
                    .is_some() =>
            {
                return Ok(Enabled::Now {
                    vfs: total,
                    waited: start.elapsed(),
                });
            }
            None => {}
        }
    }
    let now = read_u32(host, &attr(pf, "sriov_numvfs")).unwrap_or(0);
    let total = current_total(host, pf, total);
    if let Some((f, tail)) = last.clone().filter(|(f, _)| f.passing()) {
        bail!(
            "{pf}: sriov-manage -e failed {passing_failures} time(s) ({}): {}",
            tail.replace('\n', " / "),
            f.advice()
        );
    }
    let said = match &last {
        Some((_, tail)) => format!("sriov-manage -e failed: {}", tail.replace('\n', " / ")),
        None => "sriov-manage -e exited 0 (it does even when VF creation failed)".to_string(),
    };
    if now > 0 && now == total {
        bail!(
            "{pf}: its {now} VFs exist but not every one shows a vGPU type listing within {:.0?} \
             ({said}): the vGPU manager may not be running; check `systemctl status \
             nvidia-vgpu-mgr` and `dmesg | grep -i nvrm`",
            start.elapsed()
        );
    }
    bail!(
        "{pf} advertises {total} virtual functions but {now} appeared within {:.0?} \
         ({said}; a T4 advertises VFs but never creates them): check `dmesg | grep -i nvrm` and \
         that SR-IOV is enabled in the firmware",
        start.elapsed()
    )
}
