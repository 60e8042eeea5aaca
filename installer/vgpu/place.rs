//! Placement: which parent gets which vGPU, computed from facts before anything is written. Pure.

use crate::facts::{Gpu, Interface, Vgpu};
use crate::profile::SavedVgpu;
use crate::vgpu_name;

use super::select::ResolvedType;

/// One vGPU to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    pub gpu: String,
    pub parent: String,
    /// Type directory (mdev) or numeric id (vendor VFIO) on that parent.
    pub type_id: String,
    pub type_name: String,
    pub uuid: String,
    pub interface: Interface,
}

impl Create {
    pub fn saved(&self) -> SavedVgpu {
        SavedVgpu {
            uuid: self.uuid.clone(),
            type_id: self.type_id.clone(),
            type_name: self.type_name.clone(),
            parent: self.parent.clone(),
            gpu: Some(self.gpu.clone()),
            interface: self.interface.as_str().to_string(),
            gi_profile: crate::vgpu::mig::gi_profile_of(&self.type_name).map(String::from),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub create: Vec<Create>,
    /// Already there with the right type: success, pinned as they are.
    pub present: Vec<SavedVgpu>,
    /// Devices of another type, reported and left alone (a VM may hold them).
    pub foreign: Vec<String>,
}

/// The free slots of `gpu` for type `type_name`, as (parent, type id there, interface): a VF
/// holds one vGPU; a pre-Ampere PF holds `available` more. Setup places on them, and restore
/// moves an mdev pin whose parent is gone or taken onto one.
pub fn free_slots(
    gpu: &Gpu,
    existing: &[Vgpu],
    type_name: &str,
) -> Vec<(String, String, Interface)> {
    let occupied: Vec<&str> = existing
        .iter()
        .filter(|v| v.gpu.as_deref() == Some(gpu.address.as_str()))
        .map(|v| v.parent.as_str())
        .collect();
    let mut slots = Vec::new();
    for p in &gpu.parents {
        let Some(t) = p
            .types
            .iter()
            .find(|t| vgpu_name::same(&t.name, type_name) && t.available > 0)
        else {
            continue;
        };
        let is_vf = p.address != gpu.address;
        if is_vf && (occupied.contains(&p.address.as_str()) || p.current_type.is_some()) {
            continue;
        }
        let n = if is_vf { 1 } else { t.available as usize };
        for _ in 0..n {
            slots.push((p.address.clone(), t.id.clone(), p.interface));
        }
    }
    slots
}

/// Place `count` vGPUs of type `ty` on `gpu`. `existing` are the host's vGPUs; `pinned` the active
/// profile's pins (their UUIDs are reused so a re-run recreates the same devices); `uuids` the
/// profile's fixed UUIDs, used first and in order; `fresh` makes new UUIDs.
pub fn place(
    gpu: &Gpu,
    existing: &[Vgpu],
    ty: &ResolvedType,
    count: u32,
    uuids: &[String],
    pinned: &[SavedVgpu],
    fresh: &mut dyn FnMut() -> String,
) -> Result<Placement, String> {
    let mut out = Placement::default();
    let on_gpu: Vec<&Vgpu> = existing
        .iter()
        .filter(|v| v.gpu.as_deref() == Some(gpu.address.as_str()))
        .collect();
    let (mut same, other): (Vec<&Vgpu>, Vec<&Vgpu>) = on_gpu
        .iter()
        .partition(|v| vgpu_name::same(&v.type_name, &ty.name));
    // With more devices than `count`, those kept are the ones a VM uses, then the pinned ones
    // (a stable sort: otherwise sysfs order).
    let is_pinned = |v: &Vgpu| {
        pinned.iter().any(|p| match &v.uuid {
            Some(u) => p.uuid == *u,
            None => p.parent == v.parent,
        })
    };
    same.sort_by_key(|v| (!v.in_use, !is_pinned(v)));
    for v in &other {
        out.foreign.push(format!(
            "{} on {} has type {} (not {}): left alone",
            v.uuid.as_deref().unwrap_or("vGPU"),
            v.parent,
            v.type_name,
            ty.name
        ));
    }
    // An explicit UUID that exists with another type is a conflict the operator must resolve.
    for u in uuids {
        if let Some(v) = other.iter().find(|v| v.uuid.as_deref() == Some(u.as_str())) {
            return Err(format!(
                "vGPU {u} already exists on {} with type {}, not {}; it is left alone (remove it \
                 yourself if no VM uses it)",
                v.parent, v.type_name, ty.name
            ));
        }
    }
    // Existing devices of the right type count toward `count`. A vendor-VFIO device has no UUID
    // in the kernel: its name is the pin for that VF, if any.
    let mut taken_uuids: Vec<String> = Vec::new();
    for v in same.iter().take(count as usize) {
        let uuid = v
            .uuid
            .clone()
            .or_else(|| {
                pinned
                    .iter()
                    .find(|p| p.parent == v.parent)
                    .map(|p| p.uuid.clone())
            })
            .unwrap_or_else(&mut *fresh);
        taken_uuids.push(uuid.clone());
        out.present.push(SavedVgpu {
            uuid,
            type_id: v.type_id.clone(),
            type_name: v.type_name.clone(),
            parent: v.parent.clone(),
            gpu: Some(gpu.address.clone()),
            interface: v.interface.as_str().to_string(),
            gi_profile: crate::vgpu::mig::gi_profile_of(&v.type_name).map(String::from),
        });
    }
    let needed = (count as usize).saturating_sub(out.present.len());
    if needed == 0 {
        return Ok(out);
    }

    let slots = free_slots(gpu, existing, &ty.name);
    // The type's per-GPU maximum bounds how many fit, not which slots: a pinned vGPU's own VF
    // may come after the first `room` free ones (an exported profile's [[vgpus]] on a mixed
    // GPU, whose other types' VFs are interleaved).
    let room = ty
        .max_instance
        .map_or(usize::MAX, |max| (max as usize).saturating_sub(same.len()));
    let fit = slots.len().min(room);
    if fit < needed {
        let why = if !other.is_empty() {
            format!(
                " (in NVIDIA's default equal-size mode a GPU holds one type at a time and it already has {})",
                other[0].type_name
            )
        } else {
            ty.max_instance
                .map(|m| {
                    format!(
                        " ({} allows at most {m} per GPU)",
                        vgpu_name::short(&ty.name)
                    )
                })
                .unwrap_or_default()
        };
        return Err(format!(
            "{} {} cannot take {needed} more {} vGPU(s): only {fit} fit{why}",
            gpu.model.name,
            gpu.address,
            vgpu_name::short(&ty.name),
        ));
    }
    // UUIDs: the profile's fixed ones first, then pins of this GPU and type not present, then new.
    let mut reuse = uuids
        .iter()
        .cloned()
        .chain(
            pinned
                .iter()
                .filter(|p| {
                    p.gpu.as_deref() == Some(gpu.address.as_str())
                        && vgpu_name::same(&p.type_name, &ty.name)
                })
                .map(|p| p.uuid.clone()),
        )
        .filter(|u| !taken_uuids.contains(u))
        .collect::<Vec<_>>()
        .into_iter();
    let mut used = taken_uuids;
    let mut wanted: Vec<String> = Vec::new();
    for _ in 0..needed {
        let uuid = loop {
            match reuse.next() {
                Some(u) if used.contains(&u) => continue,
                Some(u) => break u,
                None => break fresh(),
            }
        };
        used.push(uuid.clone());
        wanted.push(uuid);
    }
    for (slot, uuid) in assign_slots(&slots, &wanted, pinned, &gpu.address) {
        let (parent, type_id, interface) = slots[slot].clone();
        out.create.push(Create {
            gpu: gpu.address.clone(),
            parent,
            type_id,
            type_name: ty.name.clone(),
            uuid,
            interface,
        });
    }
    Ok(out)
}

/// Which free slot each UUID takes, in slot order: a UUID pinned on a parent that is free goes
/// back on it (on vendor-specific VFIO the VF is the vGPU's identity, the address a VM's XML
/// names), the others take the remaining slots in order.
fn assign_slots(
    slots: &[(String, String, Interface)],
    uuids: &[String],
    pinned: &[SavedVgpu],
    gpu: &str,
) -> Vec<(usize, String)> {
    let mut taken = vec![false; slots.len()];
    let mut placed: Vec<(usize, String)> = Vec::new();
    let mut rest: Vec<&String> = Vec::new();
    for u in uuids {
        let home = pinned
            .iter()
            .find(|p| p.uuid == *u && p.gpu.as_deref().is_none_or(|g| g == gpu))
            .and_then(|p| (0..slots.len()).find(|&i| !taken[i] && slots[i].0 == p.parent));
        match home {
            Some(i) => {
                taken[i] = true;
                placed.push((i, u.clone()));
            }
            None => rest.push(u),
        }
    }
    let mut free = (0..slots.len()).filter(|&i| !taken[i]);
    for u in rest {
        if let Some(i) = free.next() {
            placed.push((i, u.clone()));
        }
    }
    placed.sort_by_key(|(i, _)| *i);
    placed
}
