//! A change of type (issue 17 item 3): the profile asks a GPU for another vGPU type than the one
//! vgpuctl pinned there. The pinned vGPUs of a type no entry asks for any more are removed, each
//! one named, under the same consent as a lowered count; the new ones are planned once they are
//! gone (a GPU offers a type only when its room is free). Pure: facts in, removals out.

use super::plan::Unpin;
use crate::facts::{Interface, Vgpu};
use crate::profile::SavedVgpu;
use crate::vgpu_name;

/// Is `pin` the pin of live vGPU `v`? An mdev device by UUID; a vendor-VFIO device by its VF.
pub fn pins_it(pin: &SavedVgpu, v: &Vgpu) -> bool {
    match (&v.uuid, v.interface) {
        (Some(u), Interface::Mdev) => pin.uuid == *u,
        _ => pin.parent == v.parent,
    }
}

/// The live vGPUs on GPU (PF address) `gpu` that a change of type removes: pinned on this GPU, of a type none of
/// `asked` names. `mixed`: the GPU runs several types, so an unpinned vGPU of another type stays
/// beside the new ones; in equal-size mode it would block them, so nothing is planned here and the
/// planner's "already holds vGPUs of another type" refusal applies. A removal a VM's vGPU would
/// need is an error naming that vGPU: it is never touched.
pub fn removals(
    gpu: &str,
    existing: &[Vgpu],
    pins: &[SavedVgpu],
    asked: &[String],
    mixed: bool,
) -> Result<Vec<Unpin>, String> {
    let stale: Vec<&Vgpu> = existing
        .iter()
        .filter(|v| v.gpu.as_deref() == Some(gpu))
        .filter(|v| !asked.iter().any(|a| vgpu_name::same(&v.type_name, a)))
        .collect();
    let pin_of = |v: &Vgpu| {
        pins.iter()
            .find(|p| p.gpu.as_deref() == Some(gpu) && pins_it(p, v))
    };
    if !mixed && stale.iter().any(|v| pin_of(v).is_none()) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for v in stale {
        let Some(pin) = pin_of(v) else { continue };
        if v.in_use {
            return Err(format!(
                "this change of type would remove vGPU {} ({} on {}), which a VM is using (its \
                 VFIO group or iommufd device is open); it is left alone: stop that VM first, or \
                 keep its type in the profile",
                pin.uuid, v.type_name, v.parent
            ));
        }
        out.push(Unpin {
            uuid: Some(pin.uuid.clone()),
            type_name: v.type_name.clone(),
            parent: v.parent.clone(),
            gpu: gpu.to_string(),
            interface: v.interface,
            live: true,
            pinned: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: &str = "0000:67:00.0";

    fn live(uuid: &str, parent: &str, ty: &str, in_use: bool) -> Vgpu {
        Vgpu {
            uuid: Some(uuid.into()),
            parent: parent.into(),
            gpu: Some("0000:67:00.0".into()),
            type_id: "nvidia-565".into(),
            type_name: ty.into(),
            interface: Interface::Mdev,
            in_use,
        }
    }

    fn pin(uuid: &str, parent: &str, ty: &str) -> SavedVgpu {
        SavedVgpu {
            uuid: uuid.into(),
            type_id: "nvidia-565".into(),
            type_name: ty.into(),
            parent: parent.into(),
            gpu: Some(GPU.into()),
            interface: "mdev".into(),
            gi_profile: None,
        }
    }

    const A: &str = "5cb690ec-06a4-4c43-81f5-5c5cf9fd16c9";
    const B: &str = "a2aba691-b957-4706-9a72-9121f1c5cd11";

    #[test]
    fn only_the_pinned_vgpus_of_a_type_no_longer_asked_are_removed() {
        let existing = [
            live(A, "0000:67:00.4", "NVIDIA A40-24Q", false),
            live(B, "0000:67:00.5", "NVIDIA A40-12Q", false),
        ];
        let pins = [
            pin(A, "0000:67:00.4", "NVIDIA A40-24Q"),
            pin(B, "0000:67:00.5", "NVIDIA A40-12Q"),
        ];
        let r = removals(GPU, &existing, &pins, &["NVIDIA A40-12Q".into()], true).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].uuid.as_deref(), Some(A));
    }

    #[test]
    fn a_vgpu_in_use_is_an_error_naming_it() {
        let existing = [live(A, "0000:67:00.4", "NVIDIA A40-24Q", true)];
        let pins = [pin(A, "0000:67:00.4", "NVIDIA A40-24Q")];
        let e = removals(GPU, &existing, &pins, &["NVIDIA A40-12Q".into()], false).unwrap_err();
        assert!(e.contains(A) && e.contains("a VM is using"), "{e}");
    }

    #[test]
    fn an_unpinned_vgpu_of_another_type_is_never_removed() {
        let existing = [
            live(A, "0000:67:00.4", "NVIDIA A40-24Q", false),
            live(B, "0000:67:00.5", "NVIDIA A40-24Q", false),
        ];
        let pins = [pin(A, "0000:67:00.4", "NVIDIA A40-24Q")];
        let asked = ["NVIDIA A40-12Q".to_string()];
        // Equal-size: the foreign one would block the new type, so no removal is planned at all.
        assert!(removals(GPU, &existing, &pins, &asked, false)
            .unwrap()
            .is_empty());
        // Mixed-size: ours goes, the foreign one stays.
        let r = removals(GPU, &existing, &pins, &asked, true).unwrap();
        assert_eq!(
            r.iter()
                .filter_map(|u| u.uuid.as_deref())
                .collect::<Vec<_>>(),
            [A]
        );
    }
}
