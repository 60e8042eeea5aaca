//! Which VFIO devices a process (QEMU) holds open, read from `/proc/<pid>/fd` links. A VM holds
//! a device through one of two character devices: the legacy group `/dev/vfio/<group>` (the
//! device's `iommu_group` link names it) or, on kernels with iommufd (6.2+, and what
//! vendor-specific VFIO VMs use), the per-device cdev `/dev/vfio/devices/vfioN`, named by the
//! device's own `vfio-dev/vfioN` sysfs directory (recorded-behaviour.md §1).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::host::Host;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VfioHolders {
    /// IOMMU group numbers whose `/dev/vfio/<group>` is open.
    pub groups: BTreeSet<String>,
    /// `vfioN` names whose `/dev/vfio/devices/vfioN` is open.
    pub devices: BTreeSet<String>,
    /// Who holds each: `group:<n>` / `device:vfioN` -> the holders' names ([`holder_name`]).
    pub who: BTreeMap<String, BTreeSet<String>>,
}

/// How a holding process is named to the operator: the VM's name from QEMU's command line
/// (`-name guest=X,...`, as libvirt starts it, or `-name X`), with its pid; else the pid alone.
pub fn holder_name(pid: &str, cmdline: &[u8]) -> String {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name = args
        .iter()
        .position(|a| a == "-name")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| {
            let first = v.split(',').next().unwrap_or("");
            let n = first.strip_prefix("guest=").unwrap_or(first);
            (!n.is_empty() && (first.starts_with("guest=") || !first.contains('='))).then_some(n)
        });
    match name {
        Some(n) => format!("VM {n} (pid {pid})"),
        None => format!("pid {pid}"),
    }
}

impl VfioHolders {
    /// Scan every process's open files. A process that exits meanwhile is skipped.
    pub fn observe(host: &Host) -> VfioHolders {
        let mut held = VfioHolders::default();
        for pid in host.list("proc") {
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let mut name: Option<String> = None;
            for fd in host.list(&format!("proc/{pid}/fd")) {
                if let Some(t) = host.read_link(&format!("proc/{pid}/fd/{fd}")) {
                    if let Some(node) = held.note(&t) {
                        let who = name.get_or_insert_with(|| {
                            let cmdline = host
                                .read_bytes(&format!("proc/{pid}/cmdline"))
                                .unwrap_or_default();
                            holder_name(&pid, &cmdline)
                        });
                        held.who.entry(node).or_default().insert(who.clone());
                    }
                }
            }
        }
        held
    }

    /// Record one open file's path if it is a VFIO group or device node; its key in `who`.
    pub fn note(&mut self, target: &Path) -> Option<String> {
        let Ok(rest) = target.strip_prefix("/dev/vfio") else {
            return None;
        };
        let parts: Vec<String> = rest
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            // `/dev/vfio/vfio` is the container, not a group.
            [g] if g != "vfio" => {
                self.groups.insert(g.clone());
                Some(format!("group:{g}"))
            }
            [d, n] if d == "devices" && n.starts_with("vfio") => {
                self.devices.insert(n.clone());
                Some(format!("device:{n}"))
            }
            _ => None,
        }
    }

    /// Who holds the device whose sysfs directory is `dev_dir`: the names of the processes that
    /// have its group or its iommufd cdev open (empty: nobody).
    pub fn holders(&self, host: &Host, dev_dir: &str) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(g) = host.link_name(&format!("{dev_dir}/iommu_group")) {
            keys.push(format!("group:{g}"));
        }
        for n in host.list(&format!("{dev_dir}/vfio-dev")) {
            keys.push(format!("device:{n}"));
        }
        let mut out: BTreeSet<String> = BTreeSet::new();
        for k in keys {
            out.extend(self.who.get(&k).into_iter().flatten().cloned());
        }
        out.into_iter().collect()
    }

    /// Whether a process holds the device whose sysfs directory is `dev_dir` (under the root):
    /// through its IOMMU group or its own iommufd cdev.
    pub fn holds(&self, host: &Host, dev_dir: &str) -> bool {
        let by_group = host
            .link_name(&format!("{dev_dir}/iommu_group"))
            .is_some_and(|g| self.groups.contains(&g));
        by_group
            || host
                .list(&format!("{dev_dir}/vfio-dev"))
                .iter()
                .any(|n| self.devices.contains(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_iommufd_devices_are_told_apart() {
        let mut h = VfioHolders::default();
        for p in [
            "/dev/vfio/17",
            "/dev/vfio/vfio",
            "/dev/vfio/devices/vfio3",
            "/dev/null",
            "/dev/iommu",
        ] {
            h.note(Path::new(p));
        }
        assert_eq!(h.groups.iter().collect::<Vec<_>>(), vec!["17"]);
        assert_eq!(h.devices.iter().collect::<Vec<_>>(), vec!["vfio3"]);
    }

    #[test]
    fn a_holder_is_named_by_its_vm_else_its_pid() {
        let libvirt = b"/usr/bin/qemu-system-x86_64\0-name\0guest=web-01,debug-threads=on\0-S\0";
        assert_eq!(holder_name("4242", libvirt), "VM web-01 (pid 4242)");
        let plain = b"qemu-system-x86_64\0-name\0db\0";
        assert_eq!(holder_name("7", plain), "VM db (pid 7)");
        assert_eq!(
            holder_name("9", b"qemu-system-x86_64\0-m\0\x34096\0"),
            "pid 9"
        );
        assert_eq!(holder_name("9", b""), "pid 9");
    }
}
