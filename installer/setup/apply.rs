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

/// The parent still offers the type and the device the write makes does not exist yet.
fn check_create(host: &Host, c: &SysfsCreate) -> Result<()> {
    let v = &c.create;
    let holds = match v.interface {
        facts::Interface::VendorVfio => {
            create::vendor_current(host, &v.parent).is_none()
                && host
                    .read(&format!("{}/creatable_vgpu_types", c.attr_dir))
                    .map(|t| {
                        crate::sysfs_parse::parse_creatable(&t)
                            .iter()
                            .any(|x| x.id.to_string() == v.type_id)
                    })
                    .unwrap_or(false)
        }
        _ => {
            let room = host
                .read_trim(&format!("{}/{}/available_instances", c.attr_dir, v.type_id))
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0);
            room > 0 && !host.exists(&format!("{}/{}", facts::vgpus::MDEV_DEVICES, v.uuid))
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
        Action::CreateVgpus {
            gpu,
            type_name,
            present,
            create,
            ..
        } => create_vgpus(ctx, gpu, type_name, present, create),
        Action::PinImported { pins, sriov } => {
            // A host set up by an older release: its pins move to vgpus.toml first.
            crate::pins::migrate(host)?;
            let mut saved = crate::pins::load(host)?.unwrap_or_default();
            crate::pins::pin(&mut saved, pins.iter().cloned());
            crate::pins::enable_sriov(&mut saved, sriov);
            crate::pins::save(host, &saved)?;
            Ok(format!(
                "pinned {} vGPU(s) in /etc/vgpuctl/vgpus.toml",
                pins.len()
            ))
        }
        Action::RestorePins { bound_s, .. } => {
            let saved = crate::pins::load(host)?.unwrap_or_default();
            let report =
                crate::vgpu::restore::restore(host, &saved, Duration::from_secs(*bound_s))?;
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
            other => bail!(
                "VF {} reads current_vgpu_type {} after writing {}",
                v.parent,
                other.unwrap_or_else(|| "0".into()),
                v.type_id
            ),
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
    for (i, step) in plan.steps.iter().enumerate() {
        crate::fault::point("step");
        crate::outln!("[{}/{}] {}", i + 1, plan.steps.len(), step.title);
        let outcome = apply(ctx, step);
        record(step, outcome.is_ok())?;
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
                    break;
                }
            }
        }
    }
    Ok((failures, None))
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
