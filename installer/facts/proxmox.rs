//! What Proxmox VE is set to do with the GPUs: the VMs' `hostpciN` devices
//! (`/etc/pve/qemu-server/<vmid>.conf`), the PCI resource mappings (`/etc/pve/mapping/pci.cfg`)
//! and the `pve-nvidia-sriov@` units (pve-nvidia-vgpu-helper: `sriov-manage -e` at boot).
//! Read-only; parsing is pure and tested on its own.

use std::collections::BTreeMap;

use crate::host::Host;
use crate::pci::PciAddr;

const QEMU_SERVER: &str = "etc/pve/qemu-server";
const PCI_MAPPING: &str = "etc/pve/mapping/pci.cfg";

/// One `hostpciN` of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostpci {
    pub vmid: String,
    /// `hostpci0`.
    pub key: String,
    /// The functions it may take, in full form: its own addresses (`;`-separated, a device
    /// without function meaning function 0 here), or its mapping's paths on this node.
    pub functions: Vec<String>,
    /// `mapping=<id>` when it names one.
    pub mapping: Option<String>,
    /// `mdev=<type>`: Proxmox creates the vGPU itself at VM start.
    pub mdev: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxmoxFacts {
    pub hostpci: Vec<Hostpci>,
    /// Enabled `pve-nvidia-sriov@<instance>.service` units (their instance, e.g. `ALL`).
    pub sriov_units: Vec<String>,
}

/// Full-form addresses of a `;`-separated Proxmox device list (`01:00.4`, `0000:01:00.4`,
/// `0000:01:00` for a whole device: its function 0).
fn addresses(list: &str) -> Vec<String> {
    list.split(';')
        .filter_map(|a| {
            let a = a.trim();
            let a = if a.matches(':').count() >= 1 && !a.contains('.') {
                format!("{a}.0")
            } else {
                a.to_string()
            };
            PciAddr::parse(&a).ok().map(|p| p.to_string())
        })
        .collect()
}

/// `mapping id -> paths on node`, from pci.cfg's text (PVE::Mapping::PCI's format).
pub fn parse_mappings(text: &str, node: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            current = None;
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            current = Some(line.trim().to_string());
            out.entry(line.trim().to_string()).or_default();
            continue;
        }
        let (Some(id), Some(map)) = (&current, line.trim().strip_prefix("map")) else {
            continue;
        };
        let props: BTreeMap<&str, &str> = map
            .trim()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .collect();
        if props.get("node") == Some(&node) {
            if let Some(path) = props.get("path") {
                out.entry(id.clone()).or_default().extend(addresses(path));
            }
        }
    }
    out
}

/// The `hostpciN` lines of one VM's config (the current configuration only: snapshot sections,
/// from the first `[` line on, are past states).
pub fn parse_vm(vmid: &str, text: &str, mappings: &BTreeMap<String, Vec<String>>) -> Vec<Hostpci> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if !key
            .strip_prefix("hostpci")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        {
            continue;
        }
        let mut h = Hostpci {
            vmid: vmid.to_string(),
            key: key.to_string(),
            functions: Vec::new(),
            mapping: None,
            mdev: None,
        };
        for (i, part) in value.trim().split(',').enumerate() {
            match part.split_once('=') {
                Some(("host", v)) => h.functions = addresses(v),
                Some(("mapping", v)) => {
                    h.mapping = Some(v.to_string());
                    h.functions = mappings.get(v).cloned().unwrap_or_default();
                }
                Some(("mdev", v)) => h.mdev = Some(v.to_string()),
                None if i == 0 => h.functions = addresses(part),
                _ => {}
            }
        }
        out.push(h);
    }
    out
}

pub fn observe(host: &Host, node: &str) -> ProxmoxFacts {
    let mappings = host
        .read(PCI_MAPPING)
        .map(|t| parse_mappings(&t, node))
        .unwrap_or_default();
    let mut hostpci = Vec::new();
    for name in host.list(QEMU_SERVER) {
        let Some(vmid) = name.strip_suffix(".conf") else {
            continue;
        };
        if let Ok(text) = host.read(&format!("{QEMU_SERVER}/{name}")) {
            hostpci.extend(parse_vm(vmid, &text, &mappings));
        }
    }
    let mut sriov_units = Vec::new();
    for dir in host.list("etc/systemd/system") {
        if !dir.ends_with(".wants") {
            continue;
        }
        for unit in host.list(&format!("etc/systemd/system/{dir}")) {
            if let Some(inst) = unit
                .strip_prefix("pve-nvidia-sriov@")
                .and_then(|u| u.strip_suffix(".service"))
            {
                if !sriov_units.iter().any(|u| u == inst) {
                    sriov_units.push(inst.to_string());
                }
            }
        }
    }
    ProxmoxFacts {
        hostpci,
        sriov_units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCI_CFG: &str = "vgpu-l4\n\tmap id=10de:27b8,iommugroup=12,node=pve1,path=0000:01:00.4,subsystem-id=10de:16ca\n\tmap id=10de:27b8,node=pve2,path=0000:41:00.4\n\tmap id=10de:27b8,node=pve1,path=0000:01:00.5;0000:01:00.6\n\tmdev 1\n\nnic\n\tmap id=8086:1572,node=pve1,path=0000:05:00\n";

    #[test]
    fn mappings_on_this_node() {
        let m = parse_mappings(PCI_CFG, "pve1");
        assert_eq!(
            m["vgpu-l4"],
            vec!["0000:01:00.4", "0000:01:00.5", "0000:01:00.6"]
        );
        assert_eq!(m["nic"], vec!["0000:05:00.0"]);
        assert_eq!(
            parse_mappings(PCI_CFG, "pve2")["vgpu-l4"],
            vec!["0000:41:00.4"]
        );
    }

    #[test]
    fn hostpci_lines_of_the_current_config() {
        let m = parse_mappings(PCI_CFG, "pve1");
        let vm = "boot: order=scsi0\nhostpci0: 01:00.4,mdev=nvidia-1157,pcie=1\nhostpci1: mapping=vgpu-l4,mdev=nvidia-1157\nhostpci2: host=0000:02:00.0;0000:03:00.0\nhostpci10: 0000:05:00,pcie=1\nmemory: 8192\n[snap1]\nhostpci3: 0000:09:00.4\n";
        let h = parse_vm("101", vm, &m);
        assert_eq!(h.len(), 4, "{h:?}");
        assert_eq!(h[0].functions, vec!["0000:01:00.4"]);
        assert_eq!(h[0].mdev.as_deref(), Some("nvidia-1157"));
        assert_eq!(h[1].mapping.as_deref(), Some("vgpu-l4"));
        assert_eq!(h[1].functions.len(), 3);
        assert_eq!(h[2].functions, vec!["0000:02:00.0", "0000:03:00.0"]);
        assert_eq!(h[2].mdev, None);
        assert_eq!(h[3].key, "hostpci10");
        assert_eq!(h[3].functions, vec!["0000:05:00.0"]);
    }
}
