//! Which VFIO devices a process (QEMU) holds open, read from `/proc/<pid>/fd` links. A VM holds
//! a device through one of two character devices: the legacy group `/dev/vfio/<group>` (the
//! device's `iommu_group` link names it) or, on kernels with iommufd (6.2+, and what
//! vendor-specific VFIO VMs use), the per-device cdev `/dev/vfio/devices/vfioN`, named by the
//! device's own `vfio-dev/vfioN` sysfs directory (recorded-behaviour.md §1).

use std::collections::BTreeSet;
use std::path::Path;

use crate::host::Host;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VfioHolders {
    /// IOMMU group numbers whose `/dev/vfio/<group>` is open.
    pub groups: BTreeSet<String>,
    /// `vfioN` names whose `/dev/vfio/devices/vfioN` is open.
    pub devices: BTreeSet<String>,
}

impl VfioHolders {
    /// Scan every process's open files. A process that exits meanwhile is skipped.
    pub fn observe(host: &Host) -> VfioHolders {
        let mut held = VfioHolders::default();
        for pid in host.list("proc") {
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            for fd in host.list(&format!("proc/{pid}/fd")) {
                if let Some(t) = host.read_link(&format!("proc/{pid}/fd/{fd}")) {
                    held.note(&t);
                }
            }
        }
        held
    }

    /// Record one open file's path if it is a VFIO group or device node.
    pub fn note(&mut self, target: &Path) {
        let Ok(rest) = target.strip_prefix("/dev/vfio") else {
            return;
        };
        let parts: Vec<String> = rest
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            // `/dev/vfio/vfio` is the container, not a group.
            [g] if g != "vfio" => {
                self.groups.insert(g.clone());
            }
            [d, n] if d == "devices" && n.starts_with("vfio") => {
                self.devices.insert(n.clone());
            }
            _ => {}
        }
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
}
