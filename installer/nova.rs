//! OpenStack Nova: the `nova.conf` fragment that hands this host's pinned vGPUs to nova-compute.
//! Pure: [`render`] is a function of the pins and the VFs' PCI ids.
//!
//! - **mdev** (Nova's native vGPU support, libvirt driver): `[devices] enabled_mdev_types` lists
//!   the pinned types' ids, and one `[mdev_<type>] device_addresses` group per type lists the
//!   mdev parents (on SR-IOV GPUs, the VFs) that hold them. Nova refuses a parent listed under two
//!   types (`InvalidLibvirtMdevConfig: duplicate types for PCI ID`, in its libvirt driver's
//!   `_get_supported_vgpu_types`), so a parent holding several types (mixed-size mode on a GPU
//!   without SR-IOV) is listed under its first type and named in a comment. Nova takes the
//!   existing, unassigned mdevs before creating its own, so the vGPUs vgpuctl restores at boot
//!   are the ones Nova hands out.
//! - **vendor-specific VFIO** (no mdev: Nova's vGPU code cannot see these vGPUs): the VFs holding
//!   them are given as PCI devices, as CubeCOS generates them (bigstack-oss/cubecos PR 1141 and
//!   PR 1338: one Nova PCI drop-in, one alias per vGPU type): a `[pci] device_spec` per VF with
//!   its address and vendor/product ids, `managed = no` (the VF stays bound to `nvidia`, which
//!   is the VFIO provider: libvirt must not rebind it), and a `resource_class` naming the type;
//!   one `alias` per type (`device_type = type-VF`) with the same ids and resource class.
//!   Every VF of a GPU model has the same product id, so only Nova's PCI-in-Placement mode tells
//!   the types apart (by resource class); the fragment says so, and which GPUs Placement would
//!   refuse (all VFs of one PF must share a resource class:
//!   `PlacementPciMixedResourceClassException` in nova/compute/pci_placement_translator.py).

use std::collections::BTreeMap;

use crate::facts::gpus::PciIds;
use crate::pins::Pins;
use crate::vgpu_name;

/// The header every fragment starts with.
const HEADER: &str = "# vGPUs of this host for OpenStack Nova, written by vgpuctl from its pins\n\
     # (/etc/vgpuctl/vgpus.toml). nova-compute reads it from /etc/nova/nova.conf.d/; restart\n\
     # nova-compute after a change.\n";

/// The Placement resource class for a vGPU type on the vendor-specific VFIO interface:
/// `CUSTOM_NVIDIA_L40S_12Q` (Placement's custom classes are `CUSTOM_[A-Z0-9_]+`).
pub fn resource_class(type_name: &str) -> String {
    let short = vgpu_name::short(type_name);
    let body: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CUSTOM_NVIDIA_{body}")
}

/// The PCI alias a flavor asks for (`pci_passthrough:alias=nvidia-l40s-12q:1`).
pub fn alias_name(type_name: &str) -> String {
    let short = vgpu_name::short(type_name);
    let body: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("nvidia-{body}")
}

/// One JSON object on one line, keys in the given order (oslo.config reads a value to the end of
/// its line).
fn json_line(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}: {}",
                serde_json::Value::from(*k),
                serde_json::Value::from(*v)
            )
        })
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// The fragment for `pins` (`export --nova`). `ids`: the PCI ids of each vendor-VFIO VF (by
/// address); a VF missing from it is an error naming it (its product id cannot be guessed).
/// `Err` also when nothing is pinned.
pub fn render(pins: &Pins, ids: &BTreeMap<String, PciIds>) -> Result<String, String> {
    match fragment(pins, ids)? {
        (text, true) => Ok(text),
        (_, false) => Err(
            "no pinned vGPUs on NVIDIA GPUs (/etc/vgpuctl/vgpus.toml): nothing for Nova; run \
             `vgpuctl setup` first"
                .into(),
        ),
    }
}

/// The fragment and whether it gives Nova any vGPU: with nothing pinned it is the header and a
/// line saying so, which is what the `[nova]` file must hold then (no stale vGPUs).
pub fn fragment(pins: &Pins, ids: &BTreeMap<String, PciIds>) -> Result<(String, bool), String> {
    let mut out = String::from(HEADER);
    let mdev = render_mdev(pins);
    let pci = render_pci(pins, ids)?;
    let any = mdev.is_some() || pci.is_some();
    if !any {
        out.push_str("# No vGPUs are pinned on this host.\n");
    }
    for part in [mdev, pci].into_iter().flatten() {
        out.push('\n');
        out.push_str(&part);
    }
    Ok((out, any))
}

fn render_mdev(pins: &Pins) -> Option<String> {
    // type id -> (type name, parents), in the order the pins list them.
    let mut types: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut shared: Vec<String> = Vec::new();
    for v in pins.vgpus.iter().filter(|v| v.interface == "mdev") {
        // Non-PCI parents (mtty) are not NVIDIA GPUs.
        if crate::pci::PciAddr::parse(&v.parent).is_err() {
            continue;
        }
        let at = match types.iter().position(|(id, _, _)| *id == v.type_id) {
            Some(i) => i,
            None => {
                types.push((v.type_id.clone(), v.type_name.clone(), Vec::new()));
                types.len() - 1
            }
        };
        match owner.get(&v.parent) {
            Some(t) if *t != v.type_id => {
                if !shared.contains(&v.parent) {
                    shared.push(v.parent.clone());
                }
            }
            Some(_) => {}
            None => {
                owner.insert(v.parent.clone(), v.type_id.clone());
                types[at].2.push(v.parent.clone());
            }
        }
    }
    // A type whose every parent went to another type has no group of its own.
    types.retain(|(_, _, parents)| !parents.is_empty());
    if types.is_empty() {
        return None;
    }
    let mut out = String::from("[devices]\n");
    let ids: Vec<&str> = types.iter().map(|(id, _, _)| id.as_str()).collect();
    out.push_str(&format!("enabled_mdev_types = {}\n", ids.join(", ")));
    for (id, name, mut parents) in types {
        parents.sort();
        out.push_str(&format!(
            "\n# {}: {} parent(s)\n[mdev_{id}]\ndevice_addresses = {}\n",
            vgpu_name::short(&name),
            parents.len(),
            parents.join(",")
        ));
    }
    if !shared.is_empty() {
        out.push_str(&format!(
            "\n# {} hold vGPUs of several types; Nova takes one type per parent, so each is \
             listed under its first type only.\n",
            shared.join(", ")
        ));
    }
    Some(out)
}

fn render_pci(pins: &Pins, ids: &BTreeMap<String, PciIds>) -> Result<Option<String>, String> {
    let vfs: Vec<_> = pins
        .vgpus
        .iter()
        .filter(|v| v.interface == "vendor-vfio")
        .collect();
    if vfs.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::new();
    // alias name -> (type name, vendor, product, resource class)
    let mut aliases: Vec<(String, String, String, String)> = Vec::new();
    // PF -> resource classes of its VFs (Placement wants one per PF).
    let mut per_pf: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sorted = vfs.clone();
    sorted.sort_by(|a, b| a.parent.cmp(&b.parent));
    for v in sorted {
        let Some(id) = ids.get(&v.parent) else {
            return Err(format!(
                "the VF {} holding vGPU {} is not on this host's PCI bus: its product id is \
                 unknown (run `vgpuctl restore` first)",
                v.parent, v.uuid
            ));
        };
        let vendor = format!("{:04x}", id.vendor);
        let product = format!("{:04x}", id.device);
        let rc = resource_class(&v.type_name);
        specs.push(json_line(&[
            ("address", &v.parent),
            ("vendor_id", &vendor),
            ("product_id", &product),
            ("managed", "no"),
            ("resource_class", &rc),
        ]));
        let name = alias_name(&v.type_name);
        if !aliases.iter().any(|a| a.0 == name) {
            aliases.push((name, v.type_name.clone(), vendor, product));
        }
        let pf = v.gpu.clone().unwrap_or_else(|| v.parent.clone());
        let list = per_pf.entry(pf).or_default();
        if !list.contains(&rc) {
            list.push(rc);
        }
    }
    let mut out = String::from(
        "# vGPUs on NVIDIA's vendor-specific VFIO interface have no mdev: each VF holding one is\n\
         # a PCI device for Nova (managed = no: it stays bound to nvidia, its VFIO provider).\n\
         # A flavor asks for one with pci_passthrough:alias=<alias>:1. All VFs of a GPU model\n\
         # share a product id: only PCI in Placement ([pci] report_in_placement = true here,\n\
         # [filter_scheduler] pci_in_placement = true on the controllers) tells types apart, by\n\
         # resource class.\n",
    );
    let mixed: Vec<&String> = per_pf
        .iter()
        .filter(|(_, rcs)| rcs.len() > 1)
        .map(|(pf, _)| pf)
        .collect();
    if !mixed.is_empty() {
        out.push_str(&format!(
            "# GPU(s) {} hold vGPUs of several types: Placement refuses VFs of one PF with \
             different resource classes, so keep PCI in Placement off for this host.\n",
            mixed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("[pci]\n");
    for s in specs {
        out.push_str(&format!("device_spec = {s}\n"));
    }
    for (name, type_name, vendor, product) in aliases {
        let rc = resource_class(&type_name);
        out.push_str(&format!(
            "alias = {}\n",
            json_line(&[
                ("name", &name),
                ("device_type", "type-VF"),
                ("vendor_id", &vendor),
                ("product_id", &product),
                ("resource_class", &rc),
            ])
        ));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::SavedVgpu;

    fn pin(parent: &str, gpu: &str, id: &str, name: &str, iface: &str) -> SavedVgpu {
        SavedVgpu {
            uuid: uuid::Uuid::new_v4().to_string(),
            type_id: id.into(),
            type_name: name.into(),
            parent: parent.into(),
            gpu: Some(gpu.into()),
            interface: iface.into(),
            gi_profile: None,
        }
    }

    fn pins(v: Vec<SavedVgpu>) -> Pins {
        Pins {
            vgpus: v,
            ..Pins::default()
        }
    }

    #[test]
    fn names() {
        assert_eq!(resource_class("NVIDIA L40S-12Q"), "CUSTOM_NVIDIA_L40S_12Q");
        assert_eq!(
            resource_class("NVIDIA RTX Pro 6000 Blackwell DC-3Q"),
            "CUSTOM_NVIDIA_RTX_PRO_6000_BLACKWELL_DC_3Q"
        );
        assert_eq!(alias_name("GRID P100-2B4"), "nvidia-p100-2b4");
    }

    #[test]
    fn mdev_groups_per_type_sorted_and_shared_parents_once() {
        let p = pins(vec![
            pin(
                "0000:e8:04.0",
                "0000:e8:00.0",
                "nvidia-565",
                "NVIDIA A40-24Q",
                "mdev",
            ),
            pin(
                "0000:e8:00.4",
                "0000:e8:00.0",
                "nvidia-565",
                "NVIDIA A40-24Q",
                "mdev",
            ),
            pin(
                "0000:3b:00.0",
                "0000:3b:00.0",
                "nvidia-222",
                "NVIDIA T4-1B",
                "mdev",
            ),
            pin(
                "0000:3b:00.0",
                "0000:3b:00.0",
                "nvidia-230",
                "NVIDIA T4-2Q",
                "mdev",
            ),
            pin("mtty", "mtty", "mtty-1", "mtty", "mdev"),
        ]);
        let t = render(&p, &BTreeMap::new()).unwrap();
        assert!(
            t.contains("enabled_mdev_types = nvidia-565, nvidia-222\n"),
            "{t}"
        );
        assert!(
            t.contains("[mdev_nvidia-565]\ndevice_addresses = 0000:e8:00.4,0000:e8:04.0\n"),
            "{t}"
        );
        assert!(t.contains("[mdev_nvidia-222]\ndevice_addresses = 0000:3b:00.0\n"));
        assert!(!t.contains("nvidia-230"), "{t}");
        assert!(
            t.contains("# 0000:3b:00.0 hold vGPUs of several types"),
            "{t}"
        );
        assert!(!t.contains("[pci]"));
    }

    #[test]
    fn vendor_vfio_needs_the_vf_ids() {
        let p = pins(vec![pin(
            "0000:41:00.4",
            "0000:41:00.0",
            "1155",
            "NVIDIA L40S-12Q",
            "vendor-vfio",
        )]);
        let e = render(&p, &BTreeMap::new()).unwrap_err();
        assert!(e.contains("0000:41:00.4"), "{e}");
        let ids = BTreeMap::from([(
            "0000:41:00.4".to_string(),
            PciIds {
                vendor: 0x10de,
                device: 0x26b9,
                subsystem: None,
                iommu_group: None,
            },
        )]);
        let t = render(&p, &ids).unwrap();
        assert!(t.contains("device_spec = {\"address\": \"0000:41:00.4\", \"vendor_id\": \"10de\", \"product_id\": \"26b9\", \"managed\": \"no\", \"resource_class\": \"CUSTOM_NVIDIA_L40S_12Q\"}\n"), "{t}");
        assert!(
            t.contains("alias = {\"name\": \"nvidia-l40s-12q\", \"device_type\": \"type-VF\""),
            "{t}"
        );
        assert!(render(&Pins::default(), &ids).is_err());
        assert!(fragment(&Pins::default(), &ids)
            .unwrap()
            .0
            .contains("No vGPUs are pinned"));
    }

    #[test]
    fn a_gpu_mixing_types_is_named_for_placement() {
        let id = PciIds {
            vendor: 0x10de,
            device: 0x26b9,
            subsystem: None,
            iommu_group: None,
        };
        let p = pins(vec![
            pin(
                "0000:41:00.4",
                "0000:41:00.0",
                "1155",
                "NVIDIA L40S-12Q",
                "vendor-vfio",
            ),
            pin(
                "0000:41:00.5",
                "0000:41:00.0",
                "1157",
                "NVIDIA L40S-24Q",
                "vendor-vfio",
            ),
            pin(
                "0000:81:00.4",
                "0000:81:00.0",
                "1155",
                "NVIDIA L40S-12Q",
                "vendor-vfio",
            ),
        ]);
        let ids = p
            .vgpus
            .iter()
            .map(|v| (v.parent.clone(), id.clone()))
            .collect();
        let t = render(&p, &ids).unwrap();
        assert_eq!(t.matches("alias = ").count(), 2, "{t}");
        assert_eq!(t.matches("device_spec = ").count(), 3, "{t}");
        assert!(
            t.contains("# GPU(s) 0000:41:00.0 hold vGPUs of several types"),
            "{t}"
        );
    }
}
