//! KubeVirt: the `permittedHostDevices` block of the KubeVirt CR for this host's pinned vGPUs.
//! Pure: [`render`] is a function of the pins and the VFs' PCI ids.
//!
//! The field names are those of KubeVirt's API types (`PermittedHostDevices`, `PciHostDevice`,
//! `MediatedHostDevice` in kubevirt/kubevirt `staging/src/kubevirt.io/api/core/v1/types.go`):
//! - mdev: one `mediatedDevices` entry per pinned type, `mdevNameSelector` being the type's name
//!   as the kernel lists it (the type's `name` file, which KubeVirt matches) and `resourceName`
//!   the name VMs request (`nvidia.com/NVIDIA_A40-24Q`, spaces made `_` as in KubeVirt's docs);
//! - vendor-specific VFIO: the VFs are PCI devices (KubeVirt 1.9 advertises VFs bound to
//!   `nvidia` whose `current_vgpu_type` is set, kubevirt/kubevirt PR 16890), selected by
//!   `pciVendorSelector` `VENDOR:DEVICE`. Every VF of a GPU model has the same ids, so one entry
//!   per product; when its VFs hold several types KubeVirt cannot tell them apart, and the block
//!   says so instead of naming one type.
//!
//! The block is a merge patch (`kubectl patch kubevirt kubevirt -n kubevirt --type merge
//! --patch-file FILE`): a merge patch replaces lists whole, so devices permitted for other hosts
//! must be merged in by hand.

use std::collections::BTreeMap;

use crate::facts::gpus::PciIds;
use crate::pins::Pins;
use crate::vgpu_name;

/// A resource name for a type or product: `nvidia.com/` and the name with spaces as `_`.
pub fn resource_name(name: &str) -> String {
    let body: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("nvidia.com/{body}")
}

/// A YAML double-quoted scalar (type names hold spaces; a name is never left to YAML's typing).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub fn render(pins: &Pins, ids: &BTreeMap<String, PciIds>) -> Result<String, String> {
    let mut mdev: Vec<String> = Vec::new();
    // (vendor, device) -> the type names its VFs hold
    let mut pci: BTreeMap<(u16, u16), Vec<String>> = BTreeMap::new();
    for v in &pins.vgpus {
        match v.interface.as_str() {
            "mdev"
                if crate::pci::PciAddr::parse(&v.parent).is_ok()
                    && !mdev.iter().any(|t| vgpu_name::same(t, &v.type_name)) =>
            {
                mdev.push(v.type_name.clone());
            }
            "vendor-vfio" => {
                let Some(id) = ids.get(&v.parent) else {
                    return Err(format!(
                        "the VF {} holding vGPU {} is not on this host's PCI bus: its ids are \
                         unknown (run `vgpuctl restore` first)",
                        v.parent, v.uuid
                    ));
                };
                let types = pci.entry((id.vendor, id.device)).or_default();
                if !types.iter().any(|t| vgpu_name::same(t, &v.type_name)) {
                    types.push(v.type_name.clone());
                }
            }
            _ => {}
        }
    }
    if mdev.is_empty() && pci.is_empty() {
        return Err(
            "no pinned vGPUs on NVIDIA GPUs (/etc/vgpuctl/vgpus.toml): nothing for KubeVirt; \
             run `vgpuctl setup` first"
                .into(),
        );
    }
    let mut out = String::from(
        "# vGPUs of this host for KubeVirt, written by vgpuctl from its pins\n\
         # (/etc/vgpuctl/vgpus.toml). Apply with\n\
         #   kubectl patch kubevirt kubevirt -n kubevirt --type merge --patch-file FILE\n\
         # (a merge patch replaces these lists whole: merge in other hosts' devices first).\n\
         # vgpuctl creates the vGPUs at every boot: leave mediatedDevicesConfiguration unset,\n\
         # so virt-handler does not create or remove mdevs of its own.\n\
         spec:\n  configuration:\n    permittedHostDevices:\n",
    );
    if !mdev.is_empty() {
        out.push_str("      mediatedDevices:\n");
        for t in &mdev {
            out.push_str(&format!(
                "      - mdevNameSelector: {}\n        resourceName: {}\n",
                quoted(t.trim()),
                quoted(&resource_name(t))
            ));
        }
    }
    if !pci.is_empty() {
        out.push_str("      pciHostDevices:\n");
        for ((vendor, device), types) in &pci {
            let name = if types.len() == 1 {
                resource_name(&types[0])
            } else {
                out.push_str(&format!(
                    "      # VFs of {vendor:04X}:{device:04X} hold {}: KubeVirt selects by vendor and \
                     device only, so one resource stands for all of them\n",
                    types
                        .iter()
                        .map(|t| vgpu_name::short(t))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                resource_name(&format!("VGPU_{vendor:04X}_{device:04X}"))
            };
            out.push_str(&format!(
                "      - pciVendorSelector: {}\n        resourceName: {}\n",
                quoted(&format!("{vendor:04X}:{device:04X}")),
                quoted(&name)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::SavedVgpu;

    fn pin(parent: &str, name: &str, iface: &str) -> SavedVgpu {
        SavedVgpu {
            uuid: uuid::Uuid::new_v4().to_string(),
            type_id: "x".into(),
            type_name: name.into(),
            parent: parent.into(),
            gpu: None,
            interface: iface.into(),
            gi_profile: None,
        }
    }

    #[test]
    fn one_entry_per_type_or_product() {
        let ids = PciIds {
            vendor: 0x10de,
            device: 0x26b9,
            subsystem: None,
            iommu_group: None,
        };
        let ids = BTreeMap::from([
            ("0000:41:00.4".to_string(), ids.clone()),
            ("0000:41:00.5".to_string(), ids),
        ]);
        let p = Pins {
            vgpus: vec![
                pin("0000:e8:00.4", "NVIDIA A40-24Q", "mdev"),
                pin("0000:e8:00.5", "NVIDIA A40-24Q", "mdev"),
                pin("0000:41:00.4", "NVIDIA L40S-12Q", "vendor-vfio"),
            ],
            ..Pins::default()
        };
        let t = render(&p, &ids).unwrap();
        assert_eq!(t.matches("mdevNameSelector").count(), 1, "{t}");
        assert!(t.contains("- mdevNameSelector: \"NVIDIA A40-24Q\"\n        resourceName: \"nvidia.com/NVIDIA_A40-24Q\"\n"), "{t}");
        assert!(t.contains("- pciVendorSelector: \"10DE:26B9\"\n        resourceName: \"nvidia.com/NVIDIA_L40S-12Q\"\n"), "{t}");
        let mut p2 = p.clone();
        p2.vgpus
            .push(pin("0000:41:00.5", "NVIDIA L40S-24Q", "vendor-vfio"));
        let t = render(&p2, &ids).unwrap();
        assert!(t.contains("nvidia.com/VGPU_10DE_26B9"), "{t}");
        assert!(t.contains("hold L40S-12Q, L40S-24Q"), "{t}");
        assert!(render(&Pins::default(), &ids).is_err());
    }
}
