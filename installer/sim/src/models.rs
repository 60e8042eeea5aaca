//! The simulated machines: hardware, OS and boot loader of each model (static data).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    Intel,
    Amd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Debian/Ubuntu GRUB: /etc/default/grub (+ grub.d drop-ins) -> update-grub -> grub.cfg.
    Grub,
    /// RHEL family: GRUB with BLS entries edited by grubby.
    Bls,
    /// Proxmox on ZFS/UEFI: systemd-boot, /etc/kernel/cmdline -> proxmox-boot-tool refresh.
    SystemdBoot,
}

/// How the host driver exposes vGPUs on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iface {
    Mdev,
    VendorVfio,
}

/// Whether the GPU has MIG and how its mode behaves (recorded-behaviour §5: MIG mode is
/// *reported* to persist on Ampere, where turning it on needs a GPU reset, and not on Hopper).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mig {
    None,
    /// Ampere: `-mig N` stays pending until the GPU is reset (here: the next boot; the vGPU
    /// manager holds the GPU, so nvidia-smi cannot reset it now), then persists across boots.
    PendingUntilReset,
    /// Hopper and later: `-mig N` takes effect at once and is lost at the next boot.
    AtOnce,
}

/// What owns the GPUs on the fresh machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreshDriver {
    /// Bound to vfio-pci at run time by a previous admin (the seed); gone after a reboot.
    VfioPci,
    Nouveau,
    /// A datacenter (not vgpu-kvm) driver, as on a cloud GPU instance.
    Datacenter(&'static str),
}

#[derive(Debug)]
pub struct Model {
    pub name: &'static str,
    /// Catalog model ("A40"), or "" when the GPU has no vGPU types (GeForce).
    pub gpu: &'static str,
    pub device: u16,
    pub subsystem_device: u16,
    pub class: u32,
    pub pfs: &'static [&'static str],
    /// 0 = no SR-IOV.
    pub sriov_total: u32,
    pub iface: Iface,
    pub cpu: Cpu,
    pub vm: Option<&'static str>,
    pub os: Os,
    pub boot: Boot,
    pub fresh: FreshDriver,
    /// ACPI DMAR/IVRS present.
    pub firmware_iommu: bool,
    /// PCI function number of the first VF after the PF's: 4 on most NVIDIA GPUs (the seed),
    /// 2 on an RTX PRO 6000 Blackwell (`virtfn0 -> ../0001:04:00.2`, recorded-behaviour.md §1).
    pub first_vf: u32,
    /// The host driver version of its licensed zip and of `-ready`.
    pub driver: &'static str,
    pub mig: Mig,
}

#[derive(Debug)]
pub struct Os {
    pub os_release: &'static str,
    pub kver: &'static str,
    /// GRUB_DISTRIBUTOR as grub-mkconfig sees it.
    pub distributor: &'static str,
    pub debian: bool,
    pub proxmox: bool,
}

const UBUNTU_2204: &str =
    "PRETTY_NAME=\"Ubuntu 22.04.5 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\n\
VERSION=\"22.04.5 LTS (Jammy Jellyfish)\"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n\
HOME_URL=\"https://www.ubuntu.com/\"\nSUPPORT_URL=\"https://help.ubuntu.com/\"\n\
BUG_REPORT_URL=\"https://bugs.launchpad.net/ubuntu/\"\n\
PRIVACY_POLICY_URL=\"https://www.ubuntu.com/legal/terms-and-policies/privacy-policy\"\n\
UBUNTU_CODENAME=jammy\n";

const UBUNTU_2404: &str =
    "PRETTY_NAME=\"Ubuntu 24.04.2 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n\
VERSION=\"24.04.2 LTS (Noble Numbat)\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n\
HOME_URL=\"https://www.ubuntu.com/\"\nSUPPORT_URL=\"https://help.ubuntu.com/\"\n\
BUG_REPORT_URL=\"https://bugs.launchpad.net/ubuntu/\"\n\
PRIVACY_POLICY_URL=\"https://www.ubuntu.com/legal/terms-and-policies/privacy-policy\"\n\
UBUNTU_CODENAME=noble\nLOGO=ubuntu-logo\n";

const ROCKY_94: &str = "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\n\
ID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPLATFORM_ID=\"platform:el9\"\n\
PRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\nANSI_COLOR=\"0;32\"\nLOGO=\"fedora-logo-icon\"\n\
CPE_NAME=\"cpe:/o:rocky:rocky:9::baseos\"\nHOME_URL=\"https://rockylinux.org/\"\n\
BUG_REPORT_URL=\"https://bugs.rockylinux.org/\"\nSUPPORT_END=\"2032-05-31\"\n\
ROCKY_SUPPORT_PRODUCT=\"Rocky-Linux-9\"\nROCKY_SUPPORT_PRODUCT_VERSION=\"9.4\"\n\
REDHAT_SUPPORT_PRODUCT=\"Rocky Linux\"\nREDHAT_SUPPORT_PRODUCT_VERSION=\"9.4\"\n";

const DEBIAN_12: &str =
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n\
HOME_URL=\"https://www.debian.org/\"\nSUPPORT_URL=\"https://www.debian.org/support\"\n\
BUG_REPORT_URL=\"https://bugs.debian.org/\"\n";

/// The seed's host driver (vGPU 17.6).
pub const DRIVER_550: &str = "550.163.02";
/// A 580-branch host driver as a real RTX PRO 6000 Blackwell host ran it (vGPU 19; the version
/// of bigstack-oss/cubecos's `nvidia-smi vgpu -s -v` fixture).
pub const DRIVER_580: &str = "580.105.06";

const JAMMY: Os = Os {
    os_release: UBUNTU_2204,
    kver: "5.15.0-141-generic",
    distributor: "Ubuntu",
    debian: true,
    proxmox: false,
};

pub const MODELS: &[Model] = &[
    Model {
        name: "a40x8",
        gpu: "A40",
        device: 0x2235,
        subsystem_device: 0x145a,
        class: 0x030200,
        pfs: &[
            "0000:67:00.0",
            "0000:68:00.0",
            "0000:6a:00.0",
            "0000:6b:00.0",
            "0000:e5:00.0",
            "0000:e6:00.0",
            "0000:e7:00.0",
            "0000:e8:00.0",
        ],
        sriov_total: 32,
        iface: Iface::Mdev,
        cpu: Cpu::Intel,
        vm: None,
        os: JAMMY,
        boot: Boot::Grub,
        fresh: FreshDriver::VfioPci,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "t4x2",
        gpu: "T4",
        device: 0x1eb8,
        subsystem_device: 0x12a2,
        class: 0x030200,
        pfs: &["0000:3b:00.0", "0000:af:00.0"],
        sriov_total: 0,
        iface: Iface::Mdev,
        cpu: Cpu::Intel,
        vm: None,
        os: JAMMY,
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "l40s-vfio",
        gpu: "L40S",
        device: 0x26b9,
        subsystem_device: 0x1851,
        class: 0x030200,
        pfs: &[
            "0000:01:00.0",
            "0000:41:00.0",
            "0000:81:00.0",
            "0000:c1:00.0",
        ],
        sriov_total: 32,
        iface: Iface::VendorVfio,
        cpu: Cpu::Amd,
        vm: None,
        os: Os {
            os_release: UBUNTU_2404,
            kver: "6.8.0-60-generic",
            distributor: "Ubuntu",
            debian: true,
            proxmox: false,
        },
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "rtxpro6000-vfio",
        gpu: "RTX Pro 6000 Blackwell DC",
        device: 0x2bb5,
        // A guess: no public capture gives the Server Edition's subsystem id.
        subsystem_device: 0x204e,
        class: 0x030200,
        // PCI domain 0001, as recorded (cubecos issue 312: 0001:04:00.0; its gpu module: VF
        // 0001:c8:00.2).
        pfs: &["0001:04:00.0", "0001:c8:00.0"],
        // 48 VFs, of which the driver hosts 32 vGPUs (max instances 32; cubecos's fixture).
        sriov_total: 48,
        iface: Iface::VendorVfio,
        cpu: Cpu::Amd,
        vm: None,
        os: Os {
            os_release: UBUNTU_2404,
            kver: "6.8.0-87-generic",
            distributor: "Ubuntu",
            debian: true,
            proxmox: false,
        },
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 2,
        driver: DRIVER_580,
        mig: Mig::None,
    },
    Model {
        name: "rhel-a10",
        gpu: "A10",
        device: 0x2236,
        subsystem_device: 0x1482,
        class: 0x030200,
        pfs: &["0000:17:00.0"],
        sriov_total: 32,
        iface: Iface::Mdev,
        cpu: Cpu::Intel,
        vm: None,
        os: Os {
            os_release: ROCKY_94,
            kver: "5.14.0-427.13.1.el9_4.x86_64",
            distributor: "Rocky Linux",
            debian: false,
            proxmox: false,
        },
        boot: Boot::Bls,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "proxmox-l4",
        gpu: "L4",
        device: 0x27b8,
        subsystem_device: 0x16ca,
        class: 0x030200,
        pfs: &["0000:01:00.0"],
        sriov_total: 32,
        iface: Iface::VendorVfio,
        cpu: Cpu::Intel,
        vm: None,
        os: Os {
            os_release: DEBIAN_12,
            kver: "6.8.12-4-pve",
            distributor: "Proxmox VE",
            debian: true,
            proxmox: true,
        },
        boot: Boot::SystemdBoot,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "cloud-h100",
        gpu: "H100",
        device: 0x2330,
        subsystem_device: 0x16c1,
        class: 0x030200,
        pfs: &["0000:00:1e.0"],
        sriov_total: 0,
        iface: Iface::VendorVfio,
        cpu: Cpu::Intel,
        vm: Some("Amazon EC2"),
        os: Os {
            os_release: UBUNTU_2204,
            kver: "6.8.0-1021-aws",
            distributor: "Ubuntu",
            debian: true,
            proxmox: false,
        },
        boot: Boot::Grub,
        fresh: FreshDriver::Datacenter("550.127.08"),
        firmware_iommu: false,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
    Model {
        name: "a100-mig",
        gpu: "A100D",
        device: 0x20b5,
        // A guess: the A100 80GB PCIe's subsystem id as pci.ids lists it is not in the recorded
        // sources.
        subsystem_device: 0x1533,
        class: 0x030200,
        // The addresses of stackhpc's A100 hosts (roles/vgpu README: a MIG-backed GPU at
        // 0000:17:00.0, a time-sliced one at 0000:65:00.0, VFs from .4).
        pfs: &["0000:17:00.0", "0000:65:00.0"],
        // 20 VFs: A100D-4C's 20 vGPUs per GPU, one per VF (the count is inferred).
        sriov_total: 20,
        iface: Iface::Mdev,
        cpu: Cpu::Intel,
        vm: None,
        os: JAMMY,
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::PendingUntilReset,
    },
    Model {
        name: "h200x8-vfio",
        gpu: "H200X",
        device: 0x2335,
        // A guess (no recorded capture of an H200 SXM's subsystem id).
        subsystem_device: 0x18be,
        class: 0x030200,
        // An HGX board's eight GPUs, one per PCIe switch; the addresses are *a guess* in the
        // usual HGX layout.
        pfs: &[
            "0000:18:00.0",
            "0000:2a:00.0",
            "0000:3a:00.0",
            "0000:5d:00.0",
            "0000:9a:00.0",
            "0000:ab:00.0",
            "0000:ba:00.0",
            "0000:db:00.0",
        ],
        // H200X-4C's 32 vGPUs per GPU, one per VF.
        sriov_total: 32,
        iface: Iface::VendorVfio,
        cpu: Cpu::Intel,
        vm: None,
        os: Os {
            os_release: UBUNTU_2404,
            kver: "6.8.0-87-generic",
            distributor: "Ubuntu",
            debian: true,
            proxmox: false,
        },
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_580,
        mig: Mig::AtOnce,
    },
    Model {
        name: "geforce",
        gpu: "",
        device: 0x2684,
        subsystem_device: 0x16f3,
        class: 0x030000,
        pfs: &["0000:01:00.0"],
        sriov_total: 0,
        iface: Iface::Mdev,
        cpu: Cpu::Intel,
        vm: None,
        os: JAMMY,
        boot: Boot::Grub,
        fresh: FreshDriver::Nouveau,
        firmware_iommu: true,
        first_vf: 4,
        driver: DRIVER_550,
        mig: Mig::None,
    },
];

pub fn find(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// Split "a40x8-ready" into the model and the ready flag.
pub fn parse(name: &str) -> Option<(&'static Model, bool)> {
    match name.strip_suffix("-ready") {
        Some(base) => find(base).map(|m| (m, true)),
        None => find(name).map(|m| (m, false)),
    }
}

impl Model {
    /// The GPU can run in mixed-size (heterogeneous) mode with a vGPU 17+ driver: NVIDIA lists
    /// Volta/Turing and later on Linux KVM (recorded-behaviour §4; cubecos measured the RTX PRO
    /// 6000 Blackwell, issue 1316). Played on the A40, L40S and RTX PRO 6000 models; the A10,
    /// L4 and T4 models stay in equal-size mode (*a choice*, not a recorded refusal).
    pub fn mixed_size_gpu(&self) -> bool {
        matches!(self.gpu, "A40" | "L40S" | "RTX Pro 6000 Blackwell DC")
    }

    /// VF addresses of a PF, as NVIDIA GPUs lay them out (first VF at function `first_vf`,
    /// stride 1): 0000:e8:00.0 -> 0000:e8:00.4 .. 0000:e8:04.3 for 32 VFs (the seed's listing);
    /// 0001:04:00.0 -> 0001:04:00.2 .. on an RTX PRO 6000 Blackwell.
    pub fn vfs_of(&self, pf: &str) -> Vec<String> {
        let (prefix, _) = pf.rsplit_once(':').expect("pci address");
        (0..self.sriov_total)
            .map(|i| {
                let devfn = self.first_vf + i;
                format!("{prefix}:{:02x}.{}", devfn / 8, devfn % 8)
            })
            .collect()
    }

    /// The `sriov_totalvfs` the PF shows. A T4 carries an SR-IOV capability although the vGPU
    /// driver never creates VFs on it (recorded-behaviour.md §2, NVIDIA/gpu-operator PR 2502); the
    /// count 16 is a guess. VFs are made only for `sriov_total`.
    pub fn advertised_vfs(&self) -> u32 {
        match (self.sriov_total, self.gpu) {
            (0, "T4") => 16,
            (n, _) => n,
        }
    }

    /// Whether the vGPU driver supports this GPU at all (GeForce: no).
    pub fn vgpu_capable(&self) -> bool {
        !self.gpu.is_empty() && self.vm.is_none()
    }

    /// The mdev type directory name for a parent: the seed's host showed `vfio-pci-<id>` on the
    /// VFs in slot 04 of its A40s (e.g. 0000:e8:04.0), `nvidia-<id>` elsewhere.
    pub fn type_dir(&self, parent: &str, id: u32) -> String {
        let slot04 = parent
            .split(':')
            .nth(2)
            .is_some_and(|s| s.starts_with("04."));
        if self.name == "a40x8" && slot04 {
            format!("vfio-pci-{id}")
        } else {
            format!("nvidia-{id}")
        }
    }

    /// The host bridge directory under `sys/devices` (`pci0001:04` for `0001:04:00.0`).
    pub fn pci_root(&self, addr: &str) -> String {
        let mut parts = addr.split(':');
        let domain = parts.next().unwrap_or("0000");
        let bus = parts.next().unwrap_or("00");
        format!("pci{domain}:{bus}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_addresses_match_the_seed() {
        let m = find("a40x8").unwrap();
        let vfs = m.vfs_of("0000:e8:00.0");
        assert_eq!(vfs.len(), 32);
        assert_eq!(vfs[0], "0000:e8:00.4");
        assert_eq!(vfs[4], "0000:e8:01.0");
        assert_eq!(vfs[31], "0000:e8:04.3");
        assert_eq!(m.type_dir("0000:e8:04.0", 575), "vfio-pci-575");
        assert_eq!(m.type_dir("0000:e8:00.4", 555), "nvidia-555");
        assert!(parse("a40x8-ready").unwrap().1);
    }

    #[test]
    fn rtx_pro_6000_vfs_start_at_function_2_in_domain_0001() {
        let m = find("rtxpro6000-vfio").unwrap();
        let vfs = m.vfs_of("0001:04:00.0");
        assert_eq!(vfs.len(), 48);
        assert_eq!(vfs[0], "0001:04:00.2");
        assert_eq!(vfs[6], "0001:04:01.0");
        assert_eq!(vfs[47], "0001:04:06.1");
        assert_eq!(m.pci_root("0001:04:00.2"), "pci0001:04");
    }
}
