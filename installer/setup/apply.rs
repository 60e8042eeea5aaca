//! Apply: run each step through the host's I/O layer. Every step re-reads what it needs, so a
//! step interrupted half-way is simply planned again by the next run.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::facts;
use crate::host::{Host, WriteOpts};
use crate::profile::Profile;
use crate::vgpu::{create, place, select, sriov};

use super::plan::{Action, Step};
use super::planner::{desired_active, desired_pins, UNIT_DIR, WANTS_DIR};

pub struct Ctx<'a> {
    pub host: &'a Host,
    pub profile: &'a Profile,
    pub vf_timeout: Duration,
    pub allow_unverified: bool,
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn apply(ctx: &Ctx, step: &Step) -> Result<String> {
    let host = ctx.host;
    match &step.action {
        Action::WriteFile {
            path, after, mode, ..
        } => {
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
            path, after, mode, ..
        } => {
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
        Action::EnableSriov { pf, .. } => match sriov::enable(host, pf, ctx.vf_timeout)? {
            sriov::Enabled::Already(n) => Ok(format!("{pf}: {n} VFs were already enabled")),
            sriov::Enabled::Now { vfs, waited } => Ok(format!(
                "{pf}: {vfs} VFs ready after {:.1} s",
                waited.as_secs_f64()
            )),
        },
        Action::CreateVgpus {
            gpu,
            type_name,
            count,
            uuids,
            ..
        } => create_vgpus(ctx, gpu, type_name, *count, uuids),
        Action::PinProfile => {
            let pins = present_pins(ctx)?;
            let current = crate::pins::load(host)?;
            // Pins first: an older release's copy still holding pins is stripped only after
            // they are safe in vgpus.toml (see crate::pins::migrate).
            crate::pins::save(host, &desired_pins(ctx.profile, current.as_ref(), &pins))?;
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

/// Place and create on one GPU, pinning after every device so an interruption loses nothing.
fn create_vgpus(
    ctx: &Ctx,
    gpu_addr: &str,
    type_name: &str,
    count: u32,
    uuids: &[String],
) -> Result<String> {
    let host = ctx.host;
    let f = facts::observe(host);
    let gpu = f
        .gpu(gpu_addr)
        .with_context(|| format!("GPU {gpu_addr} disappeared"))?;
    let ty = select::resolve_type(gpu, type_name).map_err(anyhow::Error::msg)?;
    if !ty.live {
        bail!("{gpu_addr} shows no vGPU types yet (is SR-IOV enabled and the driver loaded?)");
    }
    let mut saved = crate::pins::load(host)?.unwrap_or_default();
    let placement = place::place(
        gpu,
        &f.vgpus(),
        &ty,
        count,
        uuids,
        &saved.vgpus,
        &mut new_uuid,
    )
    .map_err(anyhow::Error::msg)?;
    let mut pins = placement.present.clone();
    saved = desired_pins(ctx.profile, Some(&saved), &pins);
    crate::pins::save(host, &saved)?;
    crate::active::save(host, &desired_active(ctx.profile))?;
    let mut made = 0;
    for c in &placement.create {
        create::create(host, c)?;
        made += 1;
        pins.push(c.saved());
        saved = desired_pins(ctx.profile, Some(&saved), &pins);
        crate::pins::save(host, &saved)?;
    }
    Ok(format!(
        "{gpu_addr}: created {made}, {} already present ({})",
        placement.present.len(),
        crate::vgpu_name::short(&ty.name)
    ))
}

/// The pins of everything the profile asks for that exists now.
fn present_pins(ctx: &Ctx) -> Result<Vec<crate::profile::SavedVgpu>> {
    let f = facts::observe(ctx.host);
    let saved = crate::pins::load(ctx.host)?.unwrap_or_default();
    let mut pins = Vec::new();
    for req in &ctx.profile.gpus {
        for gpu in select::select(&f, &req.select).map_err(anyhow::Error::msg)? {
            let ty = select::resolve_type(gpu, &req.vgpu_type).map_err(anyhow::Error::msg)?;
            let p = place::place(
                gpu,
                &f.vgpus(),
                &ty,
                req.count,
                &req.uuids,
                &saved.vgpus,
                &mut new_uuid,
            )
            .map_err(anyhow::Error::msg)?;
            pins.extend(p.present);
        }
    }
    Ok(pins)
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
