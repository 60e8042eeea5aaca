//! plan(facts, profile) -> Plan. Pure: everything it needs is in [`Inputs`].

use crate::facts::HostFacts;
use crate::pins::Pins;
use crate::profile::{Profile, SavedVgpu};
use crate::vgpu::select;
use crate::vgpu_name;

use super::plan::{Action, Plan, Unpin};

pub const RESTORE_UNIT: &str = "vgpuctl-restore.service";
pub const RESUME_UNIT: &str = "vgpuctl-resume.service";
pub const UNIT_DIR: &str = "etc/systemd/system";
pub const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
pub const BINARY: &str = "/usr/local/sbin/vgpuctl";
pub const RESTORE_UNIT_TEXT: &str = include_str!("../../units/vgpuctl-restore.service");
pub const RESUME_UNIT_TEXT: &str = include_str!("../../units/vgpuctl-resume.service");

/// Everything the planner looks at. The caller reads these from the host.
pub struct Inputs<'a> {
    pub facts: &'a HostFacts,
    pub profile: &'a Profile,
    /// The active profile now on the host.
    pub active: Option<&'a Profile>,
    /// The pins now on the host ([`crate::pins::load`]).
    pub pins: Option<&'a Pins>,
    /// Installed unit files' contents.
    pub restore_unit: Option<String>,
    pub resume_unit_enabled: bool,
    /// /usr/local/sbin/vgpuctl is this very binary.
    pub binary_current: bool,
    /// Pre-reboot steps already computed (IOMMU, nouveau, vfio-pci, driver).
    pub pre_reboot: Plan,
    /// A reboot is needed before the driver-dependent steps.
    pub reboot_reasons: Vec<String>,
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

/// The work on GPUs, and the pins the active profile should end with when nothing is created.
pub fn plan(i: Inputs) -> Result<Plan, PlanError> {
    let f = i.facts;
    let mut plan = i.pre_reboot;
    // Driver-dependent work waits for a loaded driver and for any reboot the earlier steps need.
    let driver_ready = f.driver.loaded_version.is_some()
        && f.driver.installed()
        && plan.steps.is_empty()
        && i.reboot_reasons.is_empty();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut present_pins: Vec<SavedVgpu> = Vec::new();
    let mut creating = false;

    for (idx, req) in i.profile.gpus.iter().enumerate() {
        let field = |k: &str| format!("gpus[{idx}].{k}");
        let gpus = select::select(f, &req.select).map_err(|e| err(field("select"), e))?;
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
            if gpu.sriov_capable() && (total == 0 || gpu.sriov_numvfs != Some(total)) {
                plan.push(
                    format!("sriov:{}", gpu.address),
                    format!("Enable SR-IOV on {} {}", gpu.model.name, gpu.address),
                    Action::EnableSriov {
                        pf: gpu.address.clone(),
                        vfs: total,
                    },
                );
            }
            if present < req.count {
                creating = true;
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
                        count: req.count,
                        present,
                        uuids: req.uuids.clone(),
                    },
                );
            } else {
                // Already there: the pins are what exists (vendor-VFIO devices are named by the pin
                // of their VF, or get one).
                let pins = i.pins.map(|p| p.vgpus.as_slice()).unwrap_or(&[]);
                let mut counter = 0;
                let placement = crate::vgpu::place::place(
                    gpu,
                    &existing,
                    &ty,
                    req.count,
                    &req.uuids,
                    pins,
                    &mut || {
                        counter += 1;
                        format!("pending-{counter}")
                    },
                )
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
        if !plan.after_reboot.is_empty() || !i.profile.gpus.is_empty() {
            plan.after_reboot
                .push("install and enable vgpuctl-restore.service, pin the vGPUs".into());
        }
        return Ok(plan);
    }

    // The boot-time restore unit, run from a stable path.
    if !i.binary_current {
        plan.push(
            "binary",
            format!("Install vgpuctl as {BINARY}"),
            Action::CopyBinary { to: BINARY.into() },
        );
    }
    let unit_path = format!("/{UNIT_DIR}/{RESTORE_UNIT}");
    if i.restore_unit.as_deref() != Some(RESTORE_UNIT_TEXT) {
        plan.push(
            "unit:restore",
            "Install the boot-time restore unit",
            Action::WriteFile {
                path: unit_path,
                before: i.restore_unit.clone(),
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
        let wanted = desired_active(i.profile);
        let wanted_pins = desired_pins(i.profile, i.pins, &present_pins);
        // An older release's copy still holding pins differs from `wanted`: this step moves them.
        if i.active != Some(&wanted) || i.pins != Some(&wanted_pins) {
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
            plan.push("pin", title, Action::PinProfile);
        }
    }
    if i.resume_unit_enabled {
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
                 is open); stop that VM first, or keep the count",
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
