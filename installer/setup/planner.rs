//! plan(facts, desired) -> Plan. Pure: everything it needs is in [`Facts`] and [`Desired`].

use crate::pins::Pins;
use crate::profile::{Profile, SavedVgpu};
use crate::vgpu::{place, select};
use crate::vgpu_name;

pub use super::paths::{
    BINARY, RESTORE_UNIT, RESTORE_UNIT_TEXT, RESUME_UNIT, RESUME_UNIT_TEXT, UNIT_DIR, WANTS_DIR,
};

use super::mixed_size;
use super::observe::Facts;
use super::plan::{Action, Later, Plan, SysfsCreate, Unpin};

/// What the operator wants, from a profile. The driver source is validated before planning.
pub struct Desired<'a> {
    pub profile: &'a Profile,
    /// The described source of the driver to install (None: nothing to install).
    pub driver_source: Option<String>,
    /// The version the profile's driver package names, when it names another than the installed
    /// one (a driver upgrade, [`super::upgrade`]).
    pub driver_upgrade: Option<super::upgrade::Upgrade>,
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

pub use super::plan::PlanError;

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
    let mut present_pins: Vec<SavedVgpu> = Vec::new();
    let mut creating = false;
    let pins = f.pins.as_ref().map(|p| p.vgpus.as_slice()).unwrap_or(&[]);
    // Placement also follows the profile's own [[vgpus]] (an exported profile names each vGPU's
    // UUID and VF): on a host that does not pin them yet, each goes back on its VF when free.
    let placing: Vec<SavedVgpu> = pins
        .iter()
        .cloned()
        .chain(
            profile
                .vgpus
                .iter()
                .filter(|v| !pins.iter().any(|p| p.uuid == v.uuid))
                .cloned(),
        )
        .collect();
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

    // The entries selecting each GPU, GPUs in the order they are first selected. Several entries
    // on one GPU (different types) run it in mixed-size mode (recorded-behaviour.md §4).
    let mut groups: Vec<(&crate::facts::Gpu, Vec<usize>)> = Vec::new();
    for (idx, req) in profile.gpus.iter().enumerate() {
        let gpus = select::select(&f.host, &req.select)
            .map_err(|e| err(format!("gpus[{idx}].select"), e))?;
        for gpu in gpus {
            match groups.iter_mut().find(|(g, _)| g.address == gpu.address) {
                Some((_, entries)) => entries.push(idx),
                None => groups.push((gpu, vec![idx])),
            }
        }
    }
    for (gpu, entries) in &groups {
        let gpu: &crate::facts::Gpu = gpu;
        let mixed = entries.len() > 1;
        // Several MIG-backed types on one GPU (stackhpc's 3 x A100D-2-20C + 1 x A100D-1-10C)
        // are several GPU instance profiles side by side, not mixed-size mode: a MIG-enabled
        // GPU has none (recorded-behaviour.md §4-5). Checked before any change.
        let mig = super::mig_group::check(profile, gpu, entries)?;
        if mixed && mig.is_none() {
            mixed_size::check(profile, gpu, entries)?;
        }
        if driver_ready && retype_gpu(&mut plan, f, profile, gpu, entries, pins)? {
            // Its new vGPUs are planned once the removals freed their room.
            creating = true;
            continue;
        }
        // The GPU instances of its MIG-backed entries, once MIG mode is on and SR-IOV (which
        // wipes instances) is done: all of them before any vGPU, larger profiles first.
        let vfs_ready = !gpu.vfs_pending();
        let mig_current = gpu.mig_mode.is_some_and(|m| m.current);
        if let (Some(m), true, true, true) = (&mig, driver_ready, mig_current, vfs_ready) {
            let last = *entries.last().expect("a group has an entry");
            let steps = super::mig_group::instance_steps(gpu, m, &f.vgpus(), last)?;
            if !steps.is_empty() {
                creating = true;
                for (id, title, action) in steps {
                    plan.push(id, title, action);
                }
                let later = plan.later.get_or_insert_with(|| Later {
                    after: "the GPU instances above and their vGPU type listings appear".into(),
                    work: Vec::new(),
                });
                for &idx in entries {
                    let req = &profile.gpus[idx];
                    later.work.push(format!(
                        "{} x {} on {} {} (placed on its VFs)",
                        req.count,
                        vgpu_name::short(&req.vgpu_type),
                        gpu.model.name,
                        gpu.address
                    ));
                }
                continue;
            }
        }
        // Several types on one GPU: mixed-size mode, unless they are MIG-backed.
        let mixed_size = mixed && mig.is_none();
        let mut group = mixed_size::Group::default();
        for (n, &idx) in entries.iter().enumerate() {
            let req = &profile.gpus[idx];
            let field = |k: &str| format!("gpus[{idx}].{k}");
            let ty = select::resolve_type(gpu, &req.vgpu_type)
                .map_err(|e| err(field("vgpu_type"), e))?;
            // Types of this GPU's other entries are this profile's, not foreign devices.
            let ours = |name: &str| {
                mixed
                    && entries.iter().any(|&i| {
                        select::resolve_type(gpu, &profile.gpus[i].vgpu_type)
                            .is_ok_and(|t| vgpu_name::same(&t.name, name))
                    })
            };
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
                .filter(|v| !vgpu_name::same(&v.type_name, &ty.name) && !ours(&v.type_name))
            {
                plan.notes.push(format!(
                    "{} on {} has type {}: left alone (a VM may use it)",
                    v.uuid.as_deref().unwrap_or("a vGPU"),
                    v.parent,
                    v.type_name
                ));
            }
            if !mixed
                && present < req.count
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
                    match (gpu.sriov_capable(), mixed_size) {
                        (true, true) => "enable SR-IOV, then mixed-size mode, then ",
                        (true, false) => "enable SR-IOV, then ",
                        (false, true) => "mixed-size mode, then ",
                        (false, false) => "",
                    },
                    req.count,
                    vgpu_name::short(&ty.name),
                    gpu.model.name,
                    gpu.address
                ));
                continue;
            }
            // A MIG-backed type: MIG mode first, then SR-IOV, then its GPU instances, then the
            // vGPUs (recorded-behaviour.md §5); each later phase is planned from what the
            // driver then shows.
            let gi_profile = crate::vgpu::mig::gi_profile_of(&ty.name);
            let mode = gpu.mig_mode.unwrap_or(crate::facts::mig::MigMode {
                capable: false,
                current: false,
                pending: false,
            });
            if gi_profile.is_some() && !mode.current {
                creating = true;
                let id = format!("mig:{}", gpu.address);
                if !mode.pending && !plan.steps.iter().any(|s| s.id == id) {
                    plan.push(
                        id,
                        format!("Turn MIG mode on for {} {}", gpu.model.name, gpu.address),
                        Action::MigMode {
                            gpu: gpu.address.clone(),
                        },
                    );
                }
                let later = plan.later.get_or_insert_with(|| Later {
                    after: "MIG mode is on (a GPU that needs a reset for it asks for a reboot)"
                        .into(),
                    work: Vec::new(),
                });
                later.work.push(format!(
                    "enable SR-IOV, then {} GPU instance(s) of {}, then {} x {} on {} {}",
                    req.count,
                    gi_profile.unwrap_or_default(),
                    req.count,
                    vgpu_name::short(&ty.name),
                    gpu.model.name,
                    gpu.address
                ));
                continue;
            }
            let vfs_pending = gpu.vfs_pending();
            if vfs_pending && n == 0 {
                push_enable_sriov(&mut plan, gpu, want.vf_timeout_s);
            }
            if mixed_size && n == 0 {
                // After SR-IOV (sriov-manage clears the mode) and before the first type write.
                if let Some(step) = mixed_size::turn_on(gpu, &on_gpu, entries)? {
                    plan.push(step.0, step.1, step.2);
                }
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
                        "{} x {} on {} {} (placed on its VFs{})",
                        req.count,
                        vgpu_name::short(&ty.name),
                        gpu.model.name,
                        gpu.address,
                        match gi_profile {
                            Some(gi) => format!(
                                ", each on a GPU instance of {gi}: the GPU's instances are made \
                                 first, larger profiles first"
                            ),
                            None => String::new(),
                        }
                    ));
                    continue;
                }
                // The parents this GPU's earlier entries take are not free for this one.
                let occupied: Vec<crate::facts::Vgpu> =
                    existing.iter().cloned().chain(group.planned()).collect();
                let placement = place::place(
                    gpu, &occupied, &ty, req.count, &req.uuids, &placing, &mut fresh,
                )
                .map_err(|e| err(field("count"), e))?;
                let create: Vec<SysfsCreate> = placement
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
                if mixed {
                    group.add(&ty.name, placement.present, create);
                    continue;
                }
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
                // On a mixed-size GPU the pins of its other entries' types are theirs: only this
                // type's pins (and, once per GPU, those of types no entry asks) can be dropped.
                let pins_here: Vec<SavedVgpu> = pins
                    .iter()
                    .filter(|p| {
                        !mixed
                            || vgpu_name::same(&p.type_name, &ty.name)
                            || (n == 0 && !ours(&p.type_name))
                    })
                    .cloned()
                    .collect();
                let dropped = dropped(gpu, &existing, &ty.name, &pins_here, &placement.present)
                    .map_err(|e| err(field("count"), e))?;
                let live: Vec<_> = dropped.iter().filter(|d| d.live).cloned().collect();
                if !live.is_empty() {
                    plan.push(
                        // One step per entry of a mixed-size GPU: ids stay unique.
                        if mixed {
                            format!("remove:{}:{idx}", gpu.address)
                        } else {
                            format!("remove:{}", gpu.address)
                        },
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
                if mixed {
                    group.add(&ty.name, placement.present.clone(), Vec::new());
                }
                present_pins.extend(placement.present);
            }
        }
        if let Some(step) = group.into_step(gpu, mixed_size) {
            plan.push(step.0, step.1, step.2);
        }
    }

    if !driver_ready {
        if !plan.after_reboot.is_empty() || !profile.gpus.is_empty() {
            // A host already restoring at boot (a driver upgrade) keeps its unit: say only what
            // is still to do.
            let unit_ready =
                f.restore_unit.as_deref() == Some(RESTORE_UNIT_TEXT) && f.restore_unit_enabled;
            plan.after_reboot.push(if unit_ready {
                "pin the vGPUs".into()
            } else {
                "install and enable vgpuctl-restore.service, pin the vGPUs".into()
            });
        }
        return Ok(plan);
    }

    // PFs the profile wants SR-IOV on without vGPUs of vgpuctl's (imported `sriov-manage -e`
    // lines; on Proxmox VE, GPUs whose vGPUs Proxmox makes): enabled now, as at every boot.
    for (i, pf) in profile.sriov.iter().enumerate() {
        let Some(gpu) = f.host.gpus.iter().find(|g| g.address == *pf) else {
            return Err(err(
                format!("sriov[{i}]"),
                format!(
                    "no NVIDIA GPU at {pf} on this host (its GPUs: {})",
                    f.host
                        .gpus
                        .iter()
                        .map(|g| g.address.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if gpu.vfs_pending() {
            push_enable_sriov(&mut plan, gpu, want.vf_timeout_s);
        }
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

/// A change of type on `gpu` (its `entries` of the profile): the step removing each pinned vGPU
/// of a type no entry asks for any more (named, and unpinned with the operator's consent, as for a
/// lowered count), and the entries' new vGPUs as work planned after it. False: no change of type.
fn retype_gpu(
    plan: &mut Plan,
    f: &Facts,
    profile: &Profile,
    gpu: &crate::facts::Gpu,
    entries: &[usize],
    pins: &[SavedVgpu],
) -> Result<bool, PlanError> {
    let mut asked = Vec::new();
    for &idx in entries {
        let wanted = &profile.gpus[idx].vgpu_type;
        // A GPU holding vGPUs of one size lists only that size (vendor VFIO,
        // recorded-behaviour.md §4): a type of its model it does not list now is named from the
        // catalog, and checked against the live listing once the removals freed the GPU.
        let name = match select::resolve_type(gpu, wanted) {
            Ok(ty) => ty.name,
            Err(e) => match select::known_type(gpu, wanted) {
                Some(spec) => spec.name.clone(),
                None => return Err(err(format!("gpus[{idx}].vgpu_type"), e)),
            },
        };
        asked.push(name);
    }
    let removed =
        super::retype::removals(&gpu.address, &f.vgpus(), pins, &asked, entries.len() > 1)
            .map_err(|e| err(format!("gpus[{}].vgpu_type", entries[0]), e))?;
    if removed.is_empty() {
        return Ok(false);
    }
    let mut old: Vec<&str> = removed.iter().map(|u| u.type_name.as_str()).collect();
    old.sort();
    old.dedup();
    plan.push(
        format!("retype:{}", gpu.address),
        format!(
            "Remove {} vGPU(s) of type {} on {} {}: the profile asks for {}",
            removed.len(),
            old.join(", "),
            gpu.model.name,
            gpu.address,
            asked
                .iter()
                .map(|a| vgpu_name::short(a))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        Action::RemoveVgpus {
            devices: removed.clone(),
        },
    );
    plan.unpins.extend(removed);
    let later = plan.later.get_or_insert_with(|| Later {
        after: "the removals above".into(),
        work: Vec::new(),
    });
    for (&idx, name) in entries.iter().zip(&asked) {
        later.work.push(format!(
            "{} x {} on {} {} (the vGPUs of this type already there are kept)",
            profile.gpus[idx].count,
            vgpu_name::short(name),
            gpu.model.name,
            gpu.address
        ));
    }
    Ok(true)
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
    p.mixed_size.clear();
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
    crate::pins::mark_mixed_size(&mut p, managed.iter().copied());
    // A stable order, so that the same devices always give the same file.
    p.vgpus
        .sort_by(|a, b| (&a.gpu, &a.parent, &a.uuid).cmp(&(&b.gpu, &b.parent, &b.uuid)));
    p
}

// ---- Restore: the pins are the Desired ----------------------------------------------------

/// Where a restore stands when it plans a GPU's lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The start (at boot): a parent that does not list its pin's type yet may still come (its
    /// VF after `sriov-manage`, the PF's listing once udev binds its driver), so it is waited for.
    First,
    /// After the executor found a precondition gone and this GPU's SR-IOV ended: what is not
    /// there now is gone, and an mdev pin moves to another free parent of its GPU.
    Settled,
}

fn pin_interface(p: &SavedVgpu) -> crate::facts::Interface {
    if p.interface == "vendor-vfio" {
        crate::facts::Interface::VendorVfio
    } else {
        crate::facts::Interface::Mdev
    }
}

/// The physical function a pin's SR-IOV depends on (None: a PF parent or a non-PCI parent).
fn sriov_pf(v: &SavedVgpu) -> Option<&str> {
    v.gpu.as_deref().filter(|g| *g != v.parent)
}

/// Does `t` (listed on a parent) name the pin's type? By name; a pin without a name (a generic
/// mdev type) by its directory.
fn names_pin(t: &crate::facts::VgpuType, p: &SavedVgpu) -> bool {
    if p.type_name.is_empty() {
        t.id == p.type_id
    } else {
        vgpu_name::same(&t.name, &p.type_name) || t.name == p.type_name
    }
}

/// The restore plan of `pins`: one lane per GPU they name (or per parent that is no PCI function
/// of a GPU) and per PF whose SR-IOV they ask for, in address order.
pub fn restore(f: &super::observe::VgpuFacts, pins: &Pins, bound_s: u64) -> Vec<super::plan::Lane> {
    let mut groups: std::collections::BTreeMap<String, Vec<SavedVgpu>> = Default::default();
    for v in &pins.vgpus {
        let key = v.gpu.clone().unwrap_or_else(|| v.parent.clone());
        groups.entry(key).or_default().push(v.clone());
    }
    for pf in &pins.sriov {
        groups.entry(pf.clone()).or_default();
    }
    groups
        .into_iter()
        .map(|(key, devs)| {
            let sriov =
                pins.sriov.contains(&key) || devs.iter().any(|d| sriov_pf(d) == Some(key.as_str()));
            let mut lane = restore_lane(f, &key, devs, sriov, Phase::First, &[], bound_s);
            if pins.mixed_size.contains(&key) {
                mixed_size_step(f, &mut lane);
            }
            mig_steps(f, &mut lane);
            lane
        })
        .collect()
}

/// A lane of MIG-backed pins brings its GPU back in the recorded order (recorded-behaviour.md
/// §5): MIG mode first where it did not persist (Hopper), SR-IOV, then one GPU instance per pin
/// to make (those there that hold no vGPU count), once SR-IOV has ended, then the writes.
fn mig_steps(f: &super::observe::VgpuFacts, lane: &mut super::plan::Lane) {
    use super::plan::LaneStep;
    let writes: Vec<&SavedVgpu> = lane
        .steps
        .iter()
        .filter_map(|s| match s {
            LaneStep::Write(w) => Some(&w.pin),
            _ => None,
        })
        .collect();
    let mut wanted: Vec<String> = writes.iter().filter_map(|p| p.gi_profile.clone()).collect();
    if wanted.is_empty() {
        return;
    }
    // Larger instances first: the driver places each as it comes, and small ones made first
    // can take the only start a larger one has (crate::vgpu::mig_fit).
    crate::vgpu::mig_fit::creation_order(&mut wanted);
    let gpu = f.gpus.iter().find(|g| g.address == lane.gpu);
    let mig_on = gpu.and_then(|g| g.mig_mode).is_some_and(|m| m.current);
    if mig_on {
        // Instances there already that no vGPU holds (a restore run again) are used first.
        let held = f
            .vgpus()
            .iter()
            .filter(|v| v.gpu.as_deref() == Some(lane.gpu.as_str()))
            .filter_map(|v| crate::vgpu::mig::gi_profile_of(&v.type_name))
            .map(String::from)
            .collect::<Vec<_>>();
        let mut free: Vec<String> = gpu
            .map(|g| g.gpu_instances.iter().map(|i| i.profile.clone()).collect())
            .unwrap_or_default();
        for h in held {
            if let Some(i) = free.iter().position(|p| *p == h) {
                free.remove(i);
            }
        }
        for p in free {
            if let Some(i) = wanted.iter().position(|w| *w == p) {
                wanted.remove(i);
            }
        }
    }
    let at = lane
        .steps
        .iter()
        .position(|s| matches!(s, LaneStep::EnableSriov { .. }))
        .map_or(0, |i| i + 1);
    if !wanted.is_empty() {
        lane.steps.insert(
            at,
            LaneStep::GpuInstances {
                pf: lane.gpu.clone(),
                profiles: wanted,
            },
        );
    }
    if !mig_on {
        lane.steps.insert(
            0,
            LaneStep::MigMode {
                pf: lane.gpu.clone(),
            },
        );
    }
}

/// A lane of a GPU pinned in mixed-size mode turns the mode on after its SR-IOV and before its
/// first write, unless the driver says it is on or there is nothing to write.
fn mixed_size_step(f: &super::observe::VgpuFacts, lane: &mut super::plan::Lane) {
    use super::plan::LaneStep;
    let on = f
        .gpus
        .iter()
        .find(|g| g.address == lane.gpu)
        .and_then(|g| g.mixed_size)
        .is_some_and(|m| m.enabled);
    if on || !lane.steps.iter().any(|s| matches!(s, LaneStep::Write(_))) {
        return;
    }
    let at = lane
        .steps
        .iter()
        .position(|s| matches!(s, LaneStep::EnableSriov { .. }))
        .map_or(0, |i| i + 1);
    lane.steps.insert(
        at,
        LaneStep::MixedSize {
            pf: lane.gpu.clone(),
        },
    );
}

/// One GPU's lane: its SR-IOV, then per pin not live a wait for its parent to list its type
/// (when it may still come) and the write that makes it, on its pinned parent. An mdev pin whose
/// parent is gone or taken once everything is there moves to a free parent of the same GPU (its
/// UUID is its identity to the VM); a vendor-VFIO pin never moves (its VF is its identity) and
/// fails naming the VF. A vendor-VFIO type id is the live list's id for the pinned type's name.
pub fn restore_lane(
    f: &super::observe::VgpuFacts,
    key: &str,
    pins: Vec<SavedVgpu>,
    sriov: bool,
    phase: Phase,
    claimed: &[String],
    bound_s: u64,
) -> super::plan::Lane {
    use super::plan::{Lane, LaneStep, PinWrite};
    use crate::facts::Interface;
    use crate::vgpu::place::Create;

    let gpu = f.gpus.iter().find(|g| g.address == key);
    let vfs_ready = gpu.filter(|_| sriov).and_then(|g| {
        let total = g.sriov_totalvfs.filter(|t| *t > 0)?;
        let all_listed = g.vfs.len() == total as usize
            && g.vfs
                .iter()
                .all(|vf| g.parents.iter().any(|p| p.address == vf.address));
        (g.sriov_numvfs == Some(total) && all_listed).then_some(total)
    });
    let mut lane = Lane {
        gpu: key.to_string(),
        pins: pins.clone(),
        sriov,
        vfs_ready,
        steps: Vec::new(),
        present: Vec::new(),
        failed: Vec::new(),
    };
    let sriov_pending = sriov && vfs_ready.is_none();
    if sriov_pending && phase == Phase::First {
        lane.steps.push(LaneStep::EnableSriov {
            pf: key.to_string(),
            bound_s,
        });
    }
    // Nothing more will come: SR-IOV is done (or not needed) and the GPU's driver is bound.
    let settled = phase == Phase::Settled
        || (!sriov_pending && gpu.is_none_or(|g| g.driver.is_some() && !g.parents.is_empty()));
    let existing = f.vgpus();
    // Parents this plan fills: a VF takes one vGPU; a PF's room is counted down.
    let mut taken: Vec<String> = existing
        .iter()
        .filter(|v| v.interface == Interface::VendorVfio)
        .map(|v| v.parent.clone())
        .collect();
    let mut used: Vec<(String, String)> = Vec::new();
    // Vendor-VFIO VFs a pin holds (made by this run, or planned or found present here): a VF
    // holds one vGPU, so it is taken for every other pin naming it.
    let mut claimed: Vec<String> = claimed.to_vec();
    let room =
        |parent: &crate::facts::Parent, t: &crate::facts::VgpuType, used: &[(String, String)]| {
            let planned = used
                .iter()
                .filter(|(p, id)| *p == parent.address && *id == t.id)
                .count() as u32;
            t.available > planned
        };
    for pin in pins {
        let iface = pin_interface(&pin);
        // Live already?
        if iface == Interface::Mdev {
            if let Some(v) = f
                .mdevs
                .iter()
                .find(|v| v.uuid.as_deref() == Some(&pin.uuid))
            {
                if crate::vgpu::create::name_matches(&v.type_name, &pin.type_name)
                    || v.type_id == pin.type_id
                {
                    lane.present.push(pin);
                } else {
                    let why = format!(
                        "exists with type {}, not {}: left alone",
                        v.type_name, pin.type_name
                    );
                    lane.failed.push((pin, why));
                }
                continue;
            }
        } else if claimed.contains(&pin.parent) {
            let why = format!(
                "VF {} is taken by another pinned vGPU: the VM expects this vGPU at VF {} (a \
                 vendor-specific VFIO vGPU is never moved to another VF)",
                pin.parent, pin.parent
            );
            lane.failed.push((pin, why));
            continue;
        } else if let Some(cur) = f.parent(&pin.parent).and_then(|p| p.current_type.as_ref()) {
            if cur.id == pin.type_id || vgpu_name::same(&cur.name, &pin.type_name) {
                claimed.push(pin.parent.clone());
                lane.present.push(pin);
            } else {
                let why = format!(
                    "VF {} holds vGPU type {} ({}), not {}: left alone; the VM expects this vGPU \
                     at VF {} (a vendor-specific VFIO vGPU is never moved to another VF)",
                    pin.parent, cur.id, cur.name, pin.type_name, pin.parent
                );
                lane.failed.push((pin, why));
            }
            continue;
        }
        let create_on = |parent: &str, type_id: &str, attr_dir: &str| {
            super::plan::SysfsCreate::new(
                Create {
                    gpu: pin.gpu.clone().unwrap_or_default(),
                    parent: parent.to_string(),
                    type_id: type_id.to_string(),
                    type_name: pin.type_name.clone(),
                    uuid: pin.uuid.clone(),
                    interface: iface,
                },
                attr_dir,
            )
        };
        // Its pinned parent, when it lists the type and can take one now.
        let parent = f.parent(&pin.parent);
        let listed =
            parent.and_then(|p| p.types.iter().find(|t| names_pin(t, &pin)).map(|t| (p, t)));
        if let Some((p, t)) = listed {
            let free = match iface {
                Interface::VendorVfio => !taken.contains(&p.address),
                _ => room(p, t, &used) && (p.address == key || !taken.contains(&p.address)),
            };
            if free {
                taken.push(p.address.clone());
                claimed.push(p.address.clone());
                used.push((p.address.clone(), t.id.clone()));
                let write = create_on(&p.address, &t.id, &p.attr_dir);
                lane.steps.push(LaneStep::Write(PinWrite {
                    pin,
                    write,
                    moved: None,
                }));
                continue;
            }
        }
        if !settled {
            // Not there yet: wait for its own parent to list it, then write what the pin says
            // (a listing that then says otherwise fails the precondition: observed, replanned).
            let attr_dir = match iface {
                Interface::VendorVfio => crate::facts::vgpus::vendor_dir(&pin.parent),
                _ => parent.map(|p| p.attr_dir.clone()).unwrap_or_else(|| {
                    format!(
                        "{}/{}/mdev_supported_types",
                        crate::facts::vgpus::MDEV_BUS,
                        pin.parent
                    )
                }),
            };
            lane.steps.push(LaneStep::WaitListed {
                pin: pin.clone(),
                parent: pin.parent.clone(),
                bound_s,
            });
            taken.push(pin.parent.clone());
            claimed.push(pin.parent.clone());
            let write = create_on(&pin.parent, &pin.type_id, &attr_dir);
            lane.steps.push(LaneStep::Write(PinWrite {
                pin,
                write,
                moved: None,
            }));
            continue;
        }
        let why_not = match parent {
            None => format!("{} is gone", pin.parent),
            Some(p) if p.current_type.is_some() || taken.contains(&p.address) => {
                format!("{} is taken", pin.parent)
            }
            Some(_) if listed.is_none() => {
                format!("{} does not offer {} now", pin.parent, pin.type_name)
            }
            Some(_) => format!("{} has no room for {} now", pin.parent, pin.type_name),
        };
        if iface == Interface::VendorVfio {
            let why = format!(
                "{why_not}; the VM expects this vGPU at VF {} (a vendor-specific VFIO vGPU is \
                 never moved to another VF: the VF is its PCI identity to the VM)",
                pin.parent
            );
            lane.failed.push((pin, why));
            continue;
        }
        // An mdev pin: another free parent of the same GPU (the UUID is what the VM knows).
        let slot = gpu.and_then(|g| {
            let mut seen: Vec<(String, String)> = Vec::new();
            crate::vgpu::place::free_slots(g, &existing, &pin.type_name)
                .into_iter()
                .find(|(p, id, _)| {
                    // The k-th slot of a parent is free when fewer than k were planned there.
                    seen.push((p.clone(), id.clone()));
                    let k = seen.iter().filter(|(q, i)| q == p && i == id).count();
                    let planned = used.iter().filter(|(q, i)| q == p && i == id).count();
                    (*p == g.address || !taken.contains(p)) && k > planned
                })
        });
        match slot {
            Some((p, id, _)) => {
                let attr_dir = f.parent(&p).map(|x| x.attr_dir.clone()).unwrap_or_default();
                taken.push(p.clone());
                used.push((p.clone(), id.clone()));
                let moved = format!(
                    "saved parent {} was gone or taken ({why_not}); created on {p}",
                    pin.parent
                );
                let write = create_on(&p, &id, &attr_dir);
                lane.steps.push(LaneStep::Write(PinWrite {
                    pin,
                    write,
                    moved: Some(moved),
                }));
            }
            None => {
                let why = format!(
                    "no parent can take it: {why_not} and no other free parent of {} offers {} \
                     now (in NVIDIA's default equal-size mode a GPU holds one vGPU type at a time)",
                    pin.gpu.as_deref().unwrap_or("its device"),
                    pin.type_name
                );
                lane.failed.push((pin, why));
            }
        }
    }
    lane
}

/// The step enabling SR-IOV on `gpu`, once per plan (a GPU's entries and the profile's `sriov`
/// list may both ask for it): `sriov-manage -e`, then the wait for all its VFs.
fn push_enable_sriov(plan: &mut Plan, gpu: &crate::facts::Gpu, bound_s: u64) {
    let id = format!("sriov:{}", gpu.address);
    if plan.steps.iter().any(|s| s.id == id) {
        return;
    }
    plan.push(
        id,
        format!("Enable SR-IOV on {} {}", gpu.model.name, gpu.address),
        Action::EnableSriov {
            pf: gpu.address.clone(),
            vfs: gpu.sriov_totalvfs.unwrap_or(0),
            bound_s,
        },
    );
}
