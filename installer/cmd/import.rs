//! `vgpuctl import`: move hand-made persistence (rc.local echo lines, sriov-manage lines, mdevctl
//! definitions) into the active profile and the restore unit, so nothing is created twice.
//! Observe, plan (installer/import/plan.rs), show, apply through the setup executor.

use std::time::Duration;

use crate::exit::{Exit, Failure};
use crate::host::Host;
use crate::profile::Profile;
use crate::setup::import_plan::ImportPlan;
use crate::setup::import_sources as sources;
use crate::setup::{apply, observe, MAX_REPLANS};

pub use crate::setup::import_sources::{MDEVCTL_DIR, RC_LOCAL};

fn observe_and_plan(
    host: &Host,
    gave_up: &[String],
    vf_timeout: Duration,
) -> Result<ImportPlan, Failure> {
    let f = observe::observe(host)?;
    let src = sources::observe(host);
    Ok(crate::setup::import_plan::plan(
        &f,
        &src,
        gave_up,
        vf_timeout.as_secs(),
    ))
}

pub fn run(host: &Host, dry_run: bool, vf_timeout: Duration) -> Result<Exit, Failure> {
    if !dry_run {
        crate::privilege::require_root(host, "import")?;
    }
    let _lock = if dry_run {
        None
    } else {
        Some(crate::setup::lock::acquire(host, "import")?)
    };
    let mut ip = observe_and_plan(host, &[], vf_timeout)?;
    if ip.nothing {
        crate::outln!("Nothing to import: no vGPU or sriov-manage lines in /etc/rc.local and no /etc/mdevctl.d definitions.");
        for p in &ip.problems {
            crate::outln!("  {p}");
        }
        return Ok(if ip.problems.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    if let Some(why) = &ip.refused {
        return Err(Failure::failed(why));
    }
    crate::out!("{ip}");
    if dry_run {
        crate::outln!("(dry run: nothing was changed)");
        return Ok(Exit::Ok);
    }

    let mut gave_up: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut replans = 0;
    loop {
        // The profile the steps pin into is the active one (import has no operator profile).
        let active = crate::active::load(host)?.unwrap_or_else(Profile::default);
        let ctx = apply::Ctx {
            host,
            profile: &active,
            vf_timeout,
            allow_unverified: false,
        };
        let mut done: Vec<String> = Vec::new();
        let (failed, stale) = apply::execute(&ctx, &ip.plan, &mut |step, ok| {
            if ok {
                done.push(step.id.clone());
            }
            Ok(())
        })?;
        // SR-IOV that did not come up: its VFs' lines are judged as they are, not waited for again.
        for s in &ip.plan.steps {
            if let crate::setup::plan::Action::EnableSriov { pf, .. } = &s.action {
                if failed.iter().any(|f| f.starts_with(&s.title)) {
                    gave_up.push(pf.clone());
                }
            }
        }
        let sriov_only = failed.iter().all(|f| {
            ip.plan.steps.iter().any(|s| {
                f.starts_with(&s.title)
                    && matches!(s.action, crate::setup::plan::Action::EnableSriov { .. })
            })
        });
        failures.extend(failed);
        if let Some(why) = &stale {
            replans += 1;
            if replans > MAX_REPLANS {
                return Err(Failure::failed(format!(
                    "import stopped: the host kept changing under the plan ({why}); it was \
                     observed and planned again {MAX_REPLANS} times"
                )));
            }
            crate::outln!(
                "The host changed since the plan ({why}): observing it again and planning again \
                 ({replans} of {MAX_REPLANS})."
            );
        } else if ip.plan.later.is_none() {
            report_done(&ip, &done);
            break;
        } else if !sriov_only {
            break;
        }
        // The planned re-observation: the VFs are there now, or given up on.
        ip = observe_and_plan(host, &gave_up, vf_timeout)?;
        if let Some(why) = &ip.refused {
            return Err(Failure::failed(why));
        }
        crate::out!("{ip}");
    }
    if !failures.is_empty() || !ip.problems.is_empty() {
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}

/// What changed, in the words the operator knows from earlier releases.
fn report_done(ip: &ImportPlan, done: &[String]) {
    let done = |id: &str| done.iter().any(|d| d == id);
    if done("import:rc.local") {
        crate::outln!(
            "Changed {} line(s) of /etc/rc.local as shown (backup under /var/lib/vgpuctl/backups/).",
            ip.rc_changes.len()
        );
    }
    for p in &ip.mdevctl_manual {
        if done(&format!("import:{}", &p[1..])) {
            crate::outln!("Set {p} to start manually: vgpuctl-restore.service creates it at boot.");
        }
    }
    if done("enable:restore") {
        crate::outln!("Enabled vgpuctl-restore.service.");
    }
}
