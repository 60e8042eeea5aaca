//! `vgpuctl setup`: observe -> plan -> show -> apply -> record, across the reboot it needs.

pub mod apply;
pub mod grub_shell;
pub mod lock;
pub mod offline;
pub mod plan;
pub mod planner;
pub mod prereboot;
pub mod validate;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;

use crate::exit::{Exit, Failure};
use crate::facts::{self, HostFacts};
use crate::host::{Host, Reach, WriteOpts};
use crate::profile::{Profile, RebootPolicy};
use crate::state;

use plan::Plan;
use planner::{Inputs, BINARY, RESTORE_UNIT, RESUME_UNIT, UNIT_DIR, WANTS_DIR};

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

fn binary_current(host: &Host) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let (Ok(a), Ok(b)) = (std::fs::read(&exe), host.read_bytes(BINARY)) else {
        return false;
    };
    a == b
}

fn inputs<'a>(
    host: &Host,
    f: &'a HostFacts,
    profile: &'a Profile,
    active: Option<&'a Profile>,
    pins: Option<&'a crate::pins::Pins>,
    done: &[String],
) -> Result<Inputs<'a>, Failure> {
    let (pre_reboot, reboot_reasons) = prereboot::plan(host, f, profile, done)?;
    Ok(Inputs {
        facts: f,
        profile,
        active,
        pins,
        restore_unit: host.read(&format!("{UNIT_DIR}/{RESTORE_UNIT}")).ok(),
        resume_unit_enabled: host.exists(&format!("{WANTS_DIR}/{RESUME_UNIT}")),
        binary_current: binary_current(host),
        pre_reboot,
        reboot_reasons,
    })
}

fn make_plan(
    host: &Host,
    f: &HostFacts,
    profile: &Profile,
    opts: &Options,
    done: &[String],
) -> Result<(Plan, Vec<String>), Failure> {
    let active = crate::active::load(host)?;
    let pins = crate::pins::load(host)?;
    let i = inputs(host, f, profile, active.as_ref(), pins.as_ref(), done)?;
    let reasons = i.reboot_reasons.clone();
    let plan =
        planner::plan(i).map_err(|e| Failure::usage_from(opts.source.error(&e.field, e.reason)))?;
    Ok((plan, reasons))
}

/// A plan that unpins vGPUs needs consent: the interactive confirmation (which shows them), or
/// `--allow-remove` with `--yes`. Checked before any change.
fn refuse_unconsented_unpins(plan: &Plan, opts: &Options) -> Result<(), Failure> {
    if plan.unpins.is_empty() || !opts.yes || opts.allow_remove {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "this plan unpins {} vGPU(s), which are then not recreated at boot: {}. Nothing was \
         changed. Pass --allow-remove with --yes to accept, or raise the count in the profile",
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
    dialoguer::Confirm::new()
        .with_prompt("Apply this plan?")
        .default(false)
        .interact()
        .map_err(|e| Failure::usage(format!("no answer ({e}); nothing was changed")))
}

enum Decision {
    Stop(Exit),
    Go {
        plan: Plan,
        reasons: Vec<String>,
        /// The reboot of a checkpoint happened since the last run.
        resumed: bool,
    },
}

/// Observe, validate and plan; read-only.
fn decide(
    host: &Host,
    profile: &Profile,
    opts: &Options,
    st: &state::State,
) -> Result<Decision, Failure> {
    let f = facts::observe(host);
    refuse_unusable(&f)?;
    // Every field against this host, before anything can change it.
    validate::validate(host, &f, profile, &opts.source, opts.allow_unverified)
        .map_err(Failure::usage_from)?;
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
        let (_, still) = prereboot::plan(host, &f, profile, &st.done)?;
        if !still.is_empty() {
            return Err(Failure::failed(format!(
                "the host rebooted but it did not take effect: {}. Check the boot loader \
                 configuration and `dmesg`; then run setup again.",
                still.join("; ")
            )));
        }
        // The driver is loaded; its manager must be running too, or no vGPU can be created.
        if f.driver.vgpu_mgr_active == Some(false) {
            return Err(Failure::failed(
                "the host rebooted and the driver is loaded, but nvidia-vgpu-mgr.service is not \
                 running: see `systemctl status nvidia-vgpu-mgr` and `journalctl -u \
                 nvidia-vgpu-mgr`, fix it, then run setup again",
            ));
        }
        resumed = true;
    }
    let (plan, reasons) = make_plan(host, &f, profile, opts, &st.done)?;
    Ok(Decision::Go {
        plan,
        reasons,
        resumed,
    })
}

/// Run setup with a validated profile.
pub fn run(host: &Host, profile: &Profile, opts: &Options) -> Result<Exit, Failure> {
    if !opts.dry_run {
        crate::privilege::require_root(host, "setup")?;
    }
    // Decide without touching anything: bad input and "nothing to do" change no file (not even
    // the lock). Only a plan that will be applied takes the lock, and is then made again under it.
    let st = state::load(host)?;
    let (plan, reasons, resumed) = match decide(host, profile, opts, &st)? {
        Decision::Stop(code) => return Ok(code),
        Decision::Go {
            plan,
            reasons,
            resumed,
        } => (plan, reasons, resumed),
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
    if plan.is_empty() && reasons.is_empty() && !resumed && st.finished {
        return finish(host);
    }
    refuse_unconsented_unpins(&plan, opts)?;
    if !plan.is_empty() && !confirm(opts)? {
        crate::outln!("Nothing was changed.");
        return Ok(Exit::Failed);
    }
    let _lock = lock::acquire(host, "setup")?;
    let mut st = state::load(host)?;
    let (plan, reasons) = match decide(host, profile, opts, &st)? {
        Decision::Stop(code) => return Ok(code),
        Decision::Go { plan, reasons, .. } => (plan, reasons),
    };
    let plan = for_reach(host, profile, plan, &reasons)?;
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
    // Apply, re-planning once when the first plan deferred work that needed no reboot after all.
    for round in 0..2 {
        let mut failures = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            crate::fault::point("step");
            crate::outln!("[{}/{}] {}", i + 1, plan.steps.len(), step.title);
            let outcome = apply::apply(&ctx, step);
            // The driver installer keeps its own started/finished mark in the state file.
            st.driver_install_started = state::load(host)?.driver_install_started;
            match outcome {
                Ok(msg) => {
                    crate::outln!("      ok: {msg}");
                    st.done.push(step.id.clone());
                    state::save(host, &st)?;
                }
                Err(e) => {
                    crate::outln!("      FAILED: {e:#}");
                    failures.push(format!("{}: {e:#}", step.title));
                    // vGPU work on one GPU never blocks the others; anything else stops here.
                    if !matches!(
                        step.action,
                        plan::Action::CreateVgpus { .. } | plan::Action::EnableSriov { .. }
                    ) {
                        break;
                    }
                }
            }
        }
        if !failures.is_empty() {
            state::save(host, &st)?;
            return Err(Failure::failed(format!(
                "setup stopped: {}. Fix it and run the same command again; finished steps are not redone.",
                failures.join("; ")
            )));
        }
        let f = facts::observe(host);
        let (next, reasons) = make_plan(host, &f, profile, opts, &st.done)?;
        if !reasons.is_empty() {
            return checkpoint(host, &mut st, profile, opts, reasons, &f);
        }
        if next.is_empty() || round == 1 {
            break;
        }
        // Consent covered the first plan's unpins only (or every one, with --allow-remove).
        let consented = |u: &plan::Unpin| opts.allow_remove || plan.unpins.contains(u);
        if let Some(u) = next.unpins.iter().find(|u| !consented(u)) {
            return Err(Failure::usage(format!(
                "the next plan would unpin {u}, which the confirmed plan did not say; run setup \
                 again to see and confirm it"
            )));
        }
        plan = for_reach(host, profile, next, &reasons)?;
        crate::out!("{plan}");
    }
    st.finished = true;
    state::save(host, &st)?;
    finish(host)
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
        crate::outln!(
            "Reboot, then run the same command again: {}",
            rerun_hint(opts)
        );
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

fn rerun_hint(opts: &Options) -> String {
    format!("vgpuctl setup --profile {} --yes", opts.profile_path)
}
