//! Kernels and the NVIDIA module built for each: the running kernel and the one the boot loader
//! starts next, whether an `nvidia.ko` exists for it and whether its headers are installed
//! (DKMS can build the module for a kernel only with its headers: recorded-behaviour.md §7; a
//! host that boots a kernel without the module has no vGPUs at all).
//!
//! [`observe`] reads the host; everything else here is pure.

use serde::Serialize;

use crate::host::Host;

use super::system::{BootLoader, Os, OsFamily};

/// One kernel as seen for the NVIDIA module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub version: String,
    /// An `nvidia.ko` (any compression) is installed for it.
    pub module_built: bool,
    /// `/lib/modules/<v>/build` leads to its headers.
    pub headers: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kernels {
    pub running: Option<Kernel>,
    /// The kernel the boot loader starts next (None: not found out).
    pub next: Option<Kernel>,
    /// Driver versions registered with DKMS (it rebuilds those for a new kernel).
    pub dkms: Vec<String>,
}

/// Where an installed NVIDIA module can live under `/lib/modules/<v>/`: DKMS's `updates/dkms`
/// (Debian/Ubuntu) or `extra` (RHEL), and the `.run`'s own `kernel/drivers/video` without DKMS.
const MODULE_DIRS: [&str; 4] = ["updates/dkms", "extra", "kernel/drivers/video", "updates"];
const MODULE_NAMES: [&str; 3] = ["nvidia.ko", "nvidia.ko.xz", "nvidia.ko.zst"];

pub fn observe(host: &Host, boot: &BootLoader, running: Option<&str>) -> Kernels {
    let kernel = |v: &str| Kernel {
        version: v.to_string(),
        module_built: MODULE_DIRS.iter().any(|d| {
            MODULE_NAMES
                .iter()
                .any(|n| host.exists(&format!("lib/modules/{v}/{d}/{n}")))
        }),
        // Resolved inside the root: the link is absolute (/usr/src/linux-headers-<v>).
        headers: host.is_dir(&format!("lib/modules/{v}/build")),
    };
    let installed: Vec<String> = host
        .list("boot")
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(String::from))
        .filter(|v| host.is_dir(&format!("lib/modules/{v}")))
        .collect();
    let next = next_boot(host, boot, &installed).or_else(|| newest(&installed));
    Kernels {
        running: running.map(kernel),
        next: next.as_deref().map(kernel),
        dkms: host
            .list("usr/src")
            .iter()
            .filter_map(|n| n.strip_prefix("nvidia-"))
            .filter(|v| host.exists(&format!("usr/src/nvidia-{v}/dkms.conf")))
            .map(String::from)
            .collect(),
    }
}

/// The kernel the boot loader starts next, from its own configuration.
fn next_boot(host: &Host, boot: &BootLoader, installed: &[String]) -> Option<String> {
    match boot {
        BootLoader::DebianGrub { .. } => ["boot/grub/grub.cfg", "boot/grub2/grub.cfg"]
            .iter()
            .find_map(|p| host.read(p).ok())
            .and_then(|cfg| grub_default_kernel(&cfg)),
        BootLoader::Grubby => {
            let entries = host.list("boot/loader/entries");
            let saved = host
                .read("boot/grub2/grubenv")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("saved_entry=").map(|s| s.trim().to_string()))
                })
                .filter(|s| !s.is_empty());
            let read_entry = |name: &str| {
                host.read(&format!("boot/loader/entries/{name}"))
                    .ok()
                    .and_then(|t| bls_kernel(&t))
            };
            match saved {
                Some(id) => read_entry(&format!("{id}.conf")),
                // Without a saved entry GRUB's BLS support starts the newest entry.
                None => newest(
                    &entries
                        .iter()
                        .filter_map(|e| read_entry(e))
                        .collect::<Vec<_>>(),
                ),
            }
        }
        _ => newest(installed),
    }
}

/// The kernel of grub.cfg's first `linux` line: the default entry when `set default="0"` (what
/// `GRUB_DEFAULT=0` writes; grub-mkconfig lists the newest kernel first).
pub fn grub_default_kernel(cfg: &str) -> Option<String> {
    let default_zero = cfg
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("set default="))
        .map(|v| v.trim_matches('"') == "0")
        .unwrap_or(true);
    if !default_zero {
        return None;
    }
    cfg.lines()
        .map(str::trim)
        .find(|l| l.starts_with("linux\t") || l.starts_with("linux "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(image_version)
}

/// A BLS entry's kernel (`linux /vmlinuz-<v>`).
pub fn bls_kernel(entry: &str) -> Option<String> {
    entry
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("linux"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(image_version)
}

/// `/boot/vmlinuz-6.8.0-60-generic` -> `6.8.0-60-generic`.
fn image_version(path: &str) -> Option<String> {
    path.rsplit_once("vmlinuz-")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

fn newest(versions: &[String]) -> Option<String> {
    versions.iter().max_by(|a, b| version_cmp(a, b)).cloned()
}

/// Version order: runs of digits compare as numbers (`6.8.0-100` after `6.8.0-60`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, t)) if *ld == d => t.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = if x.0 && y.0 {
            let (p, q) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
            p.len().cmp(&q.len()).then_with(|| p.cmp(q))
        } else {
            x.1.cmp(&y.1)
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The package that installs a kernel's headers on this OS.
pub fn headers_package(os: &Os, version: &str) -> String {
    if os.proxmox {
        format!("proxmox-headers-{version}")
    } else if os.family == OsFamily::Rhel {
        format!("kernel-devel-{version}")
    } else {
        format!("linux-headers-{version}")
    }
}

/// The command that installs it.
pub fn install_command(os: &Os, version: &str) -> String {
    let pkg = headers_package(os, version);
    if os.family == OsFamily::Rhel {
        format!("dnf install {pkg}")
    } else {
        format!("apt-get install {pkg}")
    }
}

/// `dkms autoinstall -k <v>`: builds every registered module for that kernel.
pub fn build_args(version: &str) -> [String; 3] {
    ["autoinstall".into(), "-k".into(), version.into()]
}

/// What the kernel the boot loader starts next needs before a reboot, when the vGPU driver is
/// (or is being) installed and that kernel is not the running one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextBoot {
    /// Nothing: its module is built (or it is the running kernel, or no driver).
    Ready,
    /// DKMS can build it now.
    Build { version: String },
    /// Its headers are missing: the package to install.
    NoHeaders { version: String, package: String },
    /// The driver is not registered with DKMS, so nothing rebuilds it for that kernel.
    NoDkms { version: String },
}

pub fn next_boot_need(k: &Kernels, os: &Os, driver: bool) -> NextBoot {
    let Some(next) = &k.next else {
        return NextBoot::Ready;
    };
    let is_running = k
        .running
        .as_ref()
        .is_some_and(|r| r.version == next.version);
    if !driver || is_running {
        return NextBoot::Ready;
    }
    need(next, k, os)
}

/// The same for the running kernel (booted without a module: nothing loads until one is built
/// and the host reboots).
pub fn running_need(k: &Kernels, os: &Os, driver: bool) -> NextBoot {
    match &k.running {
        Some(r) if driver => need(r, k, os),
        _ => NextBoot::Ready,
    }
}

fn need(kernel: &Kernel, k: &Kernels, os: &Os) -> NextBoot {
    if kernel.module_built {
        return NextBoot::Ready;
    }
    let version = kernel.version.clone();
    if !kernel.headers {
        NextBoot::NoHeaders {
            package: headers_package(os, &version),
            version,
        }
    } else if k.dkms.is_empty() {
        NextBoot::NoDkms { version }
    } else {
        NextBoot::Build { version }
    }
}

/// At boot, before waiting for any GPU: why restore cannot work on this kernel (no nvidia module
/// built for it, none loaded), or None. Reads only what it needs. Only pins that need NVIDIA's
/// driver count: an mdev parent of another driver (mtty, a non-NVIDIA PF's SR-IOV) does not wait
/// for an nvidia module and must not be failed for the lack of one.
pub fn boot_blocker(host: &Host, pins: &crate::pins::Pins) -> Option<String> {
    if !needs_nvidia(host, pins) {
        return None;
    }
    let running = host.read_trim("proc/sys/kernel/osrelease")?;
    let loaded = host
        .read("proc/modules")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().next() == Some("nvidia"))
        })
        .unwrap_or(false);
    if loaded {
        return None;
    }
    let k = observe(host, &BootLoader::Unknown, Some(&running));
    missing_module_cause(&k, &super::system::observe_os(host))
}

/// Whether any pin is made by NVIDIA's driver: a vendor-specific VFIO vGPU, an mdev type of the
/// `nvidia-<id>` family (the only names NVIDIA's mdev types have), a vGPU on an NVIDIA PCI
/// function, or an SR-IOV PF of NVIDIA's (vendor 0x10de; one not enumerated is assumed to be).
fn needs_nvidia(host: &Host, pins: &crate::pins::Pins) -> bool {
    let nvidia_pci = |addr: &str| {
        host.read_trim(&format!("sys/bus/pci/devices/{addr}/vendor"))
            .is_none_or(|v| v.eq_ignore_ascii_case("0x10de"))
    };
    pins.vgpus.iter().any(|v| {
        v.interface == "vendor-vfio"
            || v.type_id.starts_with("nvidia-")
            || v.gi_profile.is_some()
            || v.gpu.as_deref().is_some_and(|g| {
                host.read_trim(&format!("sys/bus/pci/devices/{g}/vendor"))
                    .is_some_and(|v| v.eq_ignore_ascii_case("0x10de"))
            })
    }) || pins.sriov.iter().any(|pf| nvidia_pci(pf))
}

/// Restore's words when the running kernel has no nvidia module although vGPUs are pinned.
pub fn missing_module_cause(k: &Kernels, os: &Os) -> Option<String> {
    let r = k.running.as_ref()?;
    if r.module_built {
        return None;
    }
    let v = &r.version;
    Some(if r.headers {
        format!(
            "no nvidia module for kernel {v}: run `dkms autoinstall -k {v}` (or `vgpuctl setup`), \
             then reboot"
        )
    } else {
        format!(
            "no nvidia module for kernel {v}: install {} and run `vgpuctl setup`",
            headers_package(os, v)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str, built: bool, headers: bool) -> Kernel {
        Kernel {
            version: v.into(),
            module_built: built,
            headers,
        }
    }

    fn ubuntu() -> Os {
        Os {
            family: OsFamily::Debian,
            ..Os::default()
        }
    }

    #[test]
    fn grub_default_is_the_first_linux_line() {
        let cfg = "set default=\"0\"\nmenuentry 'Ubuntu' {\n\tlinux\t/boot/vmlinuz-6.8.0-90-generic root=x ro\n}\n\
                   submenu 'Advanced' {\n\tmenuentry 'x' {\n\t\tlinux\t/boot/vmlinuz-6.8.0-60-generic ro\n\t}\n}\n";
        assert_eq!(
            grub_default_kernel(cfg).as_deref(),
            Some("6.8.0-90-generic")
        );
        let saved = cfg.replace("set default=\"0\"", "set default=\"${saved_entry}\"");
        assert_eq!(grub_default_kernel(&saved), None);
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_cmp("6.8.0-100-generic", "6.8.0-60-generic").is_gt());
        assert!(version_cmp("5.14.0-427.el9", "5.14.0-70.el9").is_gt());
    }

    #[test]
    fn next_kernel_needs() {
        let mut ks = Kernels {
            running: Some(k("6.8.0-60-generic", true, true)),
            next: Some(k("6.8.0-90-generic", false, false)),
            dkms: vec!["550.163.02".into()],
        };
        assert_eq!(
            next_boot_need(&ks, &ubuntu(), true),
            NextBoot::NoHeaders {
                version: "6.8.0-90-generic".into(),
                package: "linux-headers-6.8.0-90-generic".into()
            }
        );
        assert_eq!(next_boot_need(&ks, &ubuntu(), false), NextBoot::Ready);
        ks.next = Some(k("6.8.0-90-generic", false, true));
        assert_eq!(
            next_boot_need(&ks, &ubuntu(), true),
            NextBoot::Build {
                version: "6.8.0-90-generic".into()
            }
        );
        ks.dkms.clear();
        assert!(matches!(
            next_boot_need(&ks, &ubuntu(), true),
            NextBoot::NoDkms { .. }
        ));
        ks.next = ks.running.clone();
        assert_eq!(next_boot_need(&ks, &ubuntu(), true), NextBoot::Ready);
    }

    #[test]
    fn header_packages_per_os() {
        let rhel = Os {
            family: OsFamily::Rhel,
            ..Os::default()
        };
        let pve = Os {
            family: OsFamily::Debian,
            proxmox: true,
            ..Os::default()
        };
        assert_eq!(
            headers_package(&rhel, "5.14.0-427.13.1.el9_4.x86_64"),
            "kernel-devel-5.14.0-427.13.1.el9_4.x86_64"
        );
        assert_eq!(
            headers_package(&pve, "6.8.12-4-pve"),
            "proxmox-headers-6.8.12-4-pve"
        );
        assert_eq!(
            headers_package(&ubuntu(), "6.8.0-60-generic"),
            "linux-headers-6.8.0-60-generic"
        );
    }

    #[test]
    fn restore_names_the_missing_module() {
        let ks = Kernels {
            running: Some(k("6.8.0-90-generic", false, false)),
            ..Kernels::default()
        };
        assert_eq!(
            missing_module_cause(&ks, &ubuntu()).unwrap(),
            "no nvidia module for kernel 6.8.0-90-generic: install linux-headers-6.8.0-90-generic and run `vgpuctl setup`"
        );
    }

    /// The real-boot VM test's host: mtty mdevs and an igb PF with SR-IOV, no NVIDIA driver at
    /// all. Restore must make them; the same pins on NVIDIA's types wait for an nvidia module.
    #[test]
    fn only_pins_of_nvidia_s_driver_need_its_module() {
        use crate::profile::SavedVgpu;
        let d = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("proc/sys/kernel/osrelease", "6.1.0-57-amd64\n");
        put(
            "proc/modules",
            "mtty 24576 0 - Live 0x0\nigb 290816 0 - Live 0x0\n",
        );
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-57-amd64/updates")).unwrap();
        put("sys/bus/pci/devices/0000:01:00.0/vendor", "0x8086\n");
        let host = Host::real(d.path());
        let mtty = SavedVgpu {
            uuid: "3e1182a6-d353-46ff-ba8f-24d57321d5a8".into(),
            type_id: "mtty-2".into(),
            type_name: "Dual port serial".into(),
            parent: "mtty".into(),
            gpu: None,
            interface: "mdev".into(),
            gi_profile: None,
        };
        let mut pins = crate::pins::Pins {
            sriov: vec!["0000:01:00.0".into()],
            mixed_size: vec![],
            vgpus: vec![mtty.clone()],
        };
        assert_eq!(boot_blocker(&host, &pins), None);
        pins.vgpus.push(SavedVgpu {
            type_id: "nvidia-558".into(),
            type_name: "NVIDIA A40-24Q".into(),
            parent: "0000:e8:00.4".into(),
            gpu: Some("0000:e8:00.0".into()),
            ..mtty
        });
        assert_eq!(
            boot_blocker(&host, &pins).unwrap(),
            "no nvidia module for kernel 6.1.0-57-amd64: install linux-headers-6.1.0-57-amd64 and \
             run `vgpuctl setup`"
        );
        // SR-IOV alone (Proxmox's default): an NVIDIA PF, or one not enumerated yet, waits too.
        pins.vgpus.clear();
        pins.sriov = vec!["0000:e8:00.0".into()];
        assert!(boot_blocker(&host, &pins).is_some());
    }
}
