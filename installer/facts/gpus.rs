//! NVIDIA PCI functions under `sys/bus/pci/devices`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::vfio_holders::VfioHolders;
use super::vgpus::{self, Interface, Parent};
use crate::host::Host;
use crate::models::{self, Identified};
use crate::sysfs_parse::parse_hex_u32;

pub const NVIDIA: u32 = 0x10de;
pub use crate::pci::PCI_DEVICES;

/// A physical NVIDIA GPU (a PF, never a VF).
#[derive(Clone, Debug, Serialize)]
pub struct Gpu {
    pub address: String,
    pub device_id: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_id: Option<u16>,
    pub class: Option<u32>,
    pub driver: Option<String>,
    pub iommu_group: Option<String>,
    pub numa_node: Option<i32>,
    pub sriov_totalvfs: Option<u32>,
    pub sriov_numvfs: Option<u32>,
    pub vfs: Vec<Vf>,
    pub model: Identified,
    /// The kernel interface its vGPUs use, as far as can be seen now.
    pub interface: Interface,
    /// Every device that can hold its vGPUs: the PF (pre-Ampere mdev) or its VFs.
    pub parents: Vec<Parent>,
    /// The loaded driver's own answer (`nvidia-smi -q`, `Host VGPU Mode`), when it gave one.
    pub host_vgpu_mode: Option<HostVgpuMode>,
    /// Mixed-size mode as the loaded driver reports it (None: no answer, e.g. no driver).
    pub mixed_size: Option<super::mixed_size::MixedSize>,
    /// MIG capability and mode as the loaded driver reports it (None: no answer).
    pub mig_mode: Option<super::mig::MigMode>,
    /// Its GPU instances (`nvidia-smi mig -i <gpu> -lgi`), read while MIG mode is on.
    pub gpu_instances: Vec<super::mig::GpuInstance>,
}

/// `Host VGPU Mode` in `nvidia-smi -q` (recorded-behaviour.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HostVgpuMode {
    Sriov,
    NonSriov,
}

impl Gpu {
    /// Its vGPUs live on SR-IOV VFs (Ampere and later), not on the PF (mdev, pre-Ampere).
    /// Never judged by `sriov_totalvfs`: a T4, V100 or P40 can advertise VFs that the vGPU
    /// driver never creates (recorded-behaviour.md §2), and SR-IOV on it fails after the VF
    /// timeout. The loaded driver's answer comes first, then the architecture in the GPU
    /// table; a GPU the table does not know is SR-IOV only when its VFs already exist.
    pub fn sriov_capable(&self) -> bool {
        match self.host_vgpu_mode {
            Some(mode) => mode == HostVgpuMode::Sriov,
            None => match self.model.model {
                Some(m) => m.sriov(),
                None => self.sriov_numvfs.unwrap_or(0) > 0 && !self.vfs.is_empty(),
            },
        }
    }
    /// SR-IOV still to enable: an SR-IOV GPU without all its VFs (or whose count is unknown).
    pub fn vfs_pending(&self) -> bool {
        let total = self.sriov_totalvfs.unwrap_or(0);
        self.sriov_capable() && (total == 0 || self.sriov_numvfs != Some(total))
    }
    pub fn device_hex(&self) -> String {
        format!("10de:{:04x}", self.device_id)
    }
    pub fn memory_gib(&self) -> Option<u32> {
        self.model.model.map(|m| m.memory_gib)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Vf {
    pub address: String,
    pub driver: Option<String>,
}

fn dev(addr: &str, attr: &str) -> String {
    format!("{PCI_DEVICES}/{addr}/{attr}")
}

/// What a PCI function says it is, as the platforms that check hardware compare it: Proxmox's
/// resource mapping (`id`, `subsystem-id`, `iommugroup`), Nova's and KubeVirt's vendor:device
/// selectors. Read from the function itself: a VF's ids are its own, never assumed from its PF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    /// Subsystem vendor and device, when the function has them.
    pub subsystem: Option<(u16, u16)>,
    pub iommu_group: Option<String>,
}

/// The ids of the PCI function `addr` (`None`: no such function, or it does not say).
pub fn pci_ids(host: &Host, addr: &str) -> Option<PciIds> {
    let vendor = read_hex(host, addr, "vendor")? as u16;
    let device = read_hex(host, addr, "device")? as u16;
    let subsystem = read_hex(host, addr, "subsystem_vendor")
        .zip(read_hex(host, addr, "subsystem_device"))
        .map(|(v, d)| (v as u16, d as u16));
    Some(PciIds {
        vendor,
        device,
        subsystem,
        iommu_group: host.link_name(&dev(addr, "iommu_group")),
    })
}

fn read_hex(host: &Host, addr: &str, attr: &str) -> Option<u32> {
    let read = || {
        host.read_trim(&dev(addr, attr))
            .and_then(|s| parse_hex_u32(&s))
    };
    // An identity attribute of a device that is there is read once more before the device is
    // judged not to be an NVIDIA GPU: dropping a GPU from the facts on one failed read made a
    // setup refuse a profile naming it (seen once in a crash-test run on the simulator).
    let identity = matches!(attr, "vendor" | "device");
    read().or_else(|| {
        (identity && host.exists(&format!("{PCI_DEVICES}/{addr}"))).then(|| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            read()
        })?
    })
}

/// Sorted `virtfnN` links of a PF, in N order.
pub fn virtfns(host: &Host, pf: &str) -> Vec<String> {
    let mut links: Vec<(u32, String)> = host
        .list(&format!("{PCI_DEVICES}/{pf}"))
        .into_iter()
        .filter_map(|n| {
            let idx = n.strip_prefix("virtfn")?.parse::<u32>().ok()?;
            let vf = host.link_name(&dev(pf, &n))?;
            Some((idx, vf))
        })
        .collect();
    links.sort();
    links.into_iter().map(|(_, vf)| vf).collect()
}

/// The PF and its VFs that expose a vGPU interface, as parents.
pub fn observe_parents(host: &Host, pf: &str, vfs: &[Vf], in_use: &VfioHolders) -> Vec<Parent> {
    let mut parents: Vec<Parent> = std::iter::once(pf)
        .chain(vfs.iter().map(|v| v.address.as_str()))
        .filter_map(|a| vgpus::read_parent(host, a, in_use))
        .collect();
    // A used VF lists no creatable types, so its type's name comes from a sibling that still
    // offers it (equal-size mode keeps one type per GPU), else it stays the bare id.
    let known: Vec<(String, String)> = parents
        .iter()
        .flat_map(|p| p.types.iter().map(|t| (t.id.clone(), t.name.clone())))
        .collect();
    for p in &mut parents {
        if let Some(cur) = &mut p.current_type {
            cur.name = known
                .iter()
                .find(|(id, _)| *id == cur.id)
                .map(|(_, n)| n.clone())
                .or_else(|| crate::vgpu_name::name_for_id(&cur.id))
                .unwrap_or_else(|| format!("vGPU type {}", cur.id));
        }
    }
    parents
}

/// Ask the loaded driver how each GPU does vGPU: `nvidia-smi -q`, read-only. None when no
/// program can be run here (a bare `--root`) or the driver is not loaded.
fn nvidia_smi_q(host: &Host) -> Option<String> {
    if !host.reach().runs_programs() || !host.exists("sys/module/nvidia") {
        return None;
    }
    match host.run(&crate::host::Cmd::new("nvidia-smi").arg("-q")) {
        Ok(out) if out.success() => Some(out.stdout),
        _ => None,
    }
}

/// A MIG-mode GPU's instances as the driver lists them (none when it lists none or fails).
fn gpu_instances(host: &Host, gpu: &str) -> Vec<super::mig::GpuInstance> {
    match host.run(&super::mig::list_instances(gpu)) {
        Ok(out) if out.success() => super::mig::parse_instances(&out.stdout),
        _ => Vec::new(),
    }
}

/// `GPU 00000000:3B:00.0` blocks of `nvidia-smi -q` -> PCI address (`0000:3b:00.0`) -> the
/// block's `Host VGPU Mode`. The value is compared whole: `Non SR-IOV` contains `SR-IOV`.
pub fn parse_host_vgpu_modes(text: &str) -> BTreeMap<String, HostVgpuMode> {
    let mut out = BTreeMap::new();
    let mut gpu: Option<String> = None;
    for line in text.lines() {
        if let Some(addr) = line.strip_prefix("GPU ") {
            gpu = crate::pci::from_nvidia_smi(addr.trim());
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "Host VGPU Mode" {
            continue;
        }
        let mode = match value.trim() {
            "SR-IOV" => HostVgpuMode::Sriov,
            "Non SR-IOV" => HostVgpuMode::NonSriov,
            _ => continue,
        };
        if let Some(g) = &gpu {
            out.insert(g.clone(), mode);
        }
    }
    out
}

pub fn observe(host: &Host, in_use: &VfioHolders) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    let smi = nvidia_smi_q(host);
    let modes = smi
        .as_deref()
        .map(parse_host_vgpu_modes)
        .unwrap_or_default();
    let mixed = smi
        .as_deref()
        .map(super::mixed_size::parse)
        .unwrap_or_default();
    let mig = smi.as_deref().map(super::mig::parse).unwrap_or_default();
    for addr in host.list(PCI_DEVICES) {
        if read_hex(host, &addr, "vendor") != Some(NVIDIA) {
            continue;
        }
        let class = read_hex(host, &addr, "class");
        // Display (0x03xxxx) functions only: a GPU's HDMI audio function is not a GPU.
        if class.map(|c| c >> 16 != 0x03).unwrap_or(false) {
            continue;
        }
        // A VF is a parent of vGPUs, listed under its PF, not a GPU of its own.
        if host.exists(&dev(&addr, "physfn")) {
            continue;
        }
        let Some(device_id) = read_hex(host, &addr, "device").map(|d| d as u16) else {
            continue;
        };
        let subsystem_id = read_hex(host, &addr, "subsystem_device").map(|d| d as u16);
        let vfs: Vec<Vf> = virtfns(host, &addr)
            .into_iter()
            .map(|vf| Vf {
                driver: host.link_name(&dev(&vf, "driver")),
                address: vf,
            })
            .collect();
        let parents = observe_parents(host, &addr, &vfs, in_use);
        let interface = parents
            .iter()
            .map(|p| p.interface)
            .find(|i| *i != Interface::None)
            .unwrap_or(Interface::None);
        gpus.push(Gpu {
            device_id,
            subsystem_vendor: read_hex(host, &addr, "subsystem_vendor").map(|d| d as u16),
            subsystem_id,
            class,
            driver: host.link_name(&dev(&addr, "driver")),
            iommu_group: host.link_name(&dev(&addr, "iommu_group")),
            numa_node: host
                .read_trim(&dev(&addr, "numa_node"))
                .and_then(|s| s.parse().ok()),
            sriov_totalvfs: host
                .read_trim(&dev(&addr, "sriov_totalvfs"))
                .and_then(|s| s.parse().ok()),
            sriov_numvfs: host
                .read_trim(&dev(&addr, "sriov_numvfs"))
                .and_then(|s| s.parse().ok()),
            vfs,
            model: models::identify(device_id, subsystem_id),
            interface,
            parents,
            host_vgpu_mode: modes.get(&addr).copied(),
            mixed_size: mixed.get(&addr).copied(),
            mig_mode: mig.get(&addr).copied(),
            gpu_instances: if mig.get(&addr).is_some_and(|m| m.current) {
                gpu_instances(host, &addr)
            } else {
                Vec::new()
            },
            address: addr,
        });
    }
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_vgpu_mode_is_compared_whole() {
        let text = "GPU 00000000:3B:00.0\n    Product Name : Tesla T4\n    GPU Virtualization Mode\n        Virtualization Mode : Host VGPU\n        Host VGPU Mode : Non SR-IOV\nGPU 00000001:04:00.0\n        Host VGPU Mode                    : SR-IOV\n";
        let m = parse_host_vgpu_modes(text);
        assert_eq!(m.get("0000:3b:00.0"), Some(&HostVgpuMode::NonSriov));
        assert_eq!(m.get("0001:04:00.0"), Some(&HostVgpuMode::Sriov));
        assert_eq!(m.len(), 2);
    }
}
