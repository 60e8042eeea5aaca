//! Observe: build one [`HostFacts`] value from the host root. Read-only; nothing else reads the host
//! for decisions. Every field tolerates a missing file (a root missing most of `/sys` is a valid,
//! if unpromising, host).

pub mod gpus;
pub mod system;
pub mod vgpus;

use serde::Serialize;

use crate::host::Host;

pub use gpus::{Gpu, Vf};
pub use system::{BootLoader, CpuVendor, Driver, Modules, Os, OsFamily, RcLocalLine};
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
    let in_use = vgpus::vfio_groups_in_use(host);
    let mut facts = system::observe(host);
    facts.gpus = gpus::observe(host, &in_use);
    facts.mdevs = vgpus::observe_mdevs(host, &facts.gpus, &in_use);
    facts
}
