//! `vgpuctl uninstall --all` (issue 17 item 4): the plan that undoes what setup did, from the
//! facts, the first backups and the record of what setup ran. Pure: the command reads the host,
//! this decides. A vGPU a VM uses is never touched, nor the SR-IOV of its GPU.

use super::observe::Facts;
use super::plan::{Action, Plan, Unpin};
use crate::facts::BootLoader;
use crate::host::Cmd;

/// A file setup replaced: its first version (kept under /var/lib/vgpuctl/backups) and now.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    /// Absolute path ("/etc/default/grub").
    pub path: String,
    pub original: Vec<u8>,
    /// None: the file is gone now (it is written back).
    pub current: Option<Vec<u8>>,
}

/// What the command read for the plan besides [`Facts`].
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub backups: Vec<Backup>,
    /// Files setup creates (absolute paths) that exist and have no backup: setup made them.
    pub created: Vec<String>,
    /// How to remove the driver vgpuctl installed: the installer's own uninstaller.
    pub driver_uninstall: Option<Cmd>,
}

/// Does a change to `path` take effect only through the boot loader's configuration?
fn boot_config(path: &str) -> bool {
    path.starts_with("/etc/default/grub") || path == "/etc/kernel/cmdline"
}

/// Does the initramfs carry a copy of `path` (modprobe.d: the nouveau blacklist, module options)?
fn in_initramfs(path: &str) -> bool {
    path.starts_with("/etc/modprobe.d/")
}

pub fn plan(f: &Facts, found: &Found) -> Plan {
    let mut plan = Plan::default();
    let pins = f.pins.clone().unwrap_or_default();
    // 1. The pinned vGPUs no VM uses.
    let live = f.vgpus();
    let mut removed = Vec::new();
    let mut kept_on: Vec<String> = Vec::new();
    for v in &live {
        let Some(pin) = pins.vgpus.iter().find(|p| super::retype::pins_it(p, v)) else {
            if let Some(g) = &v.gpu {
                kept_on.push(g.clone());
            }
            plan.notes.push(format!(
                "{} ({} on {}) is not pinned by vgpuctl: left alone",
                v.uuid.as_deref().unwrap_or("a vGPU"),
                v.type_name,
                v.parent
            ));
            continue;
        };
        if v.in_use {
            kept_on.extend(v.gpu.clone());
            plan.notes.push(format!(
                "{} ({} on {}) is in use by a VM: left alone, and its GPU keeps SR-IOV",
                pin.uuid, v.type_name, v.parent
            ));
            continue;
        }
        removed.push(Unpin {
            uuid: Some(pin.uuid.clone()),
            type_name: v.type_name.clone(),
            parent: v.parent.clone(),
            gpu: v.gpu.clone().unwrap_or_default(),
            interface: v.interface,
            live: true,
            pinned: true,
        });
    }
    if !removed.is_empty() {
        plan.push(
            "uninstall:vgpus",
            format!("Remove {} vGPU(s) no VM uses", removed.len()),
            Action::RemoveVgpus { devices: removed },
        );
    }
    // 2. SR-IOV on the GPUs vgpuctl enabled it on (by setup, or pinned for restore).
    for gpu in &f.host.gpus {
        let pf = &gpu.address;
        let ours = f.state.done.iter().any(|d| *d == format!("sriov:{pf}"))
            || pins.sriov.contains(pf)
            || pins.vgpus.iter().any(|p| p.gpu.as_deref() == Some(pf));
        if !ours || gpu.sriov_numvfs.unwrap_or(0) == 0 {
            continue;
        }
        if kept_on.contains(pf) {
            continue;
        }
        plan.push(
            format!("uninstall:sriov:{pf}"),
            format!("Disable SR-IOV on {} {pf}", gpu.model.name),
            Action::Run(Cmd::new(crate::vgpu::sriov::SRIOV_MANAGE).arg("-d").arg(pf)),
        );
    }
    // 3. The files setup replaced, back to their first version; those it created, removed.
    let mut boot = false;
    let mut initramfs = false;
    for b in &found.backups {
        if b.current.as_ref() == Some(&b.original) {
            continue;
        }
        boot |= boot_config(&b.path);
        initramfs |= in_initramfs(&b.path);
        plan.push(
            format!("uninstall:restore:{}", b.path),
            format!("Restore {} from its first backup", b.path),
            Action::WriteBytes {
                path: b.path.clone(),
                before: b.current.clone().unwrap_or_default(),
                after: b.original.clone(),
                mode: 0o644,
            },
        );
    }
    for path in &found.created {
        boot |= boot_config(path);
        initramfs |= in_initramfs(path);
        plan.push(
            format!("uninstall:remove:{path}"),
            format!("Remove {path} (vgpuctl created it)"),
            Action::RemoveFile { path: path.clone() },
        );
    }
    // 4. The boot loader and the initramfs read those files only when regenerated.
    if boot {
        let regen = match &f.boot {
            BootLoader::DebianGrub { .. } => Some(Cmd::new("update-grub")),
            BootLoader::KernelCmdline { proxmox: true } => {
                Some(Cmd::new("proxmox-boot-tool").arg("refresh"))
            }
            _ => None,
        };
        match regen {
            Some(cmd) => plan.push(
                "uninstall:bootcfg",
                "Regenerate the boot configuration",
                Action::Run(cmd),
            ),
            None => plan.notes.push(
                "the boot loader's configuration is not regenerated by vgpuctl on this host: \
                 regenerate it by hand"
                    .into(),
            ),
        }
    }
    if f.state.done.iter().any(|d| d == "iommu:grubby") {
        plan.notes.push(
            "the IOMMU arguments setup added with grubby stay in the boot entries: remove them \
             with `grubby --update-kernel=ALL --remove-args=...`"
                .into(),
        );
    }
    if initramfs {
        let cmd = if f.has_update_initramfs {
            Cmd::new("update-initramfs").arg("-u")
        } else {
            Cmd::new("dracut").arg("-f")
        };
        plan.push(
            "uninstall:initramfs",
            "Rebuild the initramfs with the restored modprobe.d",
            Action::Run(cmd),
        );
    }
    // 5. The driver, when vgpuctl installed it and no vGPU stays.
    if f.state.done.iter().any(|d| d == "driver") {
        match (&found.driver_uninstall, kept_on.is_empty()) {
            (Some(cmd), true) => plan.push(
                "uninstall:driver",
                "Remove the NVIDIA vGPU host driver vgpuctl installed",
                Action::Run(cmd.clone()),
            ),
            (Some(_), false) => plan
                .notes
                .push("the driver stays: vGPUs are left on the GPUs (see above)".into()),
            (None, _) => plan.notes.push(
                "the driver vgpuctl installed stays: nothing says how to remove it (no \
                 /usr/bin/nvidia-uninstall, and the package or .run setup installed is no longer \
                 under /var/lib/vgpuctl/downloads): remove it with its installer or package \
                 manager"
                    .into(),
            ),
        }
    } else if f.driver.installed() {
        plan.notes
            .push("the driver was not installed by vgpuctl: it stays".into());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_and_initramfs_files_are_told_apart() {
        assert!(boot_config("/etc/default/grub"));
        assert!(boot_config("/etc/default/grub.d/50-cloudimg-settings.cfg"));
        assert!(boot_config("/etc/kernel/cmdline"));
        assert!(!boot_config(
            "/etc/modprobe.d/vgpuctl-blacklist-nouveau.conf"
        ));
        assert!(in_initramfs(
            "/etc/modprobe.d/vgpuctl-blacklist-nouveau.conf"
        ));
        assert!(!in_initramfs("/etc/default/grub"));
    }
}
