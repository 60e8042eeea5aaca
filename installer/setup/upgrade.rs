//! A driver upgrade (issue 17 item 1): the profile's `[driver]` names another version than the
//! installed one. Pure: from the facts, either a refusal (exit 2, before any change) or the steps
//! that take the host from the old driver to the new one up to the reboot that loads it:
//! the vGPUs removed (their pins kept: after the reboot setup, and restore at boot, recreate
//! each with its UUID on its VF, its type found by name on the new driver), the old driver
//! removed the way it was installed, the new one installed.
//!
//! Type ids name a type on one driver branch only (recorded-behaviour.md §1), so nothing here
//! carries an id across: what must hold before anything is removed is that the new driver
//! offers every pinned vGPU's type *by name*, judged from the embedded catalog for its branch
//! (the new driver cannot be asked before it is loaded).

use super::observe::{vgpu_key, Facts};
use super::plan::{Action, Plan, Unpin};
use crate::exit::Failure;

/// The installed driver and the one the profile asks for, when they differ
/// ([`super::prereboot::driver_source`] tells).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub from: String,
    pub to: String,
}

/// The refusals that stop an upgrade before any change, or its steps (pushed onto `plan`).
/// `source`: the new driver's described source (a redacted url or a path).
pub fn plan(f: &Facts, up: &Upgrade, source: &str, plan: &mut Plan) -> Result<(), Failure> {
    refuse_in_use(f, up)?;
    refuse_types_not_offered(f, up)?;
    let Some(uninstall) = f.driver_uninstall.clone() else {
        return Err(Failure::usage(format!(
            "the driver upgrade from {} to {} needs the installed driver removed first, and \
             nothing says how it was installed: there is no /usr/bin/nvidia-uninstall (a \
             .run install leaves it) and no kept package or .run of {} under /{} (a package \
             is removed with apt-get or dnf by its name). Nothing was changed. Remove the \
             old driver with its installer or package manager, then run setup again",
            up.from,
            up.to,
            up.from,
            crate::driver::DOWNLOAD_DIR
        )));
    };
    let pins = f.pins.clone().unwrap_or_default();
    let live = f.vgpus();
    let devices: Vec<Unpin> = live
        .iter()
        .map(|v| Unpin {
            uuid: v.uuid.clone().or_else(|| {
                pins.vgpus
                    .iter()
                    .find(|p| super::retype::pins_it(p, v))
                    .map(|p| p.uuid.clone())
            }),
            type_name: v.type_name.clone(),
            parent: v.parent.clone(),
            gpu: v.gpu.clone().unwrap_or_default(),
            interface: v.interface,
            live: true,
            // The pins stay: they say what to recreate on the new driver.
            pinned: false,
        })
        .collect();
    for v in &live {
        if !pins.vgpus.iter().any(|p| super::retype::pins_it(p, v)) {
            plan.notes.push(format!(
                "{} ({} on {}) is not pinned by vgpuctl: the driver upgrade removes it and \
                 nothing recreates it",
                v.uuid.as_deref().unwrap_or("a vGPU"),
                v.type_name,
                v.parent
            ));
        }
    }
    if !devices.is_empty() {
        plan.push(
            "upgrade:vgpus",
            format!(
                "Remove {} vGPU(s) for the driver upgrade {} -> {} (their pins are kept: each \
                 is recreated with its UUID on its VF after the reboot, its type found by name \
                 on the new driver)",
                devices.len(),
                up.from,
                up.to
            ),
            Action::RemoveVgpus { devices },
        );
    }
    plan.push(
        "upgrade:uninstall",
        format!(
            "Remove the NVIDIA vGPU host driver {} the way it was installed",
            up.from
        ),
        Action::Run(uninstall),
    );
    plan.push(
        "driver",
        format!("Install the NVIDIA vGPU host driver {}", up.to),
        Action::InstallDriver {
            source: source.to_string(),
        },
    );
    plan.after_reboot.push(format!(
        "the reboot loads driver {} (setup stops for it: exit 3 and the command to run after it);          then each pinned vGPU is recreated with its UUID on its VF, its type found by name on          {} (at boot by restore; setup records the new type ids in the pins)",
        up.to, up.to
    ));
    Ok(())
}

/// No vGPU may be in use: removing it would pull the device from under a running VM.
fn refuse_in_use(f: &Facts, up: &Upgrade) -> Result<(), Failure> {
    let held: Vec<String> = f
        .vgpus()
        .iter()
        .filter(|v| v.in_use)
        .map(|v| {
            let who = f
                .holders
                .get(&vgpu_key(v))
                .filter(|h| !h.is_empty())
                .map(|h| h.join(", "))
                .unwrap_or_else(|| "a process (its VFIO device is open)".into());
            format!(
                "{} ({} on {}) is held by {who}",
                v.uuid.as_deref().unwrap_or("the vGPU"),
                v.type_name,
                v.parent
            )
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "the driver upgrade from {} to {} removes every vGPU, and {} in use: {}. Nothing was \
         changed. Stop those VMs, then run setup again",
        up.from,
        up.to,
        if held.len() == 1 {
            "one is"
        } else {
            "some are"
        },
        held.join("; ")
    )))
}

/// Every pinned vGPU's type must be offered, by name, by the new driver's branch.
fn refuse_types_not_offered(f: &Facts, up: &Upgrade) -> Result<(), Failure> {
    let Some(branch) = crate::catalog::branch_of(&up.to) else {
        return Ok(());
    };
    let pins = f.pins.clone().unwrap_or_default();
    let mut missing = Vec::new();
    for p in &pins.vgpus {
        let Some(gpu) = f.gpus.iter().find(|g| Some(&g.address) == p.gpu.as_ref()) else {
            continue;
        };
        if crate::vgpu::select::offered_on_branch(gpu, branch, &p.type_name) == Some(false) {
            missing.push(format!(
                "vGPU {} on {} ({} {}): {} is not offered by driver {}",
                p.uuid,
                p.parent,
                gpu.model.name,
                gpu.address,
                crate::vgpu_name::short(&p.type_name),
                up.to
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "the driver upgrade from {} to {} would leave pinned vGPUs without their type: {}. \
         Nothing was changed. Change those vGPUs' type in the profile to one the new driver \
         offers (a change of type), or keep driver {}",
        up.from,
        up.to,
        missing.join("; "),
        up.from
    )))
}
