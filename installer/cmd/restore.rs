use std::time::Duration;

/// How long restore waits for a run holding the lock: the restore unit's `TimeoutStartSec` (300 s)
/// less the 120 s VF wait and time to create the vGPUs.
pub const LOCK_WAIT: Duration = Duration::from_secs(150);

use crate::exit::{Exit, Failure};
use crate::host::Host;
use crate::setup::{apply, observe, planner};

pub fn run(host: &Host, vf_timeout: u64, dry_run: bool) -> Result<Exit, Failure> {
    if !dry_run {
        crate::privilege::require_root(host, "restore")?;
        if !host.reach().runs_programs() {
            return Err(Failure::usage(crate::setup::offline::refusal(
                host,
                &["creating the vGPUs (sysfs, `sriov-manage`)"],
            )));
        }
    }
    if crate::pins::load(host)?.is_none() {
        crate::outln!(
            "vgpuctl restore: no pins (/etc/vgpuctl/vgpus.toml) and no active profile: nothing to restore"
        );
        return Ok(Exit::Ok);
    }
    if dry_run {
        // Observe, plan, show: exactly the actions the real run starts with.
        let pins = crate::pins::load(host)?.unwrap_or_default();
        let lanes = planner::restore(&observe::observe_vgpus(host, &pins), &pins, vf_timeout);
        crate::outln!(
            "vgpuctl restore: the plan for {} pinned vGPU(s):",
            pins.vgpus.len()
        );
        for l in &lanes {
            crate::out!("  {l}");
        }
        crate::outln!(
            "A write whose precondition no longer holds stops its GPU's lane, which observes the \
             host again and plans again (at most {} times).",
            crate::setup::MAX_REPLANS
        );
        crate::outln!("(dry run: nothing was changed)");
        return Ok(Exit::Ok);
    }
    // One run at a time (setup, import, another restore): two restores creating the same vGPUs at
    // once lose some of them to each other's EEXIST/EBUSY.
    let _lock = crate::setup::lock::acquire_waiting(host, "restore", LOCK_WAIT)?;
    // A host set up by an older release: its pins move to vgpus.toml now.
    if crate::pins::migrate(host)? {
        crate::outln!("vgpuctl restore: moved the pins to /etc/vgpuctl/vgpus.toml");
    }
    let pins = crate::pins::load(host)?.unwrap_or_default();
    // A kernel booted without an nvidia module built for it can make no vGPU: say why at once
    // rather than wait for every GPU's VFs to time out.
    if let Some(cause) = crate::facts::kernels::boot_blocker(host, &pins) {
        eprintln!("vgpuctl restore: {cause}");
        crate::outln!(
            "vgpuctl restore: 0 of {} pinned vGPU(s) restored: {cause}",
            pins.vgpus.len()
        );
        return Ok(Exit::Failed);
    }
    let profile = crate::active::load(host)?.unwrap_or_default();
    let lanes = planner::restore(&observe::observe_vgpus(host, &pins), &pins, vf_timeout);
    let report = apply::restore(host, &lanes, Duration::from_secs(vf_timeout))?;
    for d in report.devices.iter().filter(|d| !d.reason.is_empty()) {
        eprintln!(
            "vgpuctl restore: {} ({} on {}): {:?}: {}",
            d.uuid, d.type_name, d.parent, d.state, d.reason
        );
    }
    for s in report.sriov.iter().filter(|s| !s.ok) {
        eprintln!("vgpuctl restore: SR-IOV on {}: {}", s.pf, s.reason);
    }
    // One summary line: what the journal shows for the unit.
    crate::outln!("{}", report.summary());
    // CloudPods' host.conf follows the pins; a failure there does not fail the restore.
    match crate::cloudpods::sync(host, &profile, &pins) {
        Ok(Some(msg)) => crate::outln!("{msg}"),
        Ok(None) => {}
        Err(e) => eprintln!("vgpuctl restore: {e:#}"),
    }
    // So does the [nova] fragment, with the same rule.
    if let Some(cfg) = &profile.nova {
        match crate::nova_conf::sync(host, cfg, &pins) {
            Ok(msg) => crate::outln!("{msg}"),
            Err(e) => eprintln!("vgpuctl restore: {e:#}"),
        }
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Failed })
}
