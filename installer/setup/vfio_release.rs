//! Before the reboot: neutralise what would give the selected GPUs to vfio-pci again at the
//! next boot (see [`crate::vfio_persist`]). Unbinding a GPU from vfio-pci now lasts only until
//! that boot, so the persistent source is edited too, each edit a file write with a backup
//! (before -> after in the plan), then the boot configuration or the initramfs regenerated.
//! Pure: from the observed facts.

use crate::edit::{grub_default, kernel_cmdline_file, raw_text};
use crate::exit::Failure;
use crate::facts::vfio_persist::PROC_CMDLINE;
use crate::facts::{BootLoader, Gpu};
use crate::host::Cmd;
use crate::vfio_persist::{self as vp, Source};

use super::observe::{Facts, FileRead, GRUB_CFGS, KERNEL_CMDLINE};
use super::plan::{Action, Plan};

/// What the caller still has to do after these steps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// A modprobe.d file changed: the initramfs carries a copy of modprobe.d.
    pub initramfs: bool,
}

/// The text a step earlier in the plan leaves in `path`, else the observed one.
fn current_text(f: &Facts, plan: &Plan, path: &str) -> Result<Option<String>, Failure> {
    let planned = plan.steps.iter().rev().find_map(|s| match &s.action {
        Action::WriteBytes { path: p, after, .. } if p == path => Some(after.clone()),
        _ => None,
    });
    let bytes = match (planned, f.file(path)) {
        (Some(b), _) => b,
        (None, FileRead::Bytes(b)) => b.clone(),
        (None, _) => return Ok(None),
    };
    raw_text::decode(&bytes).map(Some).map_err(|off| {
        Failure::usage(format!(
            "{path}: byte {off} is a character vgpuctl uses internally; remove the vfio-pci ids \
             of the GPUs from it by hand"
        ))
    })
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The steps for the bindings that catch one of `selected`. `regen_boot`: the id of the step
/// that regenerates the boot configuration. They need no reboot of their own: the GPUs are given
/// back to the NVIDIA driver at run time (by the caller), and these edits keep them there at the
/// next boot; a kernel booted with `vfio-pci.ids=` binds nothing more once they are unbound.
pub fn plan(
    f: &Facts,
    selected: &[&Gpu],
    regen_boot: &str,
    plan: &mut Plan,
) -> Result<Release, Failure> {
    let mut release = Release::default();
    let gpus: Vec<vp::Gpu> = crate::facts::vfio_persist::gpus_of(
        &selected.iter().map(|g| (*g).clone()).collect::<Vec<_>>(),
    );
    let ours: Vec<&vp::Binding> = f
        .vfio_persist
        .bindings
        .iter()
        .filter(|b| b.gpus.iter().any(|a| gpus.iter().any(|g| g.address == *a)))
        .collect();
    let mut boot_edit = false;
    let mut files: Vec<&str> = Vec::new();
    for b in &ours {
        if b.source == Source::Cmdline && b.file == PROC_CMDLINE {
            continue;
        }
        if !files.contains(&b.file.as_str()) {
            files.push(&b.file);
        }
    }
    for file in files {
        let source = ours.iter().find(|b| b.file == file).expect("listed").source;
        match source {
            Source::Cmdline => {
                boot_edit |= cmdline_step(f, file, &gpus, plan)?;
            }
            Source::Modprobe | Source::Udev | Source::Driverctl => {
                let Some(before) = f.vfio_persist.files.get(file) else {
                    continue;
                };
                let (after, title) = match source {
                    Source::Modprobe => {
                        release.initramfs = true;
                        (
                            vp::modprobe_neutralise(before, &gpus),
                            format!("Take the GPUs' vfio-pci ids and softdeps out of {file}"),
                        )
                    }
                    Source::Udev => (
                        vp::udev_neutralise(before, &gpus),
                        format!("Comment out the udev rules in {file} that give the GPUs to vfio-pci"),
                    ),
                    _ => (
                        String::new(),
                        format!("Empty the driverctl override {file} (driverctl loads none from an empty file)"),
                    ),
                };
                plan.push(
                    format!("vfio:{file}"),
                    title,
                    Action::WriteFile {
                        path: file.to_string(),
                        before: Some(before.clone()),
                        after,
                        mode: 0o644,
                    },
                );
            }
        }
    }
    // A grub.cfg generated while the defaults still had the ids (a run stopped between the edit
    // and update-grub, before or after the edit was recorded) is regenerated too: its default
    // entry, the one booted, has ids that the defaults no longer give. (Ids only in other
    // entries, such as an /etc/grub.d/40_custom one, are not the boot's and not regenerated.)
    let stale_cfg = matches!(f.boot, BootLoader::DebianGrub { .. })
        && !ours
            .iter()
            .any(|b| b.source == Source::Cmdline && b.file != PROC_CMDLINE)
        && GRUB_CFGS.iter().any(|p| {
            f.file(p).text().is_some_and(|cfg| {
                cfg.lines()
                    .map(str::trim_start)
                    .find(|l| l.starts_with("linux"))
                    .is_some_and(|l| !vp::cmdline_bindings(p, l, &gpus).is_empty())
            })
        });
    if boot_edit || stale_cfg {
        regenerate_last(f, regen_boot, plan);
    }
    Ok(release)
}

/// Remove the GPUs' ids from one boot configuration file (GRUB defaults or drop-in,
/// /etc/kernel/cmdline) or from every BLS entry (grubby). Whether a regeneration must follow.
fn cmdline_step(f: &Facts, file: &str, gpus: &[vp::Gpu], plan: &mut Plan) -> Result<bool, Failure> {
    let by_hand = |e: String| {
        Failure::usage(format!(
            "cannot take the GPUs' vfio-pci ids out of {file}: {e}; remove them by hand"
        ))
    };
    match &f.boot {
        BootLoader::DebianGrub { .. } => {
            let Some(before) = current_text(f, plan, file)? else {
                return Ok(false);
            };
            let mut after = before.clone();
            for var in ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"] {
                let Some(value) = grub_default::read_var(&after, var) else {
                    continue;
                };
                let (rm, add) = vp::cmdline_fix(&value, gpus);
                if rm.is_empty() {
                    continue;
                }
                after = grub_default::remove_in_file(file, &after, var, &refs(&rm))
                    .map_err(|e| by_hand(e.to_string()))?;
                if !add.is_empty() {
                    after = grub_default::ensure_in_file(file, &after, var, &refs(&add))
                        .map_err(|e| by_hand(e.to_string()))?;
                }
            }
            push_bytes(plan, file, &before, &after);
            Ok(after != before)
        }
        BootLoader::KernelCmdline { proxmox } => {
            let Some(before) = current_text(f, plan, KERNEL_CMDLINE)? else {
                return Ok(false);
            };
            let line = if *proxmox {
                kernel_cmdline_file::proxmox_cmdline(&before).to_string()
            } else {
                before.clone()
            };
            let (rm, add) = vp::cmdline_fix(&line, gpus);
            let mut after = kernel_cmdline_file::remove_kernel_cmdline(&before, &refs(&rm));
            if !add.is_empty() {
                after = if *proxmox {
                    kernel_cmdline_file::ensure_proxmox_cmdline(&after, &refs(&add))
                        .map_err(|e| by_hand(e.to_string()))?
                } else {
                    kernel_cmdline_file::ensure_kernel_cmdline(&after, &refs(&add))
                };
            }
            push_bytes(plan, KERNEL_CMDLINE, &before, &after);
            Ok(after != before)
        }
        BootLoader::Grubby => {
            if plan.steps.iter().any(|s| s.id == "vfio:grubby") {
                return Ok(false);
            }
            let all: Vec<String> = f
                .bls_entries
                .iter()
                .map(|(_, c)| kernel_cmdline_file::bls_options(c))
                .collect();
            let (mut rm, mut add) = (Vec::new(), Vec::new());
            for line in &all {
                let (r, a) = vp::cmdline_fix(line, gpus);
                rm.extend(
                    r.into_iter()
                        .filter(|x| !rm.contains(x))
                        .collect::<Vec<_>>(),
                );
                add.extend(
                    a.into_iter()
                        .filter(|x| !add.contains(x))
                        .collect::<Vec<_>>(),
                );
            }
            if rm.is_empty() {
                return Ok(false);
            }
            let mut cmd = Cmd::new("grubby")
                .arg("--update-kernel=ALL")
                .arg(format!("--remove-args={}", rm.join(" ")));
            if !add.is_empty() {
                cmd = cmd.arg(format!("--args={}", add.join(" ")));
            }
            plan.push(
                "vfio:grubby",
                "Take the GPUs' vfio-pci ids off every boot entry",
                Action::Run(cmd),
            );
            // grubby edits the entries themselves: nothing to regenerate.
            Ok(false)
        }
        BootLoader::Unknown => Ok(false),
    }
}

fn push_bytes(plan: &mut Plan, path: &str, before: &str, after: &str) {
    if before == after {
        return;
    }
    plan.push(
        format!("vfio:{path}"),
        format!("Take the GPUs' vfio-pci ids off the kernel command line in {path}"),
        Action::WriteBytes {
            path: path.to_string(),
            before: raw_text::encode(before),
            after: raw_text::encode(after),
            mode: 0o644,
        },
    );
}

/// The boot configuration is regenerated after every edit of its sources: an existing
/// regeneration step moves to the end of the plan, or one is added.
fn regenerate_last(f: &Facts, id: &str, plan: &mut Plan) {
    let existing = plan
        .steps
        .iter()
        .position(|s| s.id == id)
        .map(|i| plan.steps.remove(i));
    if let Some(step) = existing {
        plan.steps.push(step);
        return;
    }
    let (title, cmd) = match &f.boot {
        BootLoader::DebianGrub { .. } => ("Regenerate grub.cfg", Cmd::new("update-grub")),
        BootLoader::KernelCmdline { proxmox: true } => (
            "Copy the kernel command line to the boot entries",
            Cmd::new("proxmox-boot-tool").arg("refresh"),
        ),
        BootLoader::KernelCmdline { proxmox: false } => {
            let kver = f.kernel_release.clone().unwrap_or_default();
            (
                "Copy the kernel command line to the boot entries",
                Cmd::new("kernel-install")
                    .arg("add")
                    .arg(&kver)
                    .arg(format!("/lib/modules/{kver}/vmlinuz")),
            )
        }
        _ => return,
    };
    plan.push(id, title, Action::Run(cmd));
}
