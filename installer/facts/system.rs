//! CPU, firmware, kernel command line, OS, boot loader, Secure Boot, modules, driver, rc.local.

use serde::Serialize;

use super::HostFacts;
use crate::host::Host;
use crate::sysfs_parse::{
    blacklists_nouveau, parse_modules, parse_nvidia_version, parse_os_release,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

/// From `/etc/os-release` ID/ID_LIKE; also which package of the driver zip fits this host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Debian, Ubuntu, Proxmox: prefers a `.deb` when the zip has one.
    Debian,
    /// RHEL, Rocky, Alma, Fedora: prefers an `.rpm` when the zip has one.
    Rhel,
    /// Anything else: the `.run`.
    #[default]
    Other,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Os {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
    pub family: OsFamily,
    pub proxmox: bool,
}

/// Where the kernel command line is configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootLoader {
    /// Debian/Ubuntu GRUB: `/etc/default/grub` plus `grub.d/*.cfg` drop-ins, `update-grub`.
    DebianGrub {
        dropins: Vec<String>,
    },
    /// RHEL-family BLS entries edited with `grubby`.
    Grubby,
    /// systemd-boot with `/etc/kernel/cmdline` (Proxmox: `proxmox-boot-tool refresh`).
    KernelCmdline {
        proxmox: bool,
    },
    Unknown,
}

impl BootLoader {
    pub fn describe(&self) -> String {
        match self {
            BootLoader::DebianGrub { dropins } if dropins.is_empty() => {
                "GRUB (/etc/default/grub, update-grub)".into()
            }
            BootLoader::DebianGrub { dropins } => format!(
                "GRUB (/etc/default/grub and {}, update-grub)",
                dropins.join(", ")
            ),
            BootLoader::Grubby => "GRUB with BLS entries (grubby)".into(),
            BootLoader::KernelCmdline { proxmox: true } => {
                "systemd-boot (/etc/kernel/cmdline, proxmox-boot-tool)".into()
            }
            BootLoader::KernelCmdline { proxmox: false } => {
                "systemd-boot (/etc/kernel/cmdline, kernel-install)".into()
            }
            BootLoader::Unknown => "unknown boot loader".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Modules {
    pub nouveau: bool,
    pub nvidia: bool,
    pub nvidia_vgpu_vfio: bool,
    pub vfio_pci: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Driver {
    /// Version of the loaded nvidia module.
    pub loaded_version: Option<String>,
    /// Version of the installed driver's files: the one DKMS has the sources of
    /// (`/usr/src/nvidia-<version>/dkms.conf`, which the `.run`'s `--dkms` and NVIDIA's packages
    /// register), else the loaded one. Differs from `loaded_version` between an install and the
    /// reboot that loads it.
    pub installed_version: Option<String>,
    /// The vGPU manager's unit file exists (the vGPU host driver is installed).
    pub vgpu_mgr_unit: bool,
    /// `systemctl is-active nvidia-vgpu-mgr` said active (None: could not ask).
    pub vgpu_mgr_active: Option<bool>,
    pub sriov_manage: bool,
    /// The state file says a driver install started and never finished: the files it left are
    /// a partial install.
    pub install_unfinished: bool,
}

impl Driver {
    pub fn installed(&self) -> bool {
        self.vgpu_mgr_unit && !self.install_unfinished
    }
}

/// A line of `/etc/rc.local` that creates vGPUs or enables SR-IOV.
#[derive(Clone, Debug, Serialize)]
pub struct RcLocalLine {
    pub line: usize,
    pub text: String,
}

pub const SRIOV_MANAGE: &str = "usr/lib/nvidia/sriov-manage";
pub const ACTIVE_PROFILE: &str = "etc/vgpuctl/profile.toml";
pub const RESTORE_UNIT: &str = "vgpuctl-restore.service";
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

pub fn unit_exists(host: &Host, unit: &str) -> bool {
    UNIT_DIRS
        .iter()
        .any(|d| host.exists(&format!("{d}/{unit}")))
}

/// The host's name from `/etc/hostname` (its first line), as platforms that name nodes read it.
pub fn hostname(host: &Host) -> Option<String> {
    let text = host.read("etc/hostname").ok()?;
    let name = text.lines().next()?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// Everything but the GPUs and mdev devices, which `facts::observe` adds.
pub fn observe(host: &Host) -> HostFacts {
    let cpuinfo = host.read("proc/cpuinfo").unwrap_or_default();
    let vendor_line = cpuinfo
        .lines()
        .find(|l| l.starts_with("vendor_id"))
        .unwrap_or("");
    let cpu_vendor = if vendor_line.contains("GenuineIntel") {
        CpuVendor::Intel
    } else if vendor_line.contains("AuthenticAMD") {
        CpuVendor::Amd
    } else {
        CpuVendor::Other
    };
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let firmware_iommu = ["DMAR", "IVRS"]
        .into_iter()
        .find(|t| host.exists(&format!("sys/firmware/acpi/tables/{t}")))
        .map(str::to_string);
    let modules = parse_modules(&host.read("proc/modules").unwrap_or_default());
    let has = |m: &str| modules.iter().any(|x| x == m);
    let os = observe_os(host);
    let loaded_version = host
        .read("sys/module/nvidia/version")
        .ok()
        .or_else(|| host.read("proc/driver/nvidia/version").ok())
        .and_then(|t| parse_nvidia_version(&t))
        .filter(|_| has("nvidia"));
    let vgpu_mgr_unit = unit_exists(host, "nvidia-vgpu-mgr.service");
    let installed_version = if vgpu_mgr_unit {
        dkms_version(host).or_else(|| loaded_version.clone())
    } else {
        None
    };
    let vgpu_mgr_active = if vgpu_mgr_unit {
        systemctl_is(host, "is-active", "nvidia-vgpu-mgr.service")
    } else {
        Some(false)
    };
    HostFacts {
        root: host.root().display().to_string(),
        simulated: host.reach() == crate::host::Reach::Simulated,
        gpus: Vec::new(),
        mdevs: Vec::new(),
        cpu_vendor,
        cpu_virt: flags.iter().any(|f| *f == "vmx" || *f == "svm"),
        is_vm: flags.contains(&"hypervisor"),
        dmi_vendor: host.read_trim("sys/class/dmi/id/sys_vendor"),
        firmware_iommu,
        iommu_active: !host.list("sys/kernel/iommu_groups").is_empty(),
        cmdline: host.read_trim("proc/cmdline").unwrap_or_default(),
        kernel_release: host.read_trim("proc/sys/kernel/osrelease"),
        boot_id: host.read_trim("proc/sys/kernel/random/boot_id"),
        boot: observe_boot(host, &os),
        os,
        secure_boot: observe_secure_boot(host),
        modules: Modules {
            nouveau: has("nouveau"),
            nvidia: has("nvidia"),
            nvidia_vgpu_vfio: has("nvidia_vgpu_vfio"),
            vfio_pci: has("vfio_pci"),
        },
        nouveau_blacklisted: host
            .list("etc/modprobe.d")
            .iter()
            .filter(|f| f.ends_with(".conf"))
            .any(|f| {
                host.read(&format!("etc/modprobe.d/{f}"))
                    .map(|t| blacklists_nouveau(&t))
                    .unwrap_or(false)
            }),
        driver: Driver {
            loaded_version,
            installed_version,
            install_unfinished: crate::state::driver_install_unfinished(host),
            vgpu_mgr_unit,
            vgpu_mgr_active,
            sriov_manage: host.exists(SRIOV_MANAGE),
        },
        rc_local: observe_rc_local(host),
        restore_unit_enabled: host.exists(&format!(
            "etc/systemd/system/multi-user.target.wants/{RESTORE_UNIT}"
        )),
        // Pins or an active profile (an older release kept the pins in the profile copy).
        active_profile: host.exists(ACTIVE_PROFILE) || host.exists(crate::pins::PATH),
        vfio_persist: Default::default(),
        kernels: Default::default(),
    }
}

/// The NVIDIA driver version DKMS holds the sources of; the newest when several are registered
/// (an install of another version that has not removed the old registration).
fn dkms_version(host: &Host) -> Option<String> {
    host.list("usr/src")
        .iter()
        .filter_map(|d| d.strip_prefix("nvidia-"))
        .filter(|v| host.exists(&format!("usr/src/nvidia-{v}/dkms.conf")))
        .map(str::to_string)
        .max_by_key(|v| {
            v.split('.')
                .map(|n| n.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
        })
}

/// Ask systemd (read-only). None when it cannot be asked (no systemd, or a foreign root).
pub fn systemctl_is(host: &Host, verb: &str, unit: &str) -> Option<bool> {
    if !host.reach().runs_programs() {
        return None;
    }
    let out = host
        .run(&crate::host::Cmd::new("systemctl").arg(verb).arg(unit))
        .ok()?;
    Some(out.success())
}

pub fn observe_os(host: &Host) -> Os {
    let text = host
        .read("etc/os-release")
        .or_else(|_| host.read("usr/lib/os-release"))
        .unwrap_or_default();
    let m = parse_os_release(&text);
    let get = |k: &str| m.get(k).cloned().unwrap_or_default();
    let id = get("ID");
    let like = get("ID_LIKE");
    let words: Vec<&str> = std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .collect();
    let family = if words.iter().any(|w| matches!(*w, "debian" | "ubuntu")) {
        OsFamily::Debian
    } else if words
        .iter()
        .any(|w| matches!(*w, "rhel" | "fedora" | "centos" | "rocky" | "almalinux"))
    {
        OsFamily::Rhel
    } else {
        OsFamily::Other
    };
    Os {
        proxmox: host.exists("usr/bin/pveversion") || host.exists("etc/pve"),
        pretty_name: get("PRETTY_NAME"),
        version_id: get("VERSION_ID"),
        id,
        family,
    }
}

fn observe_boot(host: &Host, os: &Os) -> BootLoader {
    let proxmox_tool = host.exists("usr/sbin/proxmox-boot-tool");
    if host.exists("etc/kernel/cmdline") && (proxmox_tool || !host.exists("etc/default/grub")) {
        return BootLoader::KernelCmdline {
            proxmox: proxmox_tool,
        };
    }
    if os.family == OsFamily::Rhel
        || (host.exists("usr/sbin/grubby") && !host.exists("usr/sbin/update-grub"))
    {
        return BootLoader::Grubby;
    }
    if host.exists("etc/default/grub") {
        let dropins = host
            .list("etc/default/grub.d")
            .into_iter()
            .filter(|f| f.ends_with(".cfg"))
            .map(|f| format!("/etc/default/grub.d/{f}"))
            .collect();
        return BootLoader::DebianGrub { dropins };
    }
    BootLoader::Unknown
}

/// The SecureBoot EFI variable: 4 attribute bytes then the value byte.
fn observe_secure_boot(host: &Host) -> Option<bool> {
    let dir = "sys/firmware/efi/efivars";
    let name = host
        .list(dir)
        .into_iter()
        .find(|n| n.starts_with("SecureBoot-"))?;
    let bytes = host.read_bytes(&format!("{dir}/{name}")).ok()?;
    bytes.get(4).map(|b| *b == 1)
}

fn observe_rc_local(host: &Host) -> Vec<RcLocalLine> {
    let Ok(text) = host.read("etc/rc.local") else {
        return Vec::new();
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.starts_with('#')
                && ((t.contains("mdev_supported_types") && t.contains("create"))
                    || t.contains("sriov-manage"))
        })
        .map(|(i, l)| RcLocalLine {
            line: i + 1,
            text: l.to_string(),
        })
        .collect()
}
