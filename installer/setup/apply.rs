//! Apply: run exactly a plan's actions through the host's I/O layer. Before acting, each action's
//! precondition is checked (the file still has the bytes the plan saw; the type is still offered on
//! the parent and the UUID is still free); when one no longer holds the action fails with
//! [`Stale`] and the caller observes and plans again. An action never improvises another.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::facts;
use crate::host::{Host, WriteOpts};
use crate::profile::Profile;
use crate::vgpu::{create, sriov};

use super::plan::{Action, Step, SysfsCreate};
use super::planner::{desired_active, desired_pins, UNIT_DIR, WANTS_DIR};

/// A precondition of the plan no longer holds: the host changed since it was observed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stale(pub String);

fn stale(what: String) -> anyhow::Error {
    Stale(what).into()
}

/// The file still holds what the plan was made from (`None`: absent or not text).
fn check_text(host: &Host, path: &str, before: Option<&str>) -> Result<()> {
    let now = host.read(path).ok();
    if now.as_deref() != before {
        return Err(stale(format!("{path} changed since the plan read it")));
    }
    Ok(())
}

fn check_bytes(host: &Host, path: &str, before: &[u8]) -> Result<()> {
    let now = host.read_bytes(path).unwrap_or_default();
    if now != before {
        return Err(stale(format!("{path} changed since the plan read it")));
    }
    Ok(())
}

/// The write's precondition ([`SysfsCreate::precondition`]): the type directory (mdev) or the
/// list entry (vendor VFIO) still names the planned type and can take one, and the device the
/// write makes does not exist yet. A `name` or `available_instances` that cannot be read at this
/// instant does not fail it (a driver rewriting it, a racing lookup); one that says otherwise does.
pub fn check_create(host: &Host, c: &SysfsCreate) -> Result<()> {
    let v = &c.create;
    let holds = match v.interface {
        facts::Interface::VendorVfio => {
            create::vendor_current(host, &v.parent).is_none()
                && host
                    .read(&format!("{}/creatable_vgpu_types", c.attr_dir))
                    .map(|t| {
                        crate::sysfs_parse::parse_creatable(&t).iter().any(|x| {
                            x.id.to_string() == v.type_id
                                && (v.type_name.is_empty()
                                    || crate::vgpu_name::same(&x.name, &v.type_name))
                        })
                    })
                    .unwrap_or(false)
        }
        _ => {
            let dir = format!("{}/{}", c.attr_dir, v.type_id);
            let room = host.read_trim(&format!("{dir}/available_instances"));
            let named = host.read_trim(&format!("{dir}/name"));
            let wrong_name = named
                .as_deref()
                .filter(|n| !v.type_name.is_empty() && !create::name_matches(n, &v.type_name));
            if let Some(n) = wrong_name {
                return Err(stale(format!("{} (it is {n})", c.precondition())));
            }
            // Unreadable at this instant: not judged, the kernel refuses a create that has no
            // room.
            if room
                .as_deref()
                .is_some_and(|r| r.parse::<u32>().unwrap_or(0) == 0)
            {
                return Err(stale(format!(
                    "{} (available_instances reads {})",
                    c.precondition(),
                    room.as_deref().unwrap_or("nothing")
                )));
            }
            if host.exists(&format!("{}/{}", facts::vgpus::MDEV_DEVICES, v.uuid)) {
                return Err(stale(format!(
                    "{} (vGPU {} exists)",
                    c.precondition(),
                    v.uuid
                )));
            }
            true
        }
    };
    if !holds {
        return Err(stale(c.precondition()));
    }
    Ok(())
}

pub struct Ctx<'a> {
    pub host: &'a Host,
    pub profile: &'a Profile,
    pub vf_timeout: Duration,
    pub allow_unverified: bool,
}

pub fn apply(ctx: &Ctx, step: &Step) -> Result<String> {
    let host = ctx.host;
    match &step.action {
        Action::WriteFile {
            path,
            before,
            after,
            mode,
        } => {
            check_text(host, path, before.as_deref())?;
            host.write_file(
                path,
                after.as_bytes(),
                WriteOpts {
                    mode: *mode,
                    backup: true,
                },
            )?;
            Ok(format!("wrote {path}"))
        }
        Action::WriteBytes {
            path,
            before,
            after,
            mode,
        } => {
            check_bytes(host, path, before)?;
            host.write_file(
                path,
                after,
                WriteOpts {
                    mode: *mode,
                    backup: true,
                },
            )?;
            Ok(format!("wrote {path}"))
        }
        Action::Run(cmd) => {
            let out = host.run(cmd)?;
            if !out.success() {
                bail!(
                    "`{cmd}` failed with status {}:\n{}",
                    out.status,
                    out.tail(15)
                );
            }
            Ok(format!("ran {cmd}"))
        }
        Action::WriteAttr { path, value } => {
            host.write_attr(path, value)
                .with_context(|| format!("writing {value:?} to {path}"))?;
            Ok(format!("wrote {value} to {path}"))
        }
        Action::InstallDriver { .. } => {
            let cfg = ctx
                .profile
                .driver
                .as_ref()
                .context("the profile has no [driver] section")?;
            crate::driver::fetch_and_install(host, cfg, ctx.allow_unverified, false, true)
                .map_err(|f| f.error)
        }
        Action::EnableSriov { pf, bound_s, .. } => {
            match sriov::enable(host, pf, Duration::from_secs(*bound_s))? {
                sriov::Enabled::Already(n) => Ok(format!("{pf}: {n} VFs were already enabled")),
                sriov::Enabled::Now { vfs, waited } => Ok(format!(
                    "{pf}: {vfs} VFs ready after {:.1} s",
                    waited.as_secs_f64()
                )),
            }
        }
        Action::MigMode { gpu } => {
            // Precondition: no vGPU on the GPU (the driver switches the mode of an idle GPU).
            let f = super::observe::observe_vgpus(host, &crate::pins::Pins::default());
            if let Some(v) = f
                .vgpus()
                .iter()
                .find(|v| v.gpu.as_deref() == Some(gpu.as_str()))
            {
                return Err(stale(format!(
                    "{gpu} holds vGPU {} ({}) on {}: MIG mode is turned on only on a GPU without vGPUs",
                    v.uuid.as_deref().unwrap_or("without UUID"),
                    v.type_name,
                    v.parent
                )));
            }
            mig_mode_on(host, gpu).map_err(anyhow::Error::msg)
        }
        Action::CreateGpuInstances {
            gpu,
            profile,
            count,
            total,
        } => create_gpu_instances(host, gpu, profile, *count, *total),
        Action::CreateVgpus {
            gpu,
            type_name,
            present,
            create,
            ..
        } => create_vgpus(ctx, gpu, type_name, present, create),
        Action::PinImported {
            pins,
            sriov,
            mixed_size,
        } => {
            // A host set up by an older release: its pins move to vgpus.toml first.
            crate::pins::migrate(host)?;
            let mut saved = crate::pins::load(host)?.unwrap_or_default();
            crate::pins::pin(&mut saved, pins.iter().cloned());
            crate::pins::enable_sriov(&mut saved, sriov);
            for g in mixed_size {
                if !saved.mixed_size.contains(g) {
                    saved.mixed_size.push(g.clone());
                }
            }
            saved.mixed_size.sort();
            crate::pins::save(host, &saved)?;
            Ok(format!(
                "pinned {} vGPU(s) in /etc/vgpuctl/vgpus.toml",
                pins.len()
            ))
        }
        Action::RestorePins { lanes } => {
            let report = restore(host, lanes, ctx.vf_timeout)?;
            if !report.ok {
                let why: Vec<String> = report
                    .devices
                    .iter()
                    .filter(|d| !d.reason.is_empty())
                    .map(|d| format!("{} {:?}: {}", d.uuid, d.state, d.reason))
                    .collect();
                bail!("{}; {}", report.summary(), why.join("; "));
            }
            Ok(report.summary())
        }
        Action::PinProfile { pins } => {
            let current = crate::pins::load(host)?;
            // Pins first: an older release's copy still holding pins is stripped only after
            // they are safe in vgpus.toml (see crate::pins::migrate).
            crate::pins::save(host, &desired_pins(ctx.profile, current.as_ref(), pins))?;
            crate::active::save(host, &desired_active(ctx.profile))?;
            Ok(format!(
                "pinned {} vGPU(s) in /etc/vgpuctl/vgpus.toml",
                pins.len()
            ))
        }
        Action::RemoveVgpus { devices } => remove_vgpus(host, devices),
        Action::CopyBinary { to } => {
            let exe = std::env::current_exe().context("cannot find this binary")?;
            let bytes =
                std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
            host.write_file(
                to,
                &bytes,
                WriteOpts {
                    mode: 0o755,
                    backup: false,
                },
            )?;
            Ok(format!("installed {to}"))
        }
        Action::EnableUnit { unit } => {
            host.symlink(
                &format!("/{UNIT_DIR}/{unit}"),
                &format!("{WANTS_DIR}/{unit}"),
            )?;
            Ok(format!("enabled {unit}"))
        }
        Action::RemoveFile { path } => {
            host.remove_file(path)?;
            Ok(format!("removed {path}"))
        }
        Action::DisableUnit { unit } => {
            host.remove_file(&format!("{WANTS_DIR}/{unit}"))?;
            Ok(format!("disabled {unit}"))
        }
    }
}

/// Create the planned vGPUs on one GPU, pinning after every device so an interruption loses
/// nothing.
fn create_vgpus(
    ctx: &Ctx,
    gpu: &str,
    type_name: &str,
    present: &[crate::profile::SavedVgpu],
    planned: &[SysfsCreate],
) -> Result<String> {
    let host = ctx.host;
    let mut pins = present.to_vec();
    let mut saved = crate::pins::load(host)?.unwrap_or_default();
    saved = desired_pins(ctx.profile, Some(&saved), &pins);
    crate::pins::save(host, &saved)?;
    crate::active::save(host, &desired_active(ctx.profile))?;
    let mut made = 0;
    for c in planned {
        check_create(host, c)?;
        crate::fault::point("vgpu-create");
        host.write_attr(&c.path, &c.value).with_context(|| {
            format!(
                "creating vGPU {} ({}) on {}: writing {:?} to /{}",
                c.create.uuid, c.create.type_name, c.create.parent, c.value, c.path
            )
        })?;
        verify(host, c)?;
        made += 1;
        pins.push(c.create.saved());
        saved = desired_pins(ctx.profile, Some(&saved), &pins);
        crate::pins::save(host, &saved)?;
    }
    Ok(format!(
        "{gpu}: created {made}, {} already present ({})",
        present.len(),
        crate::vgpu_name::short(type_name)
    ))
}

/// The write made the device the plan named, with its type.
fn verify(host: &Host, c: &SysfsCreate) -> Result<()> {
    let v = &c.create;
    match v.interface {
        facts::Interface::VendorVfio => match create::vendor_current(host, &v.parent) {
            Some(id) if id == v.type_id => Ok(()),
            other => {
                // Say what was read: a 0 (the driver dropped the vGPU) and a missing file (the
                // VF's vGPU group went away) have different causes.
                let file = format!(
                    "{}/current_vgpu_type",
                    crate::facts::vgpus::vendor_dir(&v.parent)
                );
                let read = match (other, host.exists(&file)) {
                    (Some(id), _) => format!("reads current_vgpu_type {id}"),
                    (None, true) => "reads current_vgpu_type 0".to_string(),
                    (None, false) => format!("has no /{file} any more"),
                };
                bail!("VF {} {read} after writing {}", v.parent, v.type_id)
            }
        },
        _ => match create::mdev_type_of(host, &v.uuid) {
            // The `mdev_type` link names the directory whose `create` was written: its type.
            Some(name)
                if create::name_matches(&name, &v.type_name)
                    || c.path.ends_with(&format!("/{name}/create")) =>
            {
                Ok(())
            }
            Some(name) => bail!(
                "vGPU {} appeared with type {name}, not {}",
                v.uuid,
                v.type_name
            ),
            None => bail!(
                "wrote {} to /{} but /sys/bus/mdev/devices/{} did not appear",
                v.uuid,
                c.path,
                v.uuid
            ),
        },
    }
}

/// Remove the vGPUs a lower count drops, each re-checked: one a VM opened since the plan is kept.
fn remove_vgpus(host: &Host, devices: &[super::plan::Unpin]) -> Result<String> {
    let f = facts::observe(host);
    let mut removed = Vec::new();
    for d in devices {
        let live = f.vgpus().into_iter().find(|v| match (&v.uuid, &d.uuid) {
            (Some(u), Some(w)) if v.interface == crate::facts::Interface::Mdev => u == w,
            _ => v.parent == d.parent && v.interface == d.interface,
        });
        let Some(v) = live else { continue };
        if v.in_use {
            bail!(
                "{d} is in use by a VM now: it is not removed (stop the VM, then run setup again)"
            );
        }
        match v.interface {
            crate::facts::Interface::Mdev => host.write_attr(
                &format!(
                    "{}/{}/remove",
                    crate::facts::vgpus::MDEV_DEVICES,
                    v.uuid.as_deref().unwrap_or_default()
                ),
                "1",
            ),
            _ => host.write_attr(
                &format!(
                    "{}/current_vgpu_type",
                    crate::facts::vgpus::vendor_dir(&v.parent)
                ),
                "0",
            ),
        }
        .with_context(|| format!("removing {d}"))?;
        removed.push(d.to_string());
        // Unpinned as soon as it is gone (the operator consented to both): a pin left behind
        // would bring it back at the next boot, beside the vGPUs that replace it.
        if d.pinned {
            if let Some(mut pins) = crate::pins::load(host)? {
                crate::pins::unpin(&mut pins, |p| {
                    Some(p.uuid.as_str()) == d.uuid.as_deref() && p.parent == d.parent
                });
                crate::pins::save(host, &pins)?;
            }
        }
    }
    Ok(format!("removed {}", removed.join(", ")))
}

/// Run a plan's steps in order; `record` is told each step's outcome (the checkpoint). Returns the
/// failures (vGPU work on one GPU never blocks the others; any other failure stops the run) and,
/// when a step found its precondition gone, why: the run stops there, to observe and plan again.
pub fn execute(
    ctx: &Ctx,
    plan: &super::plan::Plan,
    record: &mut dyn FnMut(&Step, bool) -> Result<()>,
) -> Result<(Vec<String>, Option<String>)> {
    let mut failures = Vec::new();
    let n = plan.steps.len();
    let mut i = 0;
    while i < n {
        // Consecutive SR-IOV steps run together, as restore's lanes do: each GPU's VFs take
        // seconds to appear, and nothing orders one GPU's after another's.
        let batch = sriov_batch(&plan.steps[i..]);
        let steps = &plan.steps[i..i + batch];
        for (k, step) in steps.iter().enumerate() {
            crate::fault::point("step");
            crate::outln!("[{}/{n}] {}", i + k + 1, step.title);
        }
        let what = match steps {
            [one] => super::waiting::awaited(&one.action, &one.title),
            many => format!("the VFs of {} GPUs and their vGPU types", many.len()),
        };
        let outcomes: Vec<Result<String>> = super::waiting::run(&what, || {
            std::thread::scope(|s| {
                let running: Vec<_> = steps
                    .iter()
                    .map(|step| s.spawn(move || apply(ctx, step)))
                    .collect();
                running
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("the step's thread panicked")))
                    })
                    .collect()
            })
        });
        i += batch;
        // Every step of the batch ran: each is recorded before any outcome ends the run.
        for (step, outcome) in steps.iter().zip(&outcomes) {
            record(step, outcome.is_ok())?;
        }
        for (step, outcome) in steps.iter().zip(outcomes) {
            match outcome {
                Ok(msg) => crate::outln!("      ok: {msg}"),
                Err(e) if e.downcast_ref::<Stale>().is_some() && failures.is_empty() => {
                    crate::outln!("      not done: {e:#}");
                    return Ok((failures, Some(format!("{e:#}"))));
                }
                Err(e) => {
                    crate::outln!("      FAILED: {e:#}");
                    failures.push(format!("{}: {e:#}", step.title));
                    if !matches!(
                        step.action,
                        Action::CreateVgpus { .. }
                            | Action::EnableSriov { .. }
                            | Action::RestorePins { .. }
                    ) {
                        return Ok((failures, None));
                    }
                }
            }
        }
    }
    Ok((failures, None))
}

/// How many steps from the first run together: the consecutive SR-IOV steps of distinct GPUs,
/// or just the first step. Pure.
pub fn sriov_batch(steps: &[Step]) -> usize {
    let mut pfs: Vec<&str> = Vec::new();
    for step in steps {
        match &step.action {
            Action::EnableSriov { pf, .. } if !pfs.contains(&pf.as_str()) => pfs.push(pf),
            _ => break,
        }
    }
    pfs.len().max(1)
}

/// MIG mode on for one GPU; says whether it took effect or waits for the GPU's reset.
fn mig_mode_on(host: &Host, gpu: &str) -> std::result::Result<String, String> {
    let cmd = crate::vgpu::mig::mode_on(gpu);
    match host.run(&cmd) {
        Ok(out) if out.success() => Ok(if out.stdout.contains("pending") {
            format!("{gpu}: MIG mode pending until the GPU is reset (a reboot)")
        } else {
            format!("{gpu}: MIG mode on")
        }),
        Ok(out) => Err(format!(
            "MIG mode: `{cmd}` failed with status {}: {}",
            out.status,
            out.tail(3).trim()
        )),
        Err(e) => Err(format!("MIG mode: `{cmd}`: {e:#}")),
    }
}

/// The GPU instances there are on `gpu`, read back from the driver.
fn read_instances(host: &Host, gpu: &str) -> Vec<crate::vgpu::mig::GpuInstance> {
    match host.run(&crate::vgpu::mig::list_instances(gpu)) {
        Ok(out) if out.success() => crate::vgpu::mig::parse_instances(&out.stdout),
        _ => Vec::new(),
    }
}

/// Precondition: the GPU's VFs are all there (sriov-manage, which wipes instances, has run)
/// and no more instances of `profile` exist than the plan counted on. Then create, and read back.
fn create_gpu_instances(
    host: &Host,
    gpu: &str,
    profile: &str,
    count: u32,
    total: u32,
) -> Result<String> {
    let have = |gis: &[crate::vgpu::mig::GpuInstance]| {
        gis.iter().filter(|g| g.profile == profile).count() as u32
    };
    let before = have(&read_instances(host, gpu));
    if before + count != total {
        return Err(stale(format!(
            "{gpu} has {before} GPU instance(s) of {profile}, the plan counted {}",
            total - count
        )));
    }
    let profiles = vec![profile.to_string(); count as usize];
    let cmd = crate::vgpu::mig::create_instances(gpu, &profiles);
    crate::fault::point("gpu-instances");
    let out = host.run(&cmd)?;
    // Made but not read back yet: a run after a kill here counts them as free instances.
    crate::fault::point("gpu-instances-made");
    if !out.success() {
        bail!(
            "`{cmd}` failed with status {}:\n{}",
            out.status,
            out.tail(15)
        );
    }
    let gis = read_instances(host, gpu);
    if have(&gis) != total {
        bail!(
            "{gpu}: `{cmd}` returned, but the driver lists {} GPU instance(s) of {profile}, not {total}",
            have(&gis)
        );
    }
    let ids: Vec<String> = gis
        .iter()
        .filter(|g| g.profile == profile)
        .map(|g| g.id.to_string())
        .collect();
    Ok(format!(
        "{gpu}: {total} GPU instance(s) of {profile}, ids {} (as the driver assigned them)",
        ids.join(", ")
    ))
}

/// One lane's GPU instances, once its SR-IOV ended: Err says why not, for each of its vGPUs.
fn lane_instances(host: &Host, pf: &str, profiles: &[String]) -> std::result::Result<(), String> {
    let cmd = crate::vgpu::mig::create_instances(pf, profiles);
    match host.run(&cmd) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!(
            "GPU instances: `{cmd}` failed with status {}: {}",
            out.status,
            out.tail(3).trim()
        )),
        Err(e) => Err(format!("GPU instances: `{cmd}`: {e:#}")),
    }
}

/// Turn mixed-size mode on for one GPU (`nvidia-smi vgpu -i <pf> -shm 1`), as a restore step;
/// the error says why not, for every vGPU of the GPU that is then not made.
fn mixed_size_on(host: &Host, pf: &str) -> std::result::Result<(), String> {
    let cmd = super::mixed_size::command(pf);
    match host.run(&cmd) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!(
            "mixed-size mode: `{cmd}` failed with status {}: {}",
            out.status,
            out.tail(3).trim()
        )),
        Err(e) => Err(format!("mixed-size mode: `{cmd}`: {e:#}")),
    }
}

// ---- Restore: the lanes of a restore plan ----------------------------------------------------

use crate::profile::SavedVgpu;
use crate::vgpu::restore::{DeviceResult, Report, SriovResult, State};

use super::plan::{Lane, LaneStep, PinWrite};

/// How often a vGPU waiting for its parent looks again: one or two reads of its own parent, so
/// looking often costs little and the vGPU is made within a few ms of its listing.
const LISTED_POLL: Duration = Duration::from_millis(4);

/// How long a parent's type listing must have been there before a type missing from it counts as
/// not coming.
const LISTING_SETTLES: Duration = Duration::from_millis(500);

/// How often a wait reads a parent's whole type listing when the type is not where the pin says.
const FULL_READ_EVERY: Duration = Duration::from_millis(100);

/// Run a restore plan: every lane in its own thread, so one failing or slow GPU never stops
/// another. Writes the report (`run/vgpuctl/restore.json`) and returns it.
pub fn restore(host: &Host, lanes: &[Lane], bound: Duration) -> Result<Report> {
    let start = std::time::Instant::now();
    let results: Vec<(Option<SriovResult>, Vec<DeviceResult>)> = std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|l| s.spawn(move || run_lane(host, l, bound)))
            .collect();
        handles
            .into_iter()
            .zip(lanes)
            .map(|(h, l)| {
                h.join().unwrap_or_else(|_| {
                    let why = format!("internal error restoring {}", l.gpu);
                    (
                        None,
                        l.pins.iter().map(|p| failed(p, why.clone(), 0)).collect(),
                    )
                })
            })
            .collect()
    });
    let mut report = Report {
        boot_id: host.read_trim("proc/sys/kernel/random/boot_id"),
        ok: true,
        ms: 0,
        sriov: Vec::new(),
        devices: Vec::new(),
    };
    for (s, d) in results {
        report.sriov.extend(s);
        report.devices.extend(d);
    }
    report.ok = report.devices.iter().all(|d| d.state != State::Failed)
        && report.sriov.iter().all(|s| s.ok);
    report.ms = start.elapsed().as_millis() as u64;
    crate::vgpu::restore::write(host, &report)?;
    Ok(report)
}

/// Every pin of the lane not reported yet fails with `why` (a GPU-wide step failed).
fn fail_rest(lane: &Lane, done: &mut Vec<DeviceResult>, why: &str) {
    for p in &lane.pins {
        if !done.iter().any(|d| d.uuid == p.uuid) {
            done.push(failed(p, why.to_string(), 0));
        }
    }
}

fn device(p: &SavedVgpu, state: State, reason: String, ms: u64) -> DeviceResult {
    DeviceResult {
        uuid: p.uuid.clone(),
        state,
        reason,
        ms,
        parent: p.parent.clone(),
        type_name: p.type_name.clone(),
    }
}

fn failed(p: &SavedVgpu, reason: String, ms: u64) -> DeviceResult {
    device(p, State::Failed, reason, ms)
}

/// One GPU's `sriov-manage -e`, run beside the lane's waits and writes.
struct Enabling<'scope> {
    pf: String,
    started: std::time::Instant,
    running: Option<std::thread::ScopedJoinHandle<'scope, Result<sriov::Enabled>>>,
    done: Option<SriovResult>,
}

impl Enabling<'_> {
    fn finished(&self) -> bool {
        self.running.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Wait for the enable to end (it is bounded) and say how it went.
    fn result(&mut self) -> &SriovResult {
        if let Some(h) = self.running.take() {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error enabling SR-IOV")));
            let ms = self.started.elapsed().as_millis() as u64;
            let pf = self.pf.clone();
            self.done = Some(match r {
                Ok(e) => SriovResult {
                    pf,
                    ok: true,
                    vfs: match e {
                        sriov::Enabled::Already(n) => n,
                        sriov::Enabled::Now { vfs, .. } => vfs,
                    },
                    ms,
                    reason: String::new(),
                },
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::error!(pf, "{reason}");
                    SriovResult {
                        pf,
                        ok: false,
                        vfs: 0,
                        ms,
                        reason,
                    }
                }
            });
        }
        self.done
            .as_ref()
            .expect("an enable that ended has a result")
    }
}

/// How a wait for a parent's listing ended.
enum Listed {
    Yes,
    /// It cannot come: the vGPU fails with this reason.
    Failed(String),
    /// The host is not what the plan assumed: observe and plan again.
    Stale(String),
}

/// Does `parent` list the pin's type now? `Some(false)`: it lists types, but not this one (or it
/// holds one already); `None`: no listing (yet), or not judged. A few small reads of this parent
/// only; the whole mdev type listing is read only when `full` (the type is not where the pin
/// says, and the caller is ready to judge that).
fn lists(host: &Host, pin: &SavedVgpu, parent: &str, full: bool) -> Option<bool> {
    // A VF is there once its PF says its VFs are enabled: files of a VF seen before that are
    // not a device the kernel will create on.
    if let Some(pf) = pin.gpu.as_deref().filter(|g| *g != parent) {
        let numvfs = format!("{}/{pf}/sriov_numvfs", facts::gpus::PCI_DEVICES);
        if host.read_trim(&numvfs).is_none_or(|n| n == "0") {
            return None;
        }
    }
    if pin.interface == "vendor-vfio" {
        if create::vendor_current(host, parent).is_some() {
            return Some(false);
        }
        let text = host
            .read(&format!(
                "{}/creatable_vgpu_types",
                facts::vgpus::vendor_dir(parent)
            ))
            .ok()?;
        let types = crate::sysfs_parse::parse_creatable(&text);
        if types.is_empty() {
            return None;
        }
        return Some(
            types
                .iter()
                .any(|t| crate::vgpu_name::same(&t.name, &pin.type_name)),
        );
    }
    // A type directory is there once its `available_instances` is too (the kernel fills a
    // directory's attributes one by one).
    let quick = format!(
        "{}/{parent}/mdev_supported_types/{}",
        facts::vgpus::MDEV_BUS,
        pin.type_id
    );
    if host
        .read_trim(&format!("{quick}/name"))
        .is_some_and(|n| pin.type_name.is_empty() || create::name_matches(&n, &pin.type_name))
    {
        if host.exists(&format!("{quick}/available_instances")) {
            return Some(true);
        }
        return None;
    }
    if !full {
        return None;
    }
    let dir = facts::vgpus::mdev_types_dir(host, parent)?;
    let types = facts::vgpus::read_mdev_types(host, &dir);
    if types.is_empty() {
        return None;
    }
    Some(types.iter().any(|t| {
        if pin.type_name.is_empty() {
            t.id == pin.type_id
        } else {
            create::name_matches(&t.name, &pin.type_name)
        }
    }))
}

/// Wait, at most `bound`, until `parent` lists the pin's type. While this GPU's SR-IOV runs only
/// the quick look is made; once it ended, a parent that lists other types, or a VF that does not
/// exist, is the host differing from the plan.
fn wait_listed(
    host: &Host,
    pin: &SavedVgpu,
    parent: &str,
    bound: Duration,
    enabling: &mut Option<Enabling<'_>>,
) -> Listed {
    let exists = || host.exists(&format!("{}/{parent}", facts::gpus::PCI_DEVICES));
    // A listing appears one entry at a time (the kernel registers each type in turn): one that
    // lacks the type is judged only once it has been there a moment.
    let mut listing_since: Option<std::time::Instant> = None;
    // The whole listing is read only once this GPU's SR-IOV ended, and then at most every
    // FULL_READ_EVERY: a VF's dozens of type directories are not read again on every look.
    let mut full_read: Option<std::time::Instant> = None;
    // The bound starts once this GPU's SR-IOV ended: the enable is bounded itself, and time it
    // spent queued behind another GPU's sriov-manage (a hung one, killed at its own bound) is
    // not this VF's to lose. Until then only the quick look is made.
    while let Some(e) = enabling.as_mut() {
        if e.finished() {
            break;
        }
        if lists(host, pin, parent, false) == Some(true) {
            return Listed::Yes;
        }
        std::thread::sleep(LISTED_POLL);
    }
    let seen = crate::wait::until_every(bound, LISTED_POLL, || {
        let enabled = match enabling.as_mut() {
            None => true,
            Some(e) if e.finished() => {
                // Its SR-IOV failed: this VF is not coming.
                if !e.result().ok {
                    return Some(Listed::Failed(format!("SR-IOV: {}", e.result().reason)));
                }
                true
            }
            Some(_) => false,
        };
        let full = enabled && full_read.is_none_or(|t| t.elapsed() >= FULL_READ_EVERY);
        if full {
            full_read = Some(std::time::Instant::now());
        }
        let now = lists(host, pin, parent, full);
        if now.is_some() {
            listing_since.get_or_insert_with(std::time::Instant::now);
        }
        let settled = listing_since.is_some_and(|t| t.elapsed() >= LISTING_SETTLES);
        match now {
            Some(true) => Some(Listed::Yes),
            Some(false) if enabled && settled => Some(Listed::Stale(format!(
                "{parent} lists no {} it can take",
                pin.type_name
            ))),
            None if enabled && enabling.is_some() && !exists() && pin.gpu.is_some() => {
                Some(Listed::Stale(format!("VF {parent} does not exist")))
            }
            _ => None,
        }
    });
    if let Some(l) = seen {
        if let (Listed::Stale(_), Some(e)) = (&l, enabling.as_mut()) {
            if !e.result().ok {
                return Listed::Failed(format!("SR-IOV: {}", e.result().reason));
            }
        }
        return l;
    }
    // The bound passed: an SR-IOV that failed says why better than the missing listing.
    if let Some(e) = enabling.as_mut() {
        if !e.result().ok {
            return Listed::Failed(format!("SR-IOV: {}", e.result().reason));
        }
    }
    Listed::Failed(format!(
        "{parent} did not list {} within {} s (--vf-timeout): is the vGPU host driver bound to \
         it (ls -l /sys/bus/pci/devices/{parent}/driver)?",
        pin.type_name,
        bound.as_secs()
    ))
}

/// The write of one pin, checked first and verified after.
fn write_pin(host: &Host, w: &PinWrite) -> Result<()> {
    let retargeted = by_name_now(host, &w.write);
    let c = retargeted.as_ref().unwrap_or(&w.write);
    check_create(host, c)?;
    crate::fault::point("vgpu-create");
    if let Err(e) = host.write_attr(&c.path, &c.value) {
        // The parent is not there (any more): the host differs from the plan, which observes
        // it again rather than failing the vGPU.
        if e.raw_os_error() == Some(19) {
            return Err(stale(format!(
                "{} is not there (writing /{} said ENODEV)",
                c.create.parent, c.path
            )));
        }
        return Err(e).with_context(|| {
            format!(
                "creating vGPU {} ({}) on {}: writing {:?} to /{}",
                c.create.uuid, c.create.type_name, c.create.parent, c.value, c.path
            )
        });
    }
    verify(host, c)
}

/// A pin's type id is the one of the driver it was made on, and type ids are renumbered across
/// driver branches (recorded-behaviour.md §1): an mdev restore planned before the parent listed
/// its types (at boot, after a driver upgrade) writes to the type directory that names the pin's
/// type on the parent now, found by name. None: the planned write stands (its directory names
/// the type, or no listed type has the name, which the precondition then reports). A
/// vendor-VFIO write needs none of this: its precondition reads the VF's list, finds the id
/// stale, and the lane plans again from the list, by name.
fn by_name_now(host: &Host, c: &SysfsCreate) -> Option<SysfsCreate> {
    let v = &c.create;
    if v.type_name.is_empty() {
        return None;
    }
    let id = match v.interface {
        facts::Interface::VendorVfio => return None,
        _ => {
            let named = host.read_trim(&format!("{}/{}/name", c.attr_dir, v.type_id));
            if named
                .as_deref()
                .is_some_and(|n| create::name_matches(n, &v.type_name))
            {
                return None;
            }
            facts::vgpus::read_mdev_types(host, &c.attr_dir)
                .into_iter()
                .find(|t| create::name_matches(&t.name, &v.type_name))?
                .id
        }
    };
    if id == v.type_id {
        return None;
    }
    let mut create = v.clone();
    create.type_id = id;
    Some(SysfsCreate::new(create, &c.attr_dir))
}

/// Run one GPU's lane; on a precondition gone, wait for its SR-IOV to end, observe, plan the
/// pins not done yet again ([`super::planner::Phase::Settled`]) and go on, a bounded number of
/// times, saying so.
fn run_lane(
    host: &Host,
    first: &Lane,
    bound: Duration,
) -> (Option<SriovResult>, Vec<DeviceResult>) {
    std::thread::scope(|s| {
        let mut enabling: Option<Enabling> = None;
        let mut done: Vec<DeviceResult> = Vec::new();
        let mut lane = first.clone();
        let mut replans = 0;
        loop {
            for p in &lane.present {
                done.push(device(p, State::Present, String::new(), 0));
            }
            for (p, why) in &lane.failed {
                done.push(failed(p, why.clone(), 0));
            }
            let mut stale: Option<String> = None;
            let mut since = std::time::Instant::now();
            let mut waited_for: Option<&str> = None;
            for step in &lane.steps {
                match step {
                    LaneStep::EnableSriov { pf, bound_s } => {
                        let pf = pf.clone();
                        let t = Duration::from_secs(*bound_s);
                        let target = pf.clone();
                        enabling = Some(Enabling {
                            pf,
                            started: std::time::Instant::now(),
                            running: Some(s.spawn(move || sriov::enable(host, &target, t))),
                            done: None,
                        });
                    }
                    LaneStep::MixedSize { pf } => {
                        // After sriov-manage has returned: its rebind clears the mode.
                        if let Some(e) = enabling.as_mut() {
                            if !e.result().ok {
                                // Its SR-IOV failed: the waits below say so for each pin.
                                continue;
                            }
                        }
                        if let Err(why) = mixed_size_on(host, pf) {
                            for p in &lane.pins {
                                if !done.iter().any(|d| d.uuid == p.uuid) {
                                    done.push(failed(p, why.clone(), 0));
                                }
                            }
                            break;
                        }
                    }
                    LaneStep::MigMode { pf } => {
                        if let Err(why) = mig_mode_on(host, pf) {
                            fail_rest(&lane, &mut done, &why);
                            break;
                        }
                    }
                    LaneStep::GpuInstances { pf, profiles } => {
                        // After sriov-manage has returned: its rebind wipes GPU instances.
                        if let Some(e) = enabling.as_mut() {
                            if !e.result().ok {
                                continue;
                            }
                        }
                        if let Err(why) = lane_instances(host, pf, profiles) {
                            fail_rest(&lane, &mut done, &why);
                            break;
                        }
                    }
                    LaneStep::WaitListed {
                        pin,
                        parent,
                        bound_s,
                    } => {
                        since = std::time::Instant::now();
                        let bound = Duration::from_secs(*bound_s);
                        match wait_listed(host, pin, parent, bound, &mut enabling) {
                            Listed::Yes => waited_for = Some(&pin.uuid),
                            Listed::Failed(why) => {
                                let ms = since.elapsed().as_millis() as u64;
                                done.push(failed(pin, why, ms));
                            }
                            Listed::Stale(why) => {
                                stale = Some(why);
                                break;
                            }
                        }
                    }
                    LaneStep::Write(w) => {
                        if done.iter().any(|d| d.uuid == w.pin.uuid) {
                            continue;
                        }
                        if waited_for != Some(w.pin.uuid.as_str()) {
                            since = std::time::Instant::now();
                        }
                        let outcome = write_pin(host, w);
                        let ms = since.elapsed().as_millis() as u64;
                        match outcome {
                            Ok(()) => done.push(device(
                                &w.pin,
                                State::Created,
                                w.moved.clone().unwrap_or_default(),
                                ms,
                            )),
                            Err(e) if e.downcast_ref::<Stale>().is_some() => {
                                stale = Some(format!("{e:#}"));
                                break;
                            }
                            Err(e) => done.push(failed(&w.pin, format!("{e:#}"), ms)),
                        }
                    }
                }
            }
            let Some(why) = stale else { break };
            let rest: Vec<SavedVgpu> = first
                .pins
                .iter()
                .filter(|p| !done.iter().any(|d| d.uuid == p.uuid))
                .cloned()
                .collect();
            replans += 1;
            if replans > super::MAX_REPLANS {
                for p in &rest {
                    let reason = format!(
                        "the host kept changing under the plan ({why}); it was observed and \
                         planned again {} times",
                        super::MAX_REPLANS
                    );
                    done.push(failed(p, reason, 0));
                }
                break;
            }
            eprintln!(
                "vgpuctl restore: {}: the host is not as planned ({why}): observing it again and \
                 planning again ({replans} of {})",
                first.gpu,
                super::MAX_REPLANS
            );
            // The new plan sees every VF there is: this GPU's SR-IOV has ended.
            if let Some(e) = enabling.as_mut() {
                if !e.result().ok {
                    let reason = format!("SR-IOV: {}", e.result().reason);
                    for p in &rest {
                        done.push(failed(p, reason.clone(), 0));
                    }
                    break;
                }
            }
            let only = crate::pins::Pins {
                sriov: Vec::new(),
                mixed_size: Vec::new(),
                vgpus: rest.clone(),
            };
            let f = super::observe::observe_vgpus(host, &only);
            // The VFs this run's pins hold already, so that no other pin counts them as its own.
            let held: Vec<String> = first
                .pins
                .iter()
                .filter(|p| p.interface == "vendor-vfio")
                .filter(|p| {
                    done.iter()
                        .any(|d| d.uuid == p.uuid && d.state != State::Failed)
                })
                .map(|p| p.parent.clone())
                .collect();
            lane = super::planner::restore_lane(
                &f,
                &first.gpu,
                rest,
                first.sriov,
                super::planner::Phase::Settled,
                &held,
                bound.as_secs(),
            );
        }
        let sriov = match enabling.as_mut() {
            Some(e) => Some(e.result().clone()),
            None => first.vfs_ready.map(|vfs| SriovResult {
                pf: first.gpu.clone(),
                ok: true,
                vfs,
                ms: 0,
                reason: String::new(),
            }),
        };
        // The pins' order, as the report always listed them.
        let order = |u: &str| first.pins.iter().position(|p| p.uuid == u);
        done.sort_by_key(|d| order(&d.uuid));
        (sriov, done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::plan::Plan;

    fn ctx_on<'a>(host: &'a Host, profile: &'a Profile) -> Ctx<'a> {
        Ctx {
            host,
            profile,
            vf_timeout: Duration::from_secs(1),
            allow_unverified: false,
        }
    }

    #[test]
    fn consecutive_sriov_steps_of_distinct_gpus_form_one_batch() {
        let sriov = |pf: &str| Step {
            id: format!("sriov-{pf}"),
            title: format!("Enable SR-IOV on {pf}"),
            action: Action::EnableSriov {
                pf: pf.into(),
                vfs: 32,
                bound_s: 120,
            },
        };
        let other = Step {
            id: "run".into(),
            title: "Run".into(),
            action: Action::Run(crate::host::Cmd::new("true")),
        };
        let a = sriov("0000:67:00.0");
        let b = sriov("0000:68:00.0");
        assert_eq!(
            sriov_batch(&[a.clone(), b.clone(), other.clone(), a.clone()]),
            2
        );
        assert_eq!(sriov_batch(&[a.clone(), a.clone(), b.clone()]), 1);
        assert_eq!(sriov_batch(&[other.clone(), a.clone()]), 1);
        assert_eq!(sriov_batch(&[]), 1);
    }

    /// A file that changed since the plan read it is not overwritten: the executor stops there
    /// (to observe and plan again) and runs none of the later steps.
    #[test]
    fn a_changed_file_stops_the_plan_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::real(tmp.path());
        host.write_file(
            "etc/default/grub",
            b"edited by hand\n",
            WriteOpts::default(),
        )
        .unwrap();
        let mut plan = Plan::default();
        plan.push(
            "iommu",
            "Edit GRUB",
            Action::WriteBytes {
                path: "/etc/default/grub".into(),
                before: b"GRUB_CMDLINE_LINUX=\"\"\n".to_vec(),
                after: b"GRUB_CMDLINE_LINUX=\"intel_iommu=on\"\n".to_vec(),
                mode: 0o644,
            },
        );
        plan.push(
            "nouveau",
            "Blacklist nouveau",
            Action::WriteFile {
                path: "/etc/modprobe.d/x.conf".into(),
                before: None,
                after: "blacklist nouveau\n".into(),
                mode: 0o644,
            },
        );
        let profile = Profile::default();
        let mut seen = Vec::new();
        let (failures, stale) = execute(&ctx_on(&host, &profile), &plan, &mut |s, ok| {
            seen.push((s.id.clone(), ok));
            Ok(())
        })
        .unwrap();
        assert!(failures.is_empty());
        assert!(stale.unwrap().contains("/etc/default/grub changed"));
        assert_eq!(seen, vec![("iommu".to_string(), false)]);
        assert_eq!(host.read("etc/default/grub").unwrap(), "edited by hand\n");
        assert!(!host.exists("etc/modprobe.d/x.conf"));
    }

    /// The same file as planned is written.
    #[test]
    fn an_unchanged_file_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::real(tmp.path());
        let mut plan = Plan::default();
        plan.push(
            "f",
            "Write",
            Action::WriteFile {
                path: "/etc/x.conf".into(),
                before: None,
                after: "x\n".into(),
                mode: 0o644,
            },
        );
        let profile = Profile::default();
        let (failures, stale) =
            execute(&ctx_on(&host, &profile), &plan, &mut |_, _| Ok(())).unwrap();
        assert!(failures.is_empty() && stale.is_none());
        assert_eq!(host.read("etc/x.conf").unwrap(), "x\n");
    }

    /// A vGPU whose UUID appeared since the plan is not created again on another parent.
    #[test]
    fn a_uuid_taken_since_the_plan_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::real(tmp.path());
        let uuid = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
        let dir = "sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types";
        host.write_file(
            &format!("{dir}/nvidia-555/available_instances"),
            b"1\n",
            WriteOpts::default(),
        )
        .unwrap();
        host.write_file(
            &format!("{}/{uuid}/x", facts::vgpus::MDEV_DEVICES),
            b"",
            WriteOpts::default(),
        )
        .unwrap();
        let c = SysfsCreate::new(
            crate::vgpu::place::Create {
                gpu: "0000:e8:00.0".into(),
                parent: "0000:e8:00.4".into(),
                type_id: "nvidia-555".into(),
                type_name: "NVIDIA A40-1B".into(),
                uuid: uuid.into(),
                interface: facts::Interface::Mdev,
            },
            dir,
        );
        let e = check_create(&host, &c).unwrap_err();
        assert!(e.downcast_ref::<Stale>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("no vGPU 2f82ee72"), "{e:#}");
    }
}
