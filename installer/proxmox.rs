//! Proxmox VE: PCI resource mappings (`/etc/pve/mapping/pci.cfg`) for this host's GPUs, so VMs
//! take a vGPU with `hostpciN: mapping=<id>,mdev=<type>`. Pure: [`render`] is a function of the
//! GPUs' functions and their ids.
//!
//! Proxmox creates a VM's vGPU itself when the VM starts (qemu-server: an mdev on the mdev
//! interface, a `current_vgpu_type` write on the vendor-specific VFIO one), so a mapping lists
//! the functions it may create them on: a GPU's VFs (or, without SR-IOV, the GPU itself), less
//! the VFs holding a vGPU vgpuctl pins (restored at every boot: Proxmox must not take those), and
//! `mdev 1` so the mapping is offered with a type.
//!
//! The format is `PVE::Mapping::PCI` (proxmox/pve-guest-common `src/PVE/Mapping/PCI.pm`), a
//! `PVE::SectionConfig` without type prefix: a line with the mapping id (`pve-configid`:
//! `[a-z][a-z0-9_-]+`), then tab-indented `key value` lines; each `map` is a property string
//! with `node`, `path`, `id` (`vendor:device`), `subsystem-id` and `iommugroup`, which Proxmox
//! compares with the device at VM start (`assert_valid`), so they are the function's own ids.
//! Several `map` lines for one node list alternatives: Proxmox takes a free one.

use std::collections::BTreeSet;

use crate::facts::gpus::PciIds;

/// One GPU's functions Proxmox may create vGPUs on.
#[derive(Clone, Debug)]
pub struct GpuFunctions {
    /// The PF, `0000:01:00.0`.
    pub pf: String,
    /// "L4".
    pub model: String,
    /// Whether the GPU's vGPUs live on VFs (SR-IOV): then the PF itself is never mapped.
    pub sriov: bool,
    /// VFs (or the PF, without SR-IOV) with their ids, in PCI order.
    pub functions: Vec<(String, PciIds)>,
}

/// The mapping id of a GPU: `vgpu-l4-0000-01-00-0` (a `pve-configid`).
pub fn mapping_id(model: &str, pf: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut id = format!("vgpu-{}-{}", clean(model), clean(pf));
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    id
}

/// The node name Proxmox uses (`PVE::INotify::nodename`: the host name up to its first dot).
pub fn node_name(hostname: &str) -> Option<String> {
    let n = hostname.trim().split('.').next()?.to_string();
    (!n.is_empty()).then_some(n)
}

/// `pci.cfg` entries for `gpus` on node `node`; `pinned`: the parents of vgpuctl's pinned vGPUs.
/// `Err` when no GPU has a function left to map, saying why.
pub fn render(
    node: &str,
    gpus: &[GpuFunctions],
    pinned: &BTreeSet<String>,
) -> Result<String, String> {
    let mut sections = Vec::new();
    let mut why = Vec::new();
    for g in gpus {
        // A pinned vGPU's VF is vgpuctl's; a PF without SR-IOV holds many vGPUs and is shared.
        let free: Vec<&(String, PciIds)> = g
            .functions
            .iter()
            .filter(|(a, _)| !(g.sriov && pinned.contains(a)))
            .collect();
        if free.is_empty() {
            why.push(if g.functions.is_empty() {
                format!(
                    "{} {}: no virtual functions are enabled (run `vgpuctl setup`)",
                    g.model, g.pf
                )
            } else {
                format!("{} {}: every VF holds a vGPU vgpuctl pins", g.model, g.pf)
            });
            continue;
        }
        let mut s = format!("{}\n", mapping_id(&g.model, &g.pf));
        for (addr, ids) in free {
            let mut props = vec![format!("id={:04x}:{:04x}", ids.vendor, ids.device)];
            if let Some(group) = &ids.iommu_group {
                props.push(format!("iommugroup={group}"));
            }
            props.push(format!("node={node}"));
            props.push(format!("path={addr}"));
            if let Some((v, d)) = ids.subsystem {
                props.push(format!("subsystem-id={v:04x}:{d:04x}"));
            }
            s.push_str(&format!("\tmap {}\n", props.join(",")));
        }
        s.push_str("\tmdev 1\n");
        sections.push(s);
    }
    if sections.is_empty() {
        return Err(if why.is_empty() {
            "no NVIDIA GPU on this host: nothing for Proxmox".to_string()
        } else {
            format!("nothing for Proxmox to map: {}", why.join("; "))
        });
    }
    Ok(sections.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(group: &str) -> PciIds {
        PciIds {
            vendor: 0x10de,
            device: 0x27b8,
            subsystem: Some((0x10de, 0x16ca)),
            iommu_group: Some(group.into()),
        }
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(mapping_id("L4", "0000:01:00.0"), "vgpu-l4-0000-01-00-0");
        assert_eq!(
            mapping_id("RTX Pro 6000 Blackwell DC", "0001:04:00.0"),
            "vgpu-rtx-pro-6000-blackwell-dc-0001-04-00-0"
        );
        assert_eq!(node_name("pve1.example.com\n").as_deref(), Some("pve1"));
        assert_eq!(node_name(" \n"), None);
    }

    #[test]
    fn pinned_vfs_are_left_out_and_the_pf_of_a_non_sriov_gpu_is_shared() {
        let l4 = GpuFunctions {
            pf: "0000:01:00.0".into(),
            model: "L4".into(),
            sriov: true,
            functions: vec![
                ("0000:01:00.4".into(), ids("11")),
                ("0000:01:00.5".into(), ids("12")),
            ],
        };
        let t4 = GpuFunctions {
            pf: "0000:3b:00.0".into(),
            model: "T4".into(),
            sriov: false,
            functions: vec![("0000:3b:00.0".into(), ids("3"))],
        };
        let pinned = BTreeSet::from(["0000:01:00.4".to_string(), "0000:3b:00.0".to_string()]);
        let t = render("pve", &[l4.clone(), t4], &pinned).unwrap();
        assert_eq!(
            t,
            "vgpu-l4-0000-01-00-0\n\tmap id=10de:27b8,iommugroup=12,node=pve,path=0000:01:00.5,subsystem-id=10de:16ca\n\tmdev 1\n\n\
             vgpu-t4-0000-3b-00-0\n\tmap id=10de:27b8,iommugroup=3,node=pve,path=0000:3b:00.0,subsystem-id=10de:16ca\n\tmdev 1\n"
        );
        let all = BTreeSet::from(["0000:01:00.4".to_string(), "0000:01:00.5".to_string()]);
        let e = render("pve", &[l4], &all).unwrap_err();
        assert!(e.contains("every VF holds a vGPU vgpuctl pins"), "{e}");
    }
}
