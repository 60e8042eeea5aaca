//! vGPU parents, types and devices, on both kernel interfaces:
//! mdev (`mdev_supported_types/<dir>/{name,description,available_instances,create}`) and NVIDIA's
//! vendor-specific VFIO (`<VF>/nvidia/{creatable_vgpu_types,current_vgpu_type}`).

use serde::Serialize;

use super::vfio_holders::VfioHolders;
use crate::host::Host;
use crate::pci::PCI_DEVICES;
use crate::sysfs_parse::{parse_creatable, parse_description, TypeDescription};

pub const MDEV_BUS: &str = "sys/class/mdev_bus";
pub const MDEV_DEVICES: &str = "sys/bus/mdev/devices";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interface {
    Mdev,
    VendorVfio,
    None,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Mdev => "mdev",
            Interface::VendorVfio => "vendor-vfio",
            Interface::None => "none",
        }
    }
}

/// A vGPU type as one parent offers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VgpuType {
    /// mdev: the type directory name (`nvidia-565`, or `vfio-pci-575` as the seed saw);
    /// vendor VFIO: the numeric id (`1145`).
    pub id: String,
    /// As the kernel reports it: `NVIDIA A40-24Q`.
    pub name: String,
    pub description: TypeDescription,
    /// How many more of this type this parent can take now.
    pub available: u32,
}

/// A device that can hold vGPUs: a VF, a pre-Ampere PF, or any mdev parent.
#[derive(Clone, Debug, Serialize)]
pub struct Parent {
    pub address: String,
    pub interface: Interface,
    pub types: Vec<VgpuType>,
    /// Vendor VFIO only: the type set on this VF (`current_vgpu_type` != 0).
    pub current_type: Option<VgpuType>,
    /// A VM holds the VF open, through its VFIO group or its iommufd cdev (vendor VFIO).
    pub in_use: bool,
    /// Vendor VFIO, 580 branch: the GPU instance the driver put this VF's MIG-backed vGPU on
    /// (`nvidia/gpu_instance_id`, unreadable before a vGPU exists; recorded-behaviour.md §1).
    pub gpu_instance_id: Option<u32>,
    /// Where its attributes are (under the root): the mdev type directory listing, or the
    /// vendor-VFIO `nvidia` directory. The writes a plan makes are named from it.
    #[serde(skip)]
    pub attr_dir: String,
}

/// One existing vGPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vgpu {
    /// mdev UUID; vendor-VFIO devices have none in the kernel.
    pub uuid: Option<String>,
    pub parent: String,
    pub gpu: Option<String>,
    pub type_id: String,
    pub type_name: String,
    pub interface: Interface,
    /// A process (QEMU) holds it open: its VFIO group or its iommufd cdev.
    pub in_use: bool,
}

/// The sysfs directory holding a parent's mdev types, if it has one.
pub fn mdev_types_dir(host: &Host, parent: &str) -> Option<String> {
    let via_bus = format!("{MDEV_BUS}/{parent}/mdev_supported_types");
    if host.is_dir(&via_bus) {
        return Some(via_bus);
    }
    let via_pci = format!("{PCI_DEVICES}/{parent}/mdev_supported_types");
    host.is_dir(&via_pci).then_some(via_pci)
}

pub fn read_mdev_types(host: &Host, types_dir: &str) -> Vec<VgpuType> {
    host.list(types_dir)
        .into_iter()
        .filter_map(|dir| {
            let base = format!("{types_dir}/{dir}");
            let name = host.read_trim(&format!("{base}/name"))?;
            Some(VgpuType {
                description: host
                    .read(&format!("{base}/description"))
                    .map(|d| parse_description(&d))
                    .unwrap_or_default(),
                available: host
                    .read_trim(&format!("{base}/available_instances"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                id: dir,
                name,
            })
        })
        .collect()
}

pub fn vendor_dir(vf: &str) -> String {
    format!("{PCI_DEVICES}/{vf}/nvidia")
}

/// Read one parent. `None` when it exposes no vGPU interface (yet).
pub fn read_parent(host: &Host, address: &str, in_use: &VfioHolders) -> Option<Parent> {
    if let Some(dir) = mdev_types_dir(host, address) {
        return Some(Parent {
            address: address.to_string(),
            interface: Interface::Mdev,
            types: read_mdev_types(host, &dir),
            current_type: None,
            in_use: false,
            gpu_instance_id: None,
            attr_dir: dir,
        });
    }
    let vdir = vendor_dir(address);
    let creatable = host.read(&format!("{vdir}/creatable_vgpu_types")).ok()?;
    let types: Vec<VgpuType> = parse_creatable(&creatable)
        .into_iter()
        .map(|t| VgpuType {
            id: t.id.to_string(),
            name: t.name,
            description: TypeDescription::default(),
            available: 1,
        })
        .collect();
    let current = host
        .read_trim(&format!("{vdir}/current_vgpu_type"))
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|id| *id != 0)
        .map(|id| VgpuType {
            id: id.to_string(),
            name: String::new(),
            description: TypeDescription::default(),
            available: 0,
        });
    Some(Parent {
        address: address.to_string(),
        interface: Interface::VendorVfio,
        types,
        gpu_instance_id: current
            .as_ref()
            .and_then(|_| host.read_trim(&format!("{vdir}/gpu_instance_id")))
            .and_then(|s| s.parse().ok()),
        current_type: current,
        in_use: in_use.holds(host, &format!("{PCI_DEVICES}/{address}")),
        attr_dir: vdir,
    })
}
