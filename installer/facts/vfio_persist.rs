//! Observe the persistent vfio-pci bindings of the host's NVIDIA GPUs (see
//! [`crate::vfio_persist`]): the kernel command line running now and the one the boot
//! configuration gives the next boot, `/etc/modprobe.d/*.conf`, `/etc/driverctl.d/`,
//! `/etc/udev/rules.d/*.rules`. Read-only.

use std::collections::BTreeMap;

use serde::Serialize;

use super::gpus::Gpu;
use super::system::BootLoader;
use crate::edit::{grub_default, kernel_cmdline_file};
use crate::host::Host;
use crate::vfio_persist::{self as vp, Binding};

pub const MODPROBE_DIR: &str = "/etc/modprobe.d";
pub const DRIVERCTL_DIR: &str = "/etc/driverctl.d";
pub const UDEV_RULES_DIR: &str = "/etc/udev/rules.d";
pub const PROC_CMDLINE: &str = "/proc/cmdline";

#[derive(Clone, Debug, Default, Serialize)]
pub struct VfioPersist {
    pub bindings: Vec<Binding>,
    /// The text of every modprobe.d, driverctl and udev file that holds a binding, by path,
    /// for the edit that neutralises it.
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
}

pub fn gpus_of(gpus: &[Gpu]) -> Vec<vp::Gpu> {
    gpus.iter()
        .map(|g| vp::Gpu {
            address: g.address.clone(),
            device_id: g.device_id,
            subsystem_vendor: g.subsystem_vendor,
            subsystem_id: g.subsystem_id,
        })
        .collect()
}

/// The files in `dir` whose name ends in `ext` (all when empty), as (path, text), by name.
fn files_in(host: &Host, dir: &str, ext: &str) -> Vec<(String, String, String)> {
    let mut names = host.list(dir);
    names.sort();
    names
        .into_iter()
        .filter(|n| n.ends_with(ext))
        .filter_map(|n| {
            let p = format!("{dir}/{n}");
            host.read(&p).ok().map(|t| (p, n, t))
        })
        .collect()
}

/// The kernel command lines the boot configuration gives the next boot, by file.
pub fn boot_cmdlines(host: &Host, boot: &BootLoader) -> Vec<(String, String)> {
    match boot {
        BootLoader::DebianGrub { dropins } => std::iter::once("/etc/default/grub".to_string())
            .chain(dropins.iter().cloned())
            .filter_map(|p| {
                let t = host.read(&p).ok()?;
                let line = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]
                    .iter()
                    .filter_map(|v| grub_default::read_var(&t, v))
                    .collect::<Vec<_>>()
                    .join(" ");
                Some((p, line))
            })
            .collect(),
        BootLoader::Grubby => files_in(host, "/boot/loader/entries", ".conf")
            .into_iter()
            .map(|(p, _, t)| (p, kernel_cmdline_file::bls_options(&t)))
            .collect(),
        BootLoader::KernelCmdline { .. } => host
            .read("/etc/kernel/cmdline")
            .ok()
            .map(|t| vec![("/etc/kernel/cmdline".to_string(), t)])
            .unwrap_or_default(),
        BootLoader::Unknown => Vec::new(),
    }
}

pub fn observe(host: &Host, gpus: &[Gpu], boot: &BootLoader, cmdline: &str) -> VfioPersist {
    let gpus = gpus_of(gpus);
    let mut out = VfioPersist::default();
    if gpus.is_empty() {
        return out;
    }
    for (file, line) in boot_cmdlines(host, boot) {
        out.bindings
            .extend(vp::cmdline_bindings(&file, &line, &gpus));
    }
    // The running kernel's own: reported when the boot configuration no longer gives it.
    for b in vp::cmdline_bindings(PROC_CMDLINE, cmdline, &gpus) {
        if !out.bindings.iter().any(|x| x.text == b.text) {
            out.bindings.push(b);
        }
    }
    let keep = |out: &mut VfioPersist, path: String, text: String, found: Vec<Binding>| {
        if !found.is_empty() {
            out.bindings.extend(found);
            out.files.insert(path, text);
        }
    };
    for (p, _, t) in files_in(host, MODPROBE_DIR, ".conf") {
        let found = vp::modprobe_bindings(&p, &t, &gpus);
        keep(&mut out, p, t, found);
    }
    for (p, n, t) in files_in(host, DRIVERCTL_DIR, "") {
        let found: Vec<Binding> = vp::driverctl_binding(&p, &n, &t, &gpus)
            .into_iter()
            .collect();
        keep(&mut out, p, t, found);
    }
    for (p, _, t) in files_in(host, UDEV_RULES_DIR, ".rules") {
        let found = vp::udev_bindings(&p, &t, &gpus);
        keep(&mut out, p, t, found);
    }
    out
}
