//! Observe: build one [`HostFacts`] value from the host root. Read-only; nothing else reads the host
//! for decisions. Every field tolerates a missing file (a root missing most of `/sys` is a valid,
//! if unpromising, host).

pub mod gpus;
pub mod kernels;
pub mod mig;
pub mod mixed_size;
pub mod proxmox;
pub mod system;
pub mod vfio_holders;
pub mod vfio_persist;
pub mod vgpus;

use serde::Serialize;

use crate::host::Host;

pub use gpus::{Gpu, Vf};
pub use system::{BootLoader, CpuVendor, Driver, Modules, Os, OsFamily, RcLocalLine};
use vgpus::MDEV_DEVICES;
pub use vgpus::{Interface, Parent, Vgpu, VgpuType};

#[derive(Clone, Debug, Serialize)]
pub struct HostFacts {
    pub root: String,
    pub simulated: bool,
    pub gpus: Vec<Gpu>,
    pub cpu_vendor: CpuVendor,
    /// CPU virtualization (vmx/svm) advertised.
    pub cpu_virt: bool,
    /// The `hypervisor` CPU flag: this host is itself a virtual machine.
    pub is_vm: bool,
    pub dmi_vendor: Option<String>,
    /// `DMAR` (Intel VT-d) or `IVRS` (AMD-Vi) ACPI table, if the firmware publishes one.
    pub firmware_iommu: Option<String>,
    /// `/sys/kernel/iommu_groups` is populated.
    pub iommu_active: bool,
    pub cmdline: String,
    pub kernel_release: Option<String>,
    pub boot_id: Option<String>,
    pub os: Os,
    pub boot: BootLoader,
    pub secure_boot: Option<bool>,
    pub modules: Modules,
    pub nouveau_blacklisted: bool,
    pub driver: Driver,
    /// Every mdev device on the host, NVIDIA or not.
    pub mdevs: Vec<Vgpu>,
    pub rc_local: Vec<RcLocalLine>,
    pub restore_unit_enabled: bool,
    pub active_profile: bool,
    /// What gives the GPUs to vfio-pci again at every boot.
    pub vfio_persist: vfio_persist::VfioPersist,
    /// The running kernel and the one the boot loader starts next, for the NVIDIA module.
    pub kernels: kernels::Kernels,
}

impl HostFacts {
    pub fn gpu(&self, address: &str) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.address == address)
    }

    /// Every vGPU on the host: mdev devices and vendor-VFIO VFs with a type set.
    pub fn vgpus(&self) -> Vec<Vgpu> {
        let mut out = self.mdevs.clone();
        for g in &self.gpus {
            for p in &g.parents {
                if let (Interface::VendorVfio, Some(t)) = (p.interface, p.current_type.as_ref()) {
                    out.push(Vgpu {
                        uuid: None,
                        parent: p.address.clone(),
                        gpu: Some(g.address.clone()),
                        type_id: t.id.clone(),
                        type_name: t.name.clone(),
                        interface: Interface::VendorVfio,
                        in_use: p.in_use,
                    });
                }
            }
        }
        out
    }
}

/// Observe the host. Never fails: what cannot be read is absent.
pub fn observe(host: &Host) -> HostFacts {
    let in_use = vfio_holders::VfioHolders::observe(host);
    let mut facts = system::observe(host);
    facts.gpus = gpus::observe(host, &in_use);
    facts.vfio_persist = vfio_persist::observe(host, &facts.gpus, &facts.boot, &facts.cmdline);
    facts.mdevs = observe_mdevs(host, &facts.gpus, &in_use);
    facts.kernels = kernels::observe(host, &facts.boot, facts.kernel_release.as_deref());
    facts
}

/// Every mdev device under `sys/bus/mdev/devices`, whatever its parent (NVIDIA or not).
pub fn observe_mdevs(host: &Host, gpus: &[Gpu], in_use: &vfio_holders::VfioHolders) -> Vec<Vgpu> {
    host.list(MDEV_DEVICES)
        .into_iter()
        .map(|uuid| {
            let base = format!("{MDEV_DEVICES}/{uuid}");
            // The device lives under its parent: .../<parent>/<uuid>.
            let parent = host
                .read_link(&base)
                .and_then(|t| {
                    t.parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_default();
            let type_id = host
                .link_name(&format!("{base}/mdev_type"))
                .unwrap_or_default();
            // When the type's `name` cannot be read at this instant, the parent's own listing
            // (read in this observation) names the type directory the device is linked to.
            let type_name = host
                .read_trim(&format!("{base}/mdev_type/name"))
                .or_else(|| listed_name(gpus, &parent, &type_id))
                .unwrap_or_else(|| type_id.clone());
            let gpu = gpus
                .iter()
                .find(|g| g.address == parent || g.vfs.iter().any(|v| v.address == parent))
                .map(|g| g.address.clone());
            Vgpu {
                in_use: in_use.holds(host, &base),
                uuid: Some(uuid),
                parent,
                gpu,
                type_id,
                type_name,
                interface: Interface::Mdev,
            }
        })
        .collect()
}

/// The name parent `parent` lists for its type directory `type_id`, from observed facts.
fn listed_name(gpus: &[Gpu], parent: &str, type_id: &str) -> Option<String> {
    gpus.iter()
        .flat_map(|g| &g.parents)
        .filter(|p| p.address == parent)
        .flat_map(|p| &p.types)
        .find(|t| t.id == type_id)
        .map(|t| t.name.clone())
}
