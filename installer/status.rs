//! `vgpuctl status` and `vgpuctl types`: what is there now, and how it differs from the active
//! profile. Pure functions of facts and the profile.

use serde::Serialize;

use crate::facts::{HostFacts, Interface, Vgpu};
use crate::pins::Pins;
use crate::vgpu_name;

#[derive(Clone, Debug, Serialize)]
pub struct VgpuRow {
    pub uuid: Option<String>,
    #[serde(rename = "type")]
    pub type_name: String,
    pub type_id: String,
    pub parent: String,
    pub in_use: bool,
    /// A MIG-backed vGPU: the GPU instance it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<InstanceRef>,
}

/// A GPU instance: its profile, and its id where it is known (the driver hands ids out; a VF
/// on the 580 branch names its vGPU's, or the GPU holds one instance of that profile).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceRef {
    pub profile: String,
    pub id: Option<u32>,
}

/// A MIG-capable GPU's mode and its GPU instances (`nvidia-smi mig -lgi`).
#[derive(Clone, Debug, Serialize)]
pub struct MigStatus {
    pub current: bool,
    pub pending: bool,
    pub gpu_instances: Vec<InstanceRef>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuStatus {
    pub address: String,
    pub model: String,
    pub interface: String,
    pub vfs_enabled: u32,
    pub vfs_total: u32,
    /// Mixed-size (heterogeneous) mode is on, as the driver says.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mixed_size: bool,
    /// MIG mode and GPU instances, on a GPU the driver shows MIG for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigStatus>,
    pub vgpus: Vec<VgpuRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub gpus: Vec<GpuStatus>,
    /// mdev devices whose parent is not an NVIDIA GPU (any mdev parent counts).
    pub other_mdevs: Vec<VgpuRow>,
    pub active_profile: bool,
    pub restore_unit_enabled: bool,
    pub drift: Vec<String>,
    /// The vGPU scheduling policy the loaded driver runs (`/proc/driver/nvidia/params`), as
    /// [`crate::edit::registry_dwords::describe`] words it; None when no driver shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

fn row(v: &Vgpu, profile: Option<&Pins>) -> VgpuRow {
    // A vendor-VFIO vGPU has no UUID in the kernel: ours is the pin of that VF.
    let uuid = v.uuid.clone().or_else(|| {
        profile.and_then(|p| {
            p.vgpus
                .iter()
                .find(|s| s.parent == v.parent && s.interface == "vendor-vfio")
                .map(|s| s.uuid.clone())
        })
    });
    VgpuRow {
        uuid,
        type_name: v.type_name.clone(),
        type_id: v.type_id.clone(),
        parent: v.parent.clone(),
        in_use: v.in_use,
        gpu_instance: None,
    }
}

/// The GPU instance a MIG-backed vGPU of `g` runs on: its type's profile, and the id the VF
/// reports or, when `g` has one instance of that profile and one such vGPU, that one's.
fn instance_of(g: &crate::facts::Gpu, v: &Vgpu, on_gpu: &[&Vgpu]) -> Option<InstanceRef> {
    let profile = crate::vgpu::mig::gi_profile_of(&v.type_name)?;
    let reported = g
        .parents
        .iter()
        .find(|p| p.address == v.parent)
        .and_then(|p| p.gpu_instance_id);
    let of_profile: Vec<u32> = g
        .gpu_instances
        .iter()
        .filter(|i| i.profile == profile)
        .map(|i| i.id)
        .collect();
    let sharing = on_gpu
        .iter()
        .filter(|o| crate::vgpu::mig::gi_profile_of(&o.type_name) == Some(profile))
        .count();
    let only = (of_profile.len() == 1 && sharing == 1).then(|| of_profile[0]);
    Some(InstanceRef {
        profile: profile.to_string(),
        id: reported.or(only),
    })
}

/// `profile`: the pins ([`crate::pins::load`]); drift is measured against them.
pub fn status(facts: &HostFacts, profile: Option<&Pins>) -> Status {
    let all = facts.vgpus();
    let gpus = facts
        .gpus
        .iter()
        .map(|g| {
            let on: Vec<&Vgpu> = all
                .iter()
                .filter(|v| v.gpu.as_deref() == Some(g.address.as_str()))
                .collect();
            GpuStatus {
                address: g.address.clone(),
                model: g.model.name.clone(),
                interface: g.interface.as_str().to_string(),
                vfs_enabled: g.sriov_numvfs.unwrap_or(0),
                vfs_total: g.sriov_totalvfs.unwrap_or(0),
                mixed_size: g.mixed_size.is_some_and(|m| m.enabled),
                mig: g.mig_mode.filter(|m| m.capable).map(|m| MigStatus {
                    current: m.current,
                    pending: m.pending,
                    gpu_instances: g
                        .gpu_instances
                        .iter()
                        .map(|i| InstanceRef {
                            profile: i.profile.clone(),
                            id: Some(i.id),
                        })
                        .collect(),
                }),
                vgpus: on
                    .iter()
                    .map(|v| VgpuRow {
                        gpu_instance: instance_of(g, v, &on),
                        ..row(v, profile)
                    })
                    .collect(),
            }
        })
        .collect();
    let other_mdevs = all
        .iter()
        .filter(|v| v.gpu.is_none())
        .map(|v| row(v, profile))
        .collect();
    let mut drift = Vec::new();
    if let Some(p) = profile {
        for s in &p.vgpus {
            let live = if s.interface == "vendor-vfio" {
                all.iter()
                    .find(|v| v.interface == Interface::VendorVfio && v.parent == s.parent)
            } else {
                all.iter()
                    .find(|v| v.uuid.as_deref() == Some(s.uuid.as_str()))
            };
            match live {
                None => drift.push(format!(
                    "missing: {} ({} on {})",
                    s.uuid, s.type_name, s.parent
                )),
                Some(v)
                    if !(vgpu_name::same(&v.type_name, &s.type_name) || v.type_id == s.type_id) =>
                {
                    drift.push(format!(
                        "wrong type: {} is {} on {}, the profile says {}",
                        s.uuid, v.type_name, v.parent, s.type_name
                    ))
                }
                Some(v) if v.parent != s.parent => drift.push(format!(
                    "moved: {} is on {}, pinned on {}",
                    s.uuid, v.parent, s.parent
                )),
                Some(_) => {}
            }
        }
        for v in &all {
            let pinned = p.vgpus.iter().any(|s| match &v.uuid {
                Some(u) => &s.uuid == u,
                None => s.parent == v.parent,
            });
            if !pinned {
                drift.push(format!(
                    "not in the profile: {} ({} on {})",
                    v.uuid.as_deref().unwrap_or("vGPU"),
                    v.type_name,
                    v.parent
                ));
            }
        }
        if !facts.restore_unit_enabled {
            drift.push(
                "vgpuctl-restore.service is not enabled: nothing will be restored at boot".into(),
            );
        }
    }
    Status {
        gpus,
        other_mdevs,
        active_profile: profile.is_some(),
        restore_unit_enabled: facts.restore_unit_enabled,
        drift,
        scheduler: None,
    }
}

pub fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if s.gpus.is_empty() {
        let _ = writeln!(out, "No NVIDIA GPU.");
    }
    for g in &s.gpus {
        let _ = writeln!(
            out,
            "{} {}  interface {}  VFs {}/{}  vGPUs {}{}{}",
            g.address,
            g.model,
            g.interface,
            g.vfs_enabled,
            g.vfs_total,
            g.vgpus.len(),
            if g.mixed_size {
                "  mixed-size mode"
            } else {
                ""
            },
            match &g.mig {
                Some(m) if m.current => "  MIG mode on",
                Some(m) if m.pending => "  MIG mode pending (a GPU reset or a reboot)",
                _ => "",
            }
        );
        if let Some(m) = g.mig.as_ref().filter(|m| !m.gpu_instances.is_empty()) {
            let _ = writeln!(out, "  GPU instances: {}", instances_line(&m.gpu_instances));
        }
        for v in &g.vgpus {
            let _ = writeln!(
                out,
                "  {:<36}  {:<18} on {}{}{}",
                v.uuid.as_deref().unwrap_or("-"),
                vgpu_name::short(&v.type_name),
                v.parent,
                match &v.gpu_instance {
                    Some(InstanceRef {
                        profile,
                        id: Some(id),
                    }) => format!("  GPU instance {id} ({profile})"),
                    Some(InstanceRef { profile, id: None }) =>
                        format!("  GPU instance of {profile}"),
                    None => String::new(),
                },
                if v.in_use { "  (in use by a VM)" } else { "" }
            );
        }
    }
    for v in &s.other_mdevs {
        let _ = writeln!(
            out,
            "mdev {} {} on {}",
            v.uuid.as_deref().unwrap_or("-"),
            v.type_name,
            v.parent
        );
    }
    let _ = writeln!(
        out,
        "\nActive profile: {}; restore unit: {}",
        if s.active_profile {
            "/etc/vgpuctl/profile.toml"
        } else {
            "none"
        },
        if s.restore_unit_enabled {
            "enabled"
        } else {
            "not enabled"
        }
    );
    if let Some(p) = &s.scheduler {
        let _ = writeln!(out, "vGPU scheduler: {p}");
    }
    if s.drift.is_empty() {
        if s.active_profile {
            let _ = writeln!(out, "No drift: every pinned vGPU is present.");
        }
    } else {
        let _ = writeln!(out, "Drift:");
        for d in &s.drift {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}

/// "2g.20gb ids 3, 4, 5; 1g.10gb id 13", profiles in the order the driver lists them.
fn instances_line(gis: &[InstanceRef]) -> String {
    let mut by: Vec<(&str, Vec<String>)> = Vec::new();
    for g in gis {
        let id = g.id.map_or("?".to_string(), |i| i.to_string());
        match by.iter_mut().find(|(p, _)| *p == g.profile) {
            Some((_, ids)) => ids.push(id),
            None => by.push((&g.profile, vec![id])),
        }
    }
    by.iter()
        .map(|(p, ids)| {
            format!(
                "{p} {} {}",
                if ids.len() == 1 { "id" } else { "ids" },
                ids.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Clone, Debug, Serialize)]
pub struct TypeRow {
    pub id: String,
    pub name: String,
    pub framebuffer_mib: Option<u64>,
    pub max_instances: Option<u32>,
    pub available: u32,
    /// How many vGPUs of this type the GPU holds now.
    pub in_use: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuTypes {
    pub address: String,
    pub model: String,
    pub interface: String,
    pub types: Vec<TypeRow>,
    /// Why the GPU lists no type, when it lists none (the one cause that applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_types_because: Option<String>,
}

/// Per GPU, the types its parents offer, aggregated: available = how many more fit now.
pub fn types(facts: &HostFacts) -> Vec<GpuTypes> {
    let existing = facts.vgpus();
    facts
        .gpus
        .iter()
        .map(|g| {
            let mut rows: Vec<TypeRow> = Vec::new();
            for p in &g.parents {
                for t in &p.types {
                    let fb = t
                        .description
                        .framebuffer_mib
                        .or_else(|| vgpu_name::parse(&t.name).map(|n| n.framebuffer_mib));
                    let max = t.description.max_instance.or_else(|| {
                        crate::vgpu::select::known_type(g, &t.name).map(|k| k.max_instance)
                    });
                    match rows.iter_mut().find(|r| r.name == t.name) {
                        Some(r) => r.available += t.available,
                        None => rows.push(TypeRow {
                            id: t.id.clone(),
                            name: t.name.clone(),
                            framebuffer_mib: fb,
                            max_instances: max,
                            available: t.available,
                            in_use: 0,
                        }),
                    }
                }
            }
            // Free parents each offer one more, but the per-GPU limit counts what exists.
            for r in &mut rows {
                let present = existing
                    .iter()
                    .filter(|v| v.gpu.as_deref() == Some(g.address.as_str()))
                    .filter(|v| vgpu_name::same(&v.type_name, &r.name))
                    .count() as u32;
                r.in_use = present;
                if let Some(m) = r.max_instances {
                    r.available = r.available.min(m.saturating_sub(present));
                }
            }
            GpuTypes {
                address: g.address.clone(),
                model: g.model.name.clone(),
                interface: g.interface.as_str().to_string(),
                no_types_because: rows.is_empty().then(|| no_types_because(facts, g)),
                types: rows,
            }
        })
        .collect()
}

/// Why a GPU lists no vGPU type: the causes that apply, in the order the host needs them
/// fixed (not a list of what it could be).
fn no_types_because(facts: &HostFacts, g: &crate::facts::Gpu) -> String {
    let d = &facts.driver;
    if !g.model.vgpu_supported {
        let why = g
            .model
            .reason
            .as_deref()
            .unwrap_or("not on NVIDIA's vGPU list");
        return format!("this GPU does not support vGPU: {why}");
    }
    let mut why = Vec::new();
    if g.driver.as_deref() == Some("vfio-pci") {
        why.push("it is bound to vfio-pci (passed through), not to the NVIDIA driver".to_string());
    }
    match (&d.loaded_version, d.installed()) {
        (None, false) => why.push("the vGPU host driver is not installed".into()),
        (None, true) => {
            why.push("the vGPU host driver is installed but not loaded (reboot)".into())
        }
        (Some(v), false) => why.push(format!(
            "the loaded NVIDIA driver {v} is not the vGPU host (vgpu-kvm) driver"
        )),
        (Some(_), true) => {}
    }
    if why.is_empty() && g.sriov_capable() && g.sriov_numvfs.unwrap_or(0) == 0 {
        why.push(format!(
            "SR-IOV is not enabled (0/{} VFs)",
            g.sriov_totalvfs.unwrap_or(0)
        ));
    }
    if why.is_empty() {
        return "the vGPU host driver lists no type for it: see `journalctl -u nvidia-vgpu-mgr`"
            .into();
    }
    format!(
        "{}: `vgpuctl setup` does {}",
        why.join("; "),
        if why.len() == 1 { "it" } else { "each" }
    )
}

/// The types, once per set of GPUs offering the same list (an 8-GPU host's identical tables are
/// one table naming the GPUs), with the types in use marked.
pub fn render_types(all: &[GpuTypes]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // What a GPU's table shows: equal for GPUs whose tables read the same.
    let shown = |g: &GpuTypes| {
        let rows: Vec<_> = g
            .types
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.name.clone(),
                    t.framebuffer_mib,
                    t.max_instances,
                    t.available,
                    t.in_use,
                )
            })
            .collect();
        (
            g.model.clone(),
            g.interface.clone(),
            rows,
            g.no_types_because.clone(),
        )
    };
    let groups = crate::gpu_group::group(all.iter().map(|g| (shown(g), g)));
    for (i, (_, gs)) in groups.iter().enumerate() {
        let g = gs[0];
        let addrs: Vec<String> = gs.iter().map(|g| g.address.clone()).collect();
        let of_model = all.iter().filter(|o| o.model == g.model).count();
        let label = crate::gpu_group::label(&g.model, &addrs, addrs.len() == of_model);
        let mut notes = Vec::new();
        if g.interface != "none" {
            notes.push(g.interface.as_str());
        }
        if gs.len() > 1 && !g.types.is_empty() {
            notes.push("per GPU");
        }
        if i > 0 {
            let _ = writeln!(out);
        }
        if notes.is_empty() {
            let _ = writeln!(out, "{label}");
        } else {
            let _ = writeln!(out, "{label} ({})", notes.join(", "));
        }
        if let Some(why) = &g.no_types_because {
            let _ = writeln!(out, "  no vGPU types: {why}");
            continue;
        }
        use crate::table::Align::{Left as L, Right as R};
        let head = ["ID", "NAME", "FB", "MAX", "AVAILABLE", "IN USE"];
        let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        for t in &g.types {
            rows.push(vec![
                t.id.clone(),
                vgpu_name::short(&t.name).to_string(),
                t.framebuffer_mib
                    .map(|m| format!("{m} MiB"))
                    .unwrap_or_else(|| "?".into()),
                t.max_instances
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "?".into()),
                t.available.to_string(),
                if t.in_use > 0 {
                    format!("* {}", t.in_use)
                } else {
                    String::new()
                },
            ]);
        }
        out.push_str(&crate::table::render(&rows, &[L, L, R, R, R, L]));
    }
    out
}
