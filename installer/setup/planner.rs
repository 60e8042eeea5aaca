//! plan(facts, desired) -> Plan. Pure: everything it needs is in [`Facts`] and [`Desired`].

use crate::pins::Pins;
use crate::profile::{Profile, SavedVgpu};
use crate::vgpu::{place, select};
use crate::vgpu_name;

pub use super::paths::{
    BINARY, RESTORE_UNIT, RESTORE_UNIT_TEXT, RESUME_UNIT, RESUME_UNIT_TEXT, UNIT_DIR, WANTS_DIR,
};

use super::observe::Facts;
use super::plan::{Action, Later, Plan, SysfsCreate, Unpin};

/// What the operator wants, from a profile. The driver source is validated before planning.
pub struct Desired<'a> {
    pub profile: &'a Profile,
    /// The described source of the driver to install (None: nothing to install).
    pub driver_source: Option<String>,
    /// The bound of every wait for VFs (`--vf-timeout`), in seconds.
    pub vf_timeout_s: u64,
    /// New UUIDs are drawn from this seed, so that planning the same facts again (under the lock,
    /// after a planned re-observation) names the same devices the shown plan named.
    pub uuid_seed: u64,
}

/// The `n`th new UUID of a plan (random version 4, lowercase), from the seed.
pub fn seeded_uuid(seed: u64, n: u64) -> String {
    // splitmix64: a seed and a counter give well-spread, distinct bytes.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(seed ^ mix(n.wrapping_mul(2)));
    let b = mix(seed ^ mix(n.wrapping_mul(2) + 1));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Bad input found while planning: names the profile field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    pub field: String,
    pub reason: String,
}

fn err(field: String, reason: String) -> PlanError {
    PlanError { field, reason }
}

/// The work on GPUs after the pre-reboot steps `pre` (and the reboot they need, `reboot_reasons`),
/// and the pins the active profile should end with when nothing is created.
pub fn plan(
    f: &Facts,
    want: &Desired,
    pre: Plan,
    reboot_reasons: &[String],
) -> Result<Plan, PlanError> {
    let profile = want.profile;
    let active = f.active.as_ref();
    let mut plan = pre;
    // Driver-dependent work waits for a loaded driver and for any reboot the earlier steps need.
    let driver_ready = f.driver.loaded_version.is_some()
        && f.driver.installed()
        && plan.steps.is_empty()
        && reboot_reasons.is_empty();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut present_pins: Vec<SavedVgpu> = Vec::new();
    let mut creating = false;
    let pins = f.pins.as_ref().map(|p| p.vgpus.as_slice()).unwrap_or(&[]);
    // A new UUID is never one that exists or is pinned (a plan made again after some of an
    // earlier plan's devices were created draws from the start of the same sequence).
    let taken: Vec<String> = f
        .mdevs
        .iter()
        .filter_map(|v| v.uuid.clone())
        .chain(pins.iter().map(|p| p.uuid.clone()))
        .collect();
    let mut minted = 0u64;
    let mut fresh = || loop {
        minted += 1;
        let u = seeded_uuid(want.uuid_seed, minted);
        if !taken.contains(&u) {
            break u;
        }
    };

    for (idx, req) in profile.gpus.iter().enumerate() {
        let field = |k: &str| format!("gpus[{idx}].{k}");
        let gpus = select::select(&f.host, &req.select).map_err(|e| err(field("select"), e))?;
        for gpu in gpus {
            if let Some((_, other)) = seen.iter().find(|(a, _)| *a == gpu.address) {
                return Err(err(
                    field("select"),
                    format!("{} is already selected by gpus[{other}]", gpu.address),
                ));
            }
            seen.push((gpu.address.clone(), idx));
            let ty = select::resolve_type(gpu, &req.vgpu_type)
                .map_err(|e| err(field("vgpu_type"), e))?;
            if let Some(max) = ty.max_instance {
                if req.count > max {
                    return Err(err(
                        field("count"),
                        format!(
                            "{} x {} does not fit on {} {}: at most {max} per GPU",
                            req.count,
                            vgpu_name::short(&ty.name),
                            gpu.model.name,
                            gpu.address
                        ),
                    ));
                }
            }
            let existing = f.vgpus();
            let on_gpu: Vec<_> = existing
                .iter()
                .filter(|v| v.gpu.as_deref() == Some(gpu.address.as_str()))
                .collect();
            let present = on_gpu
                .iter()
                .filter(|v| vgpu_name::same(&v.type_name, &ty.name))
                .count()
                .min(req.count as usize) as u32;
            for v in on_gpu
                .iter()
                .filter(|v| !vgpu_name::same(&v.type_name, &ty.name))
            {
                plan.notes.push(format!(
                    "{} on {} has type {}: left alone (a VM may use it)",
                    v.uuid.as_deref().unwrap_or("a vGPU"),
                    v.parent,
                    v.type_name
                ));
            }
            if present < req.count
                && on_gpu
                    .iter()
                    .any(|v| !vgpu_name::same(&v.type_name, &ty.name))
            {
                return Err(err(
                    field("vgpu_type"),
                    format!(
                        "{} {} already holds vGPUs of another type; in NVIDIA's default equal-size \
                         mode a GPU holds one type at a time, so {} cannot be added",
                        gpu.model.name,
                        gpu.address,
                        vgpu_name::short(&ty.name)
                    ),
                ));
            }
            if !driver_ready {
                plan.after_reboot.push(format!(
                    "{}{} x {} on {} {}",
                    if gpu.sriov_capable() {
                        "enable SR-IOV, then "
                    } else {
                        ""
                    },
                    req.count,
                    vgpu_name::short(&ty.name),
                    gpu.model.name,
                    gpu.address
                ));
                continue;
            }
            let total = gpu.sriov_totalvfs.unwrap_or(0);
            let vfs_pending =
                gpu.sriov_capable() && (total == 0 || gpu.sriov_numvfs != Some(total));
            if vfs_pending {
                plan.push(
                    format!("sriov:{}", gpu.address),
                    format!("Enable SR-IOV on {} {}", gpu.model.name, gpu.address),
                    Action::EnableSriov {
                        pf: gpu.address.clone(),
                        vfs: total,
                        bound_s: want.vf_timeout_s,
                    },
                );
            }
            if present < req.count {
                creating = true;
                if vfs_pending {
                    // Their parents are VFs that do not exist yet: placed once they do.
                    let later = plan.later.get_or_insert_with(|| Later {
                        after: "the VFs above and their type listings appear".into(),
                        work: Vec::new(),
                    });
                    later.work.push(format!(
                        "{} x {} on {} {} (placed on its VFs)",
                        req.count,
                        vgpu_name::short(&ty.name),
                        gpu.model.name,
                        gpu.address
                    ));
                    continue;
                }
                let placement =
                    place::place(gpu, &existing, &ty, req.count, &req.uuids, pins, &mut fresh)
                        .map_err(|e| err(field("count"), e))?;
                let create = placement
                    .create
                    .into_iter()
                    .map(|c| {
                        let dir = gpu
                            .parents
                            .iter()
                            .find(|p| p.address == c.parent)
                            .map(|p| p.attr_dir.clone())
                            .unwrap_or_default();
                        SysfsCreate::new(c, &dir)
                    })
                    .collect();
                plan.push(
                    format!("vgpus:{}", gpu.address),
                    format!(
                        "Create {} vGPUs on {} {}",
                        vgpu_name::short(&ty.name),
                        gpu.model.name,
                        gpu.address
                    ),
                    Action::CreateVgpus {
                        gpu: gpu.address.clone(),
                        model: gpu.model.name.clone(),
                        type_name: ty.name.clone(),
                        present: placement.present,
                        create,
                    },
                );
            } else {
                // Already there: the pins are what exists (vendor-VFIO devices are named by the pin
                // of their VF, or get one).
                let placement =
                    place::place(gpu, &existing, &ty, req.count, &req.uuids, pins, &mut fresh)
                        .map_err(|e| err(field("count"), e))?;
                let dropped = dropped(gpu, &existing, &ty.name, pins, &placement.present)
                    .map_err(|e| err(field("count"), e))?;
                let live: Vec<_> = dropped.iter().filter(|d| d.live).cloned().collect();
                if !live.is_empty() {
                    plan.push(
                        format!("remove:{}", gpu.address),
                        format!(
                            "Remove {} vGPU(s) on {} {} (count is {})",
                            live.len(),
                            gpu.model.name,
                            gpu.address,
                            req.count
                        ),
                        Action::RemoveVgpus { devices: live },
                    );
                }
                plan.unpins.extend(dropped);
                present_pins.extend(placement.present);
            }
        }
    }

    if !driver_ready {
        if !plan.after_reboot.is_empty() || !profile.gpus.is_empty() {
            plan.after_reboot
                .push("install and enable vgpuctl-restore.service, pin the vGPUs".into());
        }
        return Ok(plan);
    }

    // The boot-time restore unit, run from a stable path.
    if !f.binary_current {
        plan.push(
            "binary",
            format!("Install vgpuctl as {BINARY}"),
            Action::CopyBinary { to: BINARY.into() },
        );
    }
    let unit_path = format!("/{UNIT_DIR}/{RESTORE_UNIT}");
    if f.restore_unit.as_deref() != Some(RESTORE_UNIT_TEXT) {
        plan.push(
            "unit:restore",
            "Install the boot-time restore unit",
            Action::WriteFile {
                path: unit_path,
                before: f.restore_unit.clone(),
                after: RESTORE_UNIT_TEXT.to_string(),
                mode: 0o644,
            },
        );
        plan.push(
            "daemon-reload",
            "Reload systemd",
            Action::Run(crate::host::Cmd::new("systemctl").arg("daemon-reload")),
        );
    }
    if !f.restore_unit_enabled {
        plan.push(
            "enable:restore",
            "Enable the restore unit",
            Action::EnableUnit {
                unit: RESTORE_UNIT.into(),
            },
        );
    }
    // Pins: when nothing is created, the pins file must still say what exists.
    if !creating {
        let wanted = desired_active(profile);
        let wanted_pins = desired_pins(profile, f.pins.as_ref(), &present_pins);
        // An older release's copy still holding pins differs from `wanted`: this step moves them.
        if active != Some(&wanted) || f.pins.as_ref() != Some(&wanted_pins) {
            let title = if !plan.unpins.iter().any(|u| u.pinned) {
                "Pin the vGPUs in /etc/vgpuctl/vgpus.toml".to_string()
            } else {
                format!(
                    "Pin the vGPUs in /etc/vgpuctl/vgpus.toml, unpinning {}",
                    plan.unpins
                        .iter()
                        .filter(|u| u.pinned)
                        .filter_map(|u| u.uuid.as_deref())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            plan.push(
                "pin",
                title,
                Action::PinProfile {
                    pins: present_pins.clone(),
                },
            );
        }
    }
    if f.resume_unit_enabled {
        plan.push(
            "disable:resume",
            "Disable the one-shot resume unit",
            Action::DisableUnit {
                unit: RESUME_UNIT.into(),
            },
        );
    }
    Ok(plan)
}

/// What a lower `count` drops on `gpu`: the live vGPUs of the profile's type and the pins that
/// `kept` no longer holds. A vGPU a VM is using is never dropped: that is an error naming it.
fn dropped(
    gpu: &crate::facts::Gpu,
    existing: &[crate::facts::Vgpu],
    type_name: &str,
    pins: &[SavedVgpu],
    kept: &[SavedVgpu],
) -> Result<Vec<Unpin>, String> {
    // mdev devices are named by UUID; a vendor-VFIO device by its VF.
    let same = |uuid: Option<&str>, parent: &str, s: &SavedVgpu| match uuid {
        Some(u) => s.uuid == u,
        None => s.parent == parent,
    };
    let mut out = Vec::new();
    for v in existing.iter().filter(|v| {
        v.gpu.as_deref() == Some(gpu.address.as_str()) && vgpu_name::same(&v.type_name, type_name)
    }) {
        if kept.iter().any(|k| same(v.uuid.as_deref(), &v.parent, k)) {
            continue;
        }
        let pin = pins.iter().find(|p| same(v.uuid.as_deref(), &v.parent, p));
        let uuid = v.uuid.clone().or_else(|| pin.map(|p| p.uuid.clone()));
        if v.in_use {
            return Err(format!(
                "this count would remove vGPU {} ({} on {}), which a VM is using (its VFIO group \
                 or iommufd device is open); stop that VM first, or keep the count",
                uuid.as_deref().unwrap_or("without UUID"),
                v.type_name,
                v.parent
            ));
        }
        out.push(Unpin {
            uuid,
            type_name: v.type_name.clone(),
            parent: v.parent.clone(),
            gpu: gpu.address.clone(),
            interface: v.interface,
            live: true,
            pinned: pin.is_some(),
        });
    }
    for p in pins
        .iter()
        .filter(|p| p.gpu.as_deref() == Some(gpu.address.as_str()))
    {
        let listed = out
            .iter()
            .any(|d| d.uuid.as_deref() == Some(p.uuid.as_str()));
        if listed || kept.iter().any(|k| k.uuid == p.uuid) {
            continue;
        }
        out.push(Unpin {
            uuid: Some(p.uuid.clone()),
            type_name: p.type_name.clone(),
            parent: p.parent.clone(),
            gpu: gpu.address.clone(),
            interface: crate::facts::Interface::None,
            live: false,
            pinned: true,
        });
    }
    Ok(out)
}

/// The active profile setup leaves: the operator's request without the driver link and without
/// pins (those are [`desired_pins`]).
pub fn desired_active(profile: &Profile) -> Profile {
    let mut p = profile.clone();
    p.driver = None;
    p.sriov.clear();
    p.vgpus.clear();
    p
}

/// The pins setup leaves: `present` on the GPUs this profile manages, the pins of devices it
/// does not manage (imported ones) kept, and the profile's `sriov` PFs added.
pub fn desired_pins(profile: &Profile, current: Option<&Pins>, present: &[SavedVgpu]) -> Pins {
    let mut p = current.cloned().unwrap_or_default();
    crate::pins::enable_sriov(&mut p, &profile.sriov);
    // Pins on the GPUs this profile manages are replaced by what exists now.
    let managed: Vec<&str> = present.iter().filter_map(|v| v.gpu.as_deref()).collect();
    crate::pins::unpin(&mut p, |v| {
        v.gpu
            .as_deref()
            .map(|g| managed.contains(&g))
            .unwrap_or(false)
    });
    crate::pins::pin(&mut p, present.iter().cloned());
    // A stable order, so that the same devices always give the same file.
    p.vgpus
        .sort_by(|a, b| (&a.gpu, &a.parent, &a.uuid).cmp(&(&b.gpu, &b.parent, &b.uuid)));
    p
}
