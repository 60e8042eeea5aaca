//! `export --nova`, `--kubevirt`, `--proxmox`: observe what each platform's text needs (the
//! pinned vGPUs' VFs' PCI ids, the GPUs' functions, the node name) and render it with the
//! platform's pure module ([`crate::nova`], [`crate::kubevirt`], [`crate::proxmox`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::facts::gpus::{pci_ids, PciIds};
use crate::facts::Interface;
use crate::host::Host;
use crate::pins::Pins;

/// A platform vgpuctl describes the vGPUs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Nova,
    Kubevirt,
    Proxmox,
}

/// The platform's text for this host; `Err` says why there is nothing to give it.
pub fn render(host: &Host, platform: Platform, pins: Option<&Pins>) -> Result<String, String> {
    let empty = Pins::default();
    let pins = pins.unwrap_or(&empty);
    match platform {
        Platform::Nova => crate::nova::render(pins, &vf_ids(host, pins)),
        Platform::Kubevirt => crate::kubevirt::render(pins, &vf_ids(host, pins)),
        Platform::Proxmox => proxmox(host, pins),
    }
}

/// The PCI ids of the VFs holding pinned vGPUs on the vendor-specific VFIO interface.
fn vf_ids(host: &Host, pins: &Pins) -> BTreeMap<String, PciIds> {
    pins.vgpus
        .iter()
        .filter(|v| v.interface == "vendor-vfio")
        .filter_map(|v| pci_ids(host, &v.parent).map(|i| (v.parent.clone(), i)))
        .collect()
}

fn proxmox(host: &Host, pins: &Pins) -> Result<String, String> {
    let node = crate::facts::system::hostname(host)
        .and_then(|h| crate::proxmox::node_name(&h))
        .ok_or("/etc/hostname is missing or empty: Proxmox names this node by it")?;
    let facts = crate::facts::observe(host);
    let mut gpus = Vec::new();
    for g in facts.gpus.iter().filter(|g| g.model.vgpu_supported) {
        // SR-IOV GPUs hold their vGPUs on VFs (both interfaces); the others on the PF (mdev).
        let sriov = g.interface == Interface::VendorVfio || g.sriov_capable();
        let addrs: Vec<String> = if sriov {
            g.vfs.iter().map(|v| v.address.clone()).collect()
        } else {
            vec![g.address.clone()]
        };
        let functions = addrs
            .into_iter()
            .filter_map(|a| pci_ids(host, &a).map(|i| (a, i)))
            .collect();
        gpus.push(crate::proxmox::GpuFunctions {
            pf: g.address.clone(),
            model: g.model.name.clone(),
            sriov,
            functions,
        });
    }
    let pinned: BTreeSet<String> = pins.vgpus.iter().map(|v| v.parent.clone()).collect();
    crate::proxmox::render(&node, &gpus, &pinned)
}
