//! `vgpuctl setup`: observe -> plan -> show -> apply -> record, across the reboot it needs.

pub mod apply;
pub mod driver_removal;
pub mod grub_shell;
pub mod import_plan;
pub mod import_sources;
pub mod kernel_build;
pub mod lock;
pub mod mig_group;
pub mod mixed_size;
pub mod observe;
pub mod offline;
pub mod paths;
pub mod plan;
pub mod planner;
pub mod prereboot;
pub mod proxmox_default;
pub mod retype;
pub mod teardown;
pub mod upgrade;
pub mod validate;
pub mod vfio_release;
pub mod waiting;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;

use crate::exit::{Exit, Failure};
use crate::facts::{self, HostFacts};
use crate::host::{Host, Reach, WriteOpts};
use crate::profile::{Profile, RebootPolicy};
use crate::state;

use observe::Facts;
use plan::Plan;
use planner::{Desired, BINARY, RESUME_UNIT, UNIT_DIR, WANTS_DIR};

/// The profile a run stopped at a reboot continues with (`setup --resume`, the resumed wizard).
pub const RESUME_PROFILE: &str = "etc/vgpuctl/setup-profile.toml";

pub struct Options {
    pub dry_run: bool,
    pub yes: bool,
    pub allow_unverified: bool,
    /// Unattended consent to a plan that unpins vGPUs.
    pub allow_remove: bool,
    pub vf_timeout: Duration,
    /// Where the profile came from (for messages and the resume unit).
    pub profile_path: String,
    /// Its file and text, to locate the errors the checks against this host find.
    pub source: crate::profile_load::Located,
    /// The exact command to run after a reboot checkpoint (with --root/--simulate when given).
    pub next_command: String,
}

/// Refuse a host that can never be a vGPU host, before any change.
fn refuse_unusable(f: &HostFacts) -> Result<(), Failure> {
    if f.is_vm {
        return Err(Failure::failed(
            "this machine is a virtual machine (CPU flag `hypervisor`): vGPU host software runs on \
             the bare-metal KVM host, not inside a guest. Nothing was changed. Run `vgpuctl check` \
             for details.",
        ));
    }
    if !f.gpus.iter().any(|g| g.model.vgpu_supported) {
        let what = if f.gpus.is_empty() {
            "no NVIDIA GPU".to_string()
        } else {
            f.gpus
                .iter()
                .map(|g| {
                    format!(
                        "{} {}: {}",
                        g.address,
                        g.model.name,
                        g.model.reason.clone().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(Failure::failed(format!(
            "this host has no GPU that supports vGPU ({what}). Nothing was changed."
        )));
    }
    if f.firmware_iommu.is_none() {
        return Err(Failure::failed(
            "the firmware publishes no IOMMU (no ACPI DMAR or IVRS table): enable VT-d (Intel) or \
             AMD-Vi (AMD), and for SR-IOV GPUs SR-IOV and Above 4G decoding, in the firmware \
             setup. Nothing was changed.",
        ));
    }
    Ok(())
}

/// The whole plan from the facts: the pre-reboot steps, then the GPU work, and the reasons a
/// reboot is needed now. Pure; a field's error points into the profile's text.
pub fn make_plan(
    f: &Facts,
    want: &Desired,
    source: &crate::profile_load::Located,
) -> Result<(Plan, Vec<String>), Failure> {
    let (pre, reasons) = prereboot::plan(f, want)?;
    let mut plan = planner::plan(f, want, pre, &reasons)
        .map_err(|e| Failure::usage_from(source.error(&e.field, e.reason)))?;
    // Last: after a driver install it plans, before any reboot.
    kernel_build::plan(f, &mut plan)?;
    Ok((plan, reasons))
}

/// What the profile asks for, with its driver source validated against the host.
fn desired<'a>(
    host: &Host,
    f: &Facts,
    profile: &'a Profile,
    opts: &Options,
    seed: u64,
) -> Result<Desired<'a>, Failure> {
    let (driver_source, driver_upgrade) = prereboot::driver_source(host, f, profile)?;
    Ok(Desired {
        profile,
        driver_source,
        driver_upgrade,
        vf_timeout_s: opts.vf_timeout.as_secs(),
        uuid_seed: seed,
    })
}

/// How many times a run observes and plans again when the host changed under its plan.
pub const MAX_REPLANS: u32 = 3;

/// A plan that unpins vGPUs needs consent: the interactive confirmation (which shows them), or
/// `--allow-remove` with `--yes`. Checked before any change.
fn refuse_unconsented_unpins(plan: &Plan, opts: &Options) -> Result<(), Failure> {
    if plan.unpins.is_empty() || !opts.yes || opts.allow_remove {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "this plan unpins {} vGPU(s), which are then not recreated at boot: {}. Nothing was \
         changed. Pass --allow-remove with --yes to accept, or keep the count and type in the profile",
        plan.unpins.len(),
        plan.unpins
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

fn confirm(opts: &Options) -> Result<bool, Failure> {
    if opts.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "setup needs confirmation: pass --yes to apply without a terminal (or --dry-run to only look)",
        ));
    }
    // Esc (or q) cancels, as at the wizard's prompts.
    dialoguer::Confirm::new()
        .with_prompt("Apply this plan?")
        .default(false)
        .interact_opt()
        .map_err(|e| Failure::usage(format!("no answer ({e}); nothing was changed")))?
        .ok_or_else(|| Failure::cancelled(crate::interrupt::what_changed()))
}

enum Decision {
    Stop(Exit),
    Go {
        plan: Plan,
        reasons: Vec<String>,
        /// The reboot of a checkpoint happened since the last run.
        resumed: bool,
        /// The state says the last run finished.
        finished: bool,
    },
}

/// Observe, validate and plan; read-only. Only `observe` reads the host for the plan; the checks
/// of the input (the profile's fields, the driver source, the GRUB edit under /bin/sh) come
/// before anything changes.
fn decide(host: &Host, profile: &Profile, opts: &Options, seed: u64) -> Result<Decision, Failure> {
    let f = observe::observe(host)?;
    refuse_unusable(&f)?;
    // Every field against this host, before anything can change it.
    validate::validate(host, &f, profile, &opts.source, opts.allow_unverified)
        .map_err(Failure::usage_from)?;
    let want = desired(host, &f, profile, opts, seed)?;
    let st = &f.state;
    let mut resumed = false;
    // The reboot checkpoint: has the reboot happened?
    if let Some(at) = st.reboot_boot_id.as_deref() {
        if f.boot_id.as_deref() == Some(at) {
            crate::outln!(
                "A reboot is still pending ({}). Reboot, then run the same command again.",
                st.reboot_reasons.join("; ")
            );
            return Ok(Decision::Stop(Exit::Reboot));
        }
        let (_, still) = prereboot::plan(&f, &want)?;
        if !still.is_empty() {
            return Err(Failure::failed(format!(
                "the host rebooted but it did not take effect: {}. Check the boot loader \
                 configuration and `dmesg`; then run setup again.",
                still.join("; ")
            )));
        }
        // A loaded driver's manager must be running too, or no vGPU can be created. (The driver
        // is installed after this reboot when nouveau had to go first.)
        if f.driver.loaded_version.is_some() && f.driver.vgpu_mgr_active == Some(false) {
            return Err(Failure::failed(
                "the host rebooted and the driver is loaded, but nvidia-vgpu-mgr.service is not \
                 running: see `systemctl status nvidia-vgpu-mgr` and `journalctl -u \
                 nvidia-vgpu-mgr`, fix it, then run setup again",
            ));
        }
        resumed = true;
    }
    let (plan, reasons) = make_plan(&f, &want, &opts.source)?;
    prereboot::check_grub_edits(host, &f, &plan)?;
    Ok(Decision::Go {
        plan,
        reasons,
        resumed,
        finished: st.finished,
    })
}

/// Every check `run` makes before it shows the plan (the profile's fields against this host, the
/// driver source, the plan itself), changing nothing: the wizard saves its answers only after
/// them, so a profile it writes is one setup accepts.
pub fn preflight(host: &Host, profile: &Profile, opts: &Options) -> Result<(), Failure> {
    decide(host, profile, opts, 0).map(|_| ())
}

/// Run setup with a validated profile.
pub fn run(host: &Host, profile: &Profile, opts: &Options) -> Result<Exit, Failure> {
    if !opts.dry_run {
        crate::privilege::require_root(host, "setup")?;
    }
    let adjusted;
    let profile = if profile.gpus.is_empty() && profile.sriov.is_empty() {
        match proxmox_default::effective(&crate::facts::observe(host), profile) {
            Some(p) => {
                crate::outln!("{}", proxmox_default::note(&p));
                adjusted = p;
                &adjusted
            }
            None => profile,
        }
    } else {
        profile
    };
    // Decide without touching anything: bad input and "nothing to do" change no file (not even
    // the lock). Only a plan that will be applied takes the lock, and is then made again under it.
    // One seed per run: the plan made again under the lock names the same new UUIDs as the one shown.
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let (plan, reasons, resumed, finished) = match decide(host, profile, opts, seed)? {
        Decision::Stop(code) => return Ok(code),
        Decision::Go {
            plan,
            reasons,
            resumed,
            finished,
        } => (plan, reasons, resumed, finished),
    };
    if resumed {
        crate::outln!("Resuming after the reboot (boot id changed).");
    }
    let (plan, blocked) = match host.reach() {
        Reach::Offline => offline::adapt(plan, profile, &reasons),
        Reach::Live | Reach::Simulated => (plan, Vec::new()),
    };
    crate::out!("{plan}");
    if !blocked.is_empty() {
        return Err(Failure::usage(offline::refusal(host, &blocked)));
    }
    if opts.dry_run {
        crate::outln!("(dry run: nothing was changed)");
        return Ok(Exit::Ok);
    }
    if plan.is_empty() && reasons.is_empty() && !resumed && finished {
        return finish(host);
    }
    refuse_unconsented_unpins(&plan, opts)?;
    if !plan.is_empty() && !confirm(opts)? {
        crate::outln!("Nothing was changed.");
        return Ok(Exit::Failed);
    }
    crate::interrupt::changes_begin();
    let _lock = lock::acquire(host, "setup")?;
    let shown = plan;
    let (plan, reasons) = match decide(host, profile, opts, seed)? {
        Decision::Stop(code) => return Ok(code),
        Decision::Go { plan, reasons, .. } => (plan, reasons),
    };
    let plan = for_reach(host, profile, plan, &reasons)?;
    if plan != shown {
        // The host changed between the confirmation and the lock: this is the plan applied.
        crate::outln!("The host changed before the lock was taken; the plan applied is:");
        crate::out!("{plan}");
        refuse_new_unpins(&shown, &plan, opts)?;
    }
    let mut st = state::load(host)?;
    if st.reboot_boot_id.is_some() {
        st.reboot_boot_id = None;
        st.reboot_reasons.clear();
        state::save(host, &st)?;
    }
    if plan.is_empty() && reasons.is_empty() {
        if !st.finished {
            st.finished = true;
            state::save(host, &st)?;
        }
        return finish(host);
    }
    st.profile = Some(opts.profile_path.clone());
    st.finished = false;
    let ctx = apply::Ctx {
        host,
        profile,
        vf_timeout: opts.vf_timeout,
        allow_unverified: opts.allow_unverified,
    };
    let mut plan = plan;
    let mut replans = 0;
    let mut followups = 0;
    loop {
        let (failures, stale) = execute(&ctx, &plan, &mut st)?;
        if !failures.is_empty() {
            state::save(host, &st)?;
            return Err(Failure::failed(format!(
                "setup stopped: {}. Fix it and run the same command again; finished steps are not redone.",
                failures.join("; ")
            )));
        }
        // A later phase or the work after a reboot that was not needed is planned from a new
        // observation, as the plan said.
        let planned = plan.later.is_some() || !plan.after_reboot.is_empty();
        if let Some(why) = &stale {
            replans += 1;
            if replans > MAX_REPLANS {
                return Err(Failure::failed(format!(
                    "setup stopped: the host kept changing under the plan ({why}); it was observed \
                     and planned again {MAX_REPLANS} times. Run setup again once nothing else \
                     changes the host."
                )));
            }
            crate::outln!(
                "The host changed since the plan ({why}): observing it again and planning again \
                 ({replans} of {MAX_REPLANS})."
            );
        }
        let f = observe::observe(host)?;
        let want = desired(host, &f, profile, opts, seed)?;
        let (next, reasons) = make_plan(&f, &want, &opts.source)?;
        prereboot::check_grub_edits(host, &f, &next)?;
        if !reasons.is_empty() {
            return checkpoint(host, &mut st, profile, opts, reasons, &f);
        }
        if next.is_empty() {
            break;
        }
        if stale.is_none() && !planned {
            // The plan ran to its end and the host still differs: one more round, as planned
            // again from what is there. Work still left after that is a failure, never a
            // "complete" (the status only compares the pins, which lack what was not made).
            followups += 1;
            if followups > 1 {
                state::save(host, &st)?;
                let left: Vec<&str> = next.steps.iter().map(|s| s.title.as_str()).collect();
                return Err(Failure::failed(format!(
                    "setup stopped: after applying the plan twice the host still needs: {}. \
                     Run the same command again; `vgpuctl status` shows what is there.",
                    left.join("; ")
                )));
            }
        }
        refuse_new_unpins(&plan, &next, opts)?;
        plan = for_reach(host, profile, next, &reasons)?;
        crate::out!("{plan}");
    }
    st.finished = true;
    state::save(host, &st)?;
    finish(host)
}

/// `vgpuctl driver install --profile P` on a host whose installed driver is another version than
/// P's: the same upgrade setup plans ([`upgrade::plan`]: the refusals, the vGPUs' removal with
/// their pins kept, the old driver's removal, the new one's install) shown, applied and recorded
/// by the same executor, up to the same reboot checkpoint; after the reboot, restore recreates
/// the pinned vGPUs and `setup` records their new type ids. None: no upgrade is asked (the
/// caller installs as before).
pub fn driver_upgrade(
    host: &Host,
    profile: &Profile,
    opts: &Options,
) -> Result<Option<Exit>, Failure> {
    let f = observe::observe(host)?;
    let (source, Some(up)) = prereboot::driver_source(host, &f, profile)? else {
        return Ok(None);
    };
    let mut plan = Plan::default();
    upgrade::plan(&f, &up, source.as_deref().unwrap_or_default(), &mut plan)?;
    crate::out!("{plan}");
    crate::interrupt::changes_begin();
    let mut st = state::load(host)?;
    st.profile = Some(opts.profile_path.clone());
    st.finished = false;
    let ctx = apply::Ctx {
        host,
        profile,
        vf_timeout: opts.vf_timeout,
        allow_unverified: opts.allow_unverified,
    };
    let (failures, stale) = execute(&ctx, &plan, &mut st)?;
    if let Some(why) = stale.or_else(|| (!failures.is_empty()).then(|| failures.join("; "))) {
        state::save(host, &st)?;
        return Err(Failure::failed(format!(
            "the driver upgrade stopped: {why}. Fix it and run the same command again."
        )));
    }
    let f = observe::observe(host)?;
    let reasons = vec![format!(
        "NVIDIA driver {} is installed and {} is loaded: the reboot loads {}",
        up.to,
        f.driver.loaded_version.as_deref().unwrap_or("none"),
        up.to
    )];
    checkpoint(host, &mut st, profile, opts, reasons, &f).map(Some)
}

/// Consent covered the confirmed plan's unpins only (or every one, with --allow-remove).
fn refuse_new_unpins(confirmed: &Plan, next: &Plan, opts: &Options) -> Result<(), Failure> {
    let consented = |u: &plan::Unpin| opts.allow_remove || confirmed.unpins.contains(u);
    if let Some(u) = next.unpins.iter().find(|u| !consented(u)) {
        return Err(Failure::usage(format!(
            "the next plan would unpin {u}, which the confirmed plan did not say; run setup \
             again to see and confirm it"
        )));
    }
    Ok(())
}

/// Run the plan, recording each step done in the state file as it finishes.
fn execute(
    ctx: &apply::Ctx,
    plan: &Plan,
    st: &mut state::State,
) -> Result<(Vec<String>, Option<String>), Failure> {
    let host = ctx.host;
    let mut record = |step: &plan::Step, ok: bool| -> anyhow::Result<()> {
        // The driver installer keeps its own started/finished mark in the state file.
        st.driver_install_started = state::load(host)?.driver_install_started;
        if ok {
            st.done.push(step.id.clone());
            state::save(host, st)?;
        }
        Ok(())
    };
    Ok(apply::execute(ctx, plan, &mut record)?)
}

/// The plan as it is carried out on this host's reach; on an offline root, a refusal when a step
/// needs the running system (checked again after every re-plan, before applying it).
fn for_reach(
    host: &Host,
    profile: &Profile,
    plan: Plan,
    reasons: &[String],
) -> Result<Plan, Failure> {
    if host.reach() != Reach::Offline {
        return Ok(plan);
    }
    let (plan, blocked) = offline::adapt(plan, profile, reasons);
    if blocked.is_empty() {
        Ok(plan)
    } else {
        Err(Failure::usage(offline::refusal(host, &blocked)))
    }
}

fn finish(host: &Host) -> Result<Exit, Failure> {
    // CloudPods' file may be written below: a Ctrl-C from here on is no clean cancel.
    crate::interrupt::changes_begin();
    let f = facts::observe(host);
    let active = crate::active::load(host)?;
    let pins = crate::pins::load(host)?;
    // CloudPods' host.conf follows the pins (nothing without a [cloudpods] section).
    if let Some(msg) = active
        .as_ref()
        .map(|p| crate::cloudpods::sync(host, p, &pins.clone().unwrap_or_default()))
        .transpose()?
    {
        crate::outln!("{}", msg.unwrap_or_default());
    }
    // So does the [nova] fragment.
    if let Some(cfg) = active.as_ref().and_then(|p| p.nova.as_ref()) {
        let msg = crate::nova_conf::sync(host, cfg, &pins.clone().unwrap_or_default())?;
        crate::outln!("{msg}");
    }
    let s = crate::status::status(&f, pins.as_ref());
    crate::out!("\n{}", crate::status::render_status(&s));
    if s.drift.is_empty() {
        crate::outln!("Setup is complete.");
        Ok(Exit::Ok)
    } else {
        Err(Failure::failed(
            "setup finished its steps but the host differs from the profile (see Drift above)",
        ))
    }
}

/// Stop at a reboot: record the boot id, then reboot (auto) or tell the operator (exit 3).
fn checkpoint(
    host: &Host,
    st: &mut state::State,
    profile: &Profile,
    opts: &Options,
    reasons: Vec<String>,
    f: &HostFacts,
) -> Result<Exit, Failure> {
    st.reboot_boot_id = f.boot_id.clone().or_else(|| Some("unknown".into()));
    st.reboot_reasons = reasons.clone();
    // What `setup --resume` (and the wizard, resumed) continues with. The driver is installed by
    // now, so its section (and any link, a credential) is not kept.
    let mut resume = profile.clone();
    resume.driver = None;
    host.write_file(
        RESUME_PROFILE,
        toml::to_string_pretty(&resume)
            .context("profile")?
            .as_bytes(),
        WriteOpts::secret(),
    )?;
    state::save(host, st)?;
    crate::outln!("\nReboot needed: {}.", reasons.join("; "));
    let policy = profile.host.reboot;
    // An offline root is never rebooted from here: `systemctl reboot` would reboot this machine.
    let auto = host.reach().runs_programs()
        && match policy {
            RebootPolicy::Auto => true,
            RebootPolicy::Never => false,
            RebootPolicy::Prompt => {
                !opts.yes
                    && std::io::stdin().is_terminal()
                    && dialoguer::Confirm::new()
                        .with_prompt("Reboot now?")
                        .default(false)
                        .interact()
                        .unwrap_or(false)
            }
        };
    if !auto {
        crate::outln!("Reboot, then run: {}", opts.next_command);
        return Ok(Exit::Reboot);
    }
    // Continue by itself after the reboot: the resume unit runs `setup --resume` once.
    let exe = std::env::current_exe().context("cannot find this binary")?;
    host.write_file(
        BINARY,
        &std::fs::read(exe)?,
        WriteOpts {
            mode: 0o755,
            backup: false,
        },
    )?;
    host.write_file(
        &format!("{UNIT_DIR}/{RESUME_UNIT}"),
        planner::RESUME_UNIT_TEXT.as_bytes(),
        WriteOpts::default(),
    )?;
    host.symlink(
        &format!("/{UNIT_DIR}/{RESUME_UNIT}"),
        &format!("{WANTS_DIR}/{RESUME_UNIT}"),
    )?;
    crate::outln!("Rebooting now; vgpuctl-resume.service continues setup after the boot.");
    let out = host.run(&crate::host::Cmd::new("systemctl").arg("reboot"))?;
    if !out.success() {
        return Err(Failure::failed(format!(
            "`systemctl reboot` failed: {}",
            out.tail(5)
        )));
    }
    Ok(Exit::Reboot)
}
