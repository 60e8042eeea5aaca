//! Steps before the reboot: IOMMU on the kernel command line (for the host's boot loader),
//! nouveau, vfio-pci, the driver. Also: why a reboot is (still) needed, judged from the facts.

use crate::driver::nouveau::Verdict;
use crate::edit::{grub_default, kargs, kernel_cmdline_file, raw_text, registry_dwords};
use crate::exit::Failure;
use crate::facts::{BootLoader, CpuVendor, HostFacts};
use crate::host::{Cmd, Host};
use crate::profile::IommuPolicy;
use crate::vgpu::select;

use super::grub_shell;
use super::observe::{Facts, FileRead, GRUB_CFGS, GRUB_DEFAULT, KERNEL_CMDLINE};
use super::plan::{Action, Plan};
use super::planner::Desired;

pub use super::paths::NOUVEAU_CONF;

const NOUVEAU_TEXT: &str = "# Written by vgpuctl: the NVIDIA vGPU host driver needs the GPUs, not nouveau.\nblacklist nouveau\noptions nouveau modeset=0\n";
/// Ids of regeneration steps: replanned until recorded done, so a crash between editing a
/// file and regenerating from it is caught on the next run.
pub const REGEN_BOOT: &str = "bootcfg:regenerate";
pub const REGEN_INITRAMFS: &str = "initramfs";

pub fn wanted_args(f: &HostFacts) -> &'static [&'static str] {
    kargs::iommu_args(f.cpu_vendor == CpuVendor::Intel)
}

/// How to get past a boot configuration vgpuctl will not edit.
fn by_hand(args: &str) -> String {
    format!(
        "or add `{args}` to the kernel command line yourself, reboot, and set iommu = \"skip\" in \
         the profile's [host]. Nothing was changed."
    )
}

/// The files GRUB's defaults come from, main file first, as (path, text kept byte for byte, see
/// [`raw_text`]). A file update-grub sources that cannot be read as a file (a directory, no
/// permission) is refused: skipping it would leave the edit unmade and cost a reboot.
fn grub_files(f: &Facts, dropins: &[String], args: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for (i, p) in std::iter::once(GRUB_DEFAULT.to_string())
        .chain(dropins.iter().cloned())
        .enumerate()
    {
        let sourced = i == 0 || p.ends_with(".cfg");
        match f.file(&p) {
            FileRead::Bytes(bytes) => match raw_text::decode(bytes) {
                Ok(text) => out.push((p, text)),
                Err(off) => {
                    return Err(Failure::usage(format!(
                        "{p}: byte {off} is a character vgpuctl uses internally to keep non-UTF-8 bytes; \
                         edit the file by hand, {}",
                        by_hand(args)
                    )))
                }
            },
            FileRead::Missing if i > 0 || !sourced => {}
            FileRead::Unreadable(_) if !sourced => {}
            FileRead::Missing => {
                return Err(Failure::usage(format!(
                    "{p}: cannot be read as a file (No such file or directory (os error 2)); \
                     update-grub sources it, so fix it first, {}",
                    by_hand(args)
                )))
            }
            FileRead::Unreadable(e) => {
                return Err(Failure::usage(format!(
                    "{p}: cannot be read as a file ({e}); update-grub sources it, so fix it first, {}",
                    by_hand(args)
                )))
            }
        }
    }
    Ok(out)
}

/// On the running system, judge the planned GRUB edit by sourcing the files with `/bin/sh`, as
/// update-grub will (see [`grub_shell`]); refused when the shell disagrees with the editor.
fn check_with_sh(
    host: &Host,
    files: &[(String, String)],
    edits: &[grub_default::FileEdit],
    wanted: &[&str],
    args: &str,
) -> Result<(), Failure> {
    let bytes = |after: bool| -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .filter(|(p, _)| p == "/etc/default/grub" || p.ends_with(".cfg"))
            .map(|(p, c)| {
                let text = edits
                    .iter()
                    .find(|e| after && e.name == *p)
                    .map_or(c.as_str(), |e| e.after.as_str());
                (p.clone(), raw_text::encode(text))
            })
            .collect()
    };
    let run = |after: bool| {
        let b = bytes(after);
        let refs: Vec<(&str, &[u8])> = b.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
        grub_shell::source(&refs, &|c| host.run(c))
    };
    let verdict = match (run(false), run(true)) {
        (Ok(before), Ok(after)) => grub_default::judge_sourced(&before, &after, wanted),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    };
    verdict.map_err(|why| {
        Failure::usage(format!(
            "the planned edit of the GRUB defaults does not hold when /bin/sh sources the files: {why}; \
             edit them by hand, {}",
            by_hand(args)
        ))
    })
}

/// Does a generated grub.cfg give every `linux` line the arguments? (None: no grub.cfg.)
fn grub_cfg_has(f: &Facts, wanted: &[&str]) -> Option<bool> {
    let cfg = GRUB_CFGS.iter().find_map(|p| f.file(p).text())?;
    let linux: Vec<&str> = cfg
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("linux"))
        .collect();
    Some(!linux.is_empty() && linux.iter().all(|l| kargs::has_args(l, wanted)))
}

fn iommu_steps(f: &Facts, plan: &mut Plan) -> Result<(), Failure> {
    let done = &f.state.done;
    let wanted = wanted_args(f);
    let args = wanted.join(" ");
    let booted_ok = kargs::has_args(&f.cmdline, wanted);
    match &f.boot {
        BootLoader::DebianGrub { dropins } => {
            let files = grub_files(f, dropins, &args)?;
            let view: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_str()))
                .collect();
            let edits = grub_default::plan_kernel_args(&view, wanted).map_err(|e| {
                Failure::usage(format!(
                    "cannot edit the GRUB defaults: {e}, {}",
                    by_hand(&args)
                ))
            })?;
            let regen_pending = !edits.is_empty()
                || (!booted_ok && grub_cfg_has(f, wanted) == Some(false))
                || (!booted_ok
                    && !done.iter().any(|d| d == REGEN_BOOT)
                    && grub_cfg_has(f, wanted).is_none());
            for e in edits {
                plan.push(
                    format!("iommu:{}", e.name),
                    format!("Add {args} to the GRUB kernel command line"),
                    Action::WriteBytes {
                        path: e.name,
                        before: raw_text::encode(&e.before),
                        after: raw_text::encode(&e.after),
                        mode: 0o644,
                    },
                );
            }
            if regen_pending {
                plan.push(
                    REGEN_BOOT,
                    "Regenerate grub.cfg",
                    Action::Run(Cmd::new("update-grub")),
                );
            }
        }
        BootLoader::Grubby => {
            let entries = &f.bls_entries;
            let all_have = !entries.is_empty()
                && entries
                    .iter()
                    .all(|(_, c)| kargs::has_args(&kernel_cmdline_file::bls_options(c), wanted));
            if !all_have {
                plan.push(
                    "iommu:grubby",
                    format!("Add {args} to every boot entry"),
                    Action::Run(
                        Cmd::new("grubby")
                            .arg("--update-kernel=ALL")
                            .arg(format!("--args={args}")),
                    ),
                );
            }
        }
        BootLoader::KernelCmdline { proxmox } => {
            let before = match f.file(KERNEL_CMDLINE) {
                FileRead::Bytes(b) => raw_text::decode(b).map_err(|off| {
                    Failure::usage(format!(
                        "/etc/kernel/cmdline: byte {off} is a character vgpuctl uses internally; {}",
                        by_hand(&args)
                    ))
                })?,
                FileRead::Missing => String::new(),
                FileRead::Unreadable(e) => {
                    return Err(Failure::usage(format!(
                        "/etc/kernel/cmdline: cannot be read as a file ({e}), {}",
                        by_hand(&args)
                    )))
                }
            };
            // proxmox-boot-tool reads the first line only; kernel-install joins every line.
            let after = if *proxmox {
                kernel_cmdline_file::ensure_proxmox_cmdline(&before, wanted)
                    .map_err(|e| Failure::usage(format!("{e}, {}", by_hand(&args))))?
            } else {
                kernel_cmdline_file::ensure_kernel_cmdline(&before, wanted)
            };
            let changed = after != before;
            if changed {
                plan.push(
                    "iommu:kernel-cmdline",
                    format!("Add {args} to /etc/kernel/cmdline"),
                    Action::WriteBytes {
                        path: "/etc/kernel/cmdline".into(),
                        before: raw_text::encode(&before),
                        after: raw_text::encode(&after),
                        mode: 0o644,
                    },
                );
            }
            if changed || (!booted_ok && !done.iter().any(|d| d == REGEN_BOOT)) {
                let cmd = if *proxmox {
                    Cmd::new("proxmox-boot-tool").arg("refresh")
                } else {
                    let kver = f.kernel_release.clone().unwrap_or_default();
                    Cmd::new("kernel-install")
                        .arg("add")
                        .arg(&kver)
                        .arg(format!("/lib/modules/{kver}/vmlinuz"))
                };
                plan.push(
                    REGEN_BOOT,
                    "Copy the kernel command line to the boot entries",
                    Action::Run(cmd),
                );
            }
        }
        BootLoader::Unknown => {
            if !booted_ok {
                return Err(Failure::failed(format!(
                    "no supported boot loader configuration found (GRUB, grubby/BLS, /etc/kernel/cmdline): \
                     add `{args}` to the kernel command line yourself, reboot, and set iommu = \"skip\" in \
                     the profile's [host]. Nothing was changed."
                )));
            }
        }
    }
    Ok(())
}

/// The vGPU scheduling policy (`[host] scheduler`): `RmPVMRL` merged into the modprobe.d setting
/// of `NVreg_RegistryDwords` in effect (see [`registry_dwords`]). The driver reads it when the
/// module loads, so a loaded driver running another policy is a reboot checkpoint when the
/// profile asks for vGPUs (they must run under the new policy); without vGPUs wanted the plan
/// only says when it takes effect. True when a modprobe.d file is edited; refused (exit 2) when
/// the setting in effect cannot be rewritten safely.
fn scheduler_step(
    f: &Facts,
    profile: &crate::profile::Profile,
    plan: &mut Plan,
    reasons: &mut Vec<String>,
) -> Result<bool, Failure> {
    let Some(s) = profile.host.scheduler else {
        return Ok(false);
    };
    let want = registry_dwords::rmpvmrl(s, profile.host.timeslice_ms);
    let edit = registry_dwords::plan(&f.modprobe_d, want).map_err(|e| {
        Failure::usage(format!(
            "[host] scheduler: {e}, or remove scheduler from the profile. Nothing was changed."
        ))
    })?;
    let edited = edit.is_some();
    if let Some(e) = edit {
        plan.push(
            "scheduler:modprobe",
            format!(
                "Set the vGPU scheduler to {} in {} (read when the nvidia module next loads)",
                registry_dwords::describe(want),
                e.path
            ),
            Action::WriteFile {
                path: e.path,
                before: e.before,
                after: e.after,
                mode: 0o644,
            },
        );
    }
    if f.driver.loaded_version.is_none() {
        return Ok(edited);
    }
    // The loaded driver's value (unset: best effort, the driver's default); unknown when the
    // driver shows no params file, then judged by whether the file is edited now.
    let running = f
        .nvidia_params
        .as_deref()
        .and_then(registry_dwords::loaded)
        .map(|v| v.unwrap_or(0));
    if running.map_or(edited, |v| v != want) {
        let now = running.map_or("another policy".to_string(), registry_dwords::describe);
        let why = format!(
            "the loaded NVIDIA driver runs {now}; the profile's {} takes effect when the module loads again",
            registry_dwords::describe(want)
        );
        if profile.gpus.is_empty() {
            plan.after_reboot.push(why);
        } else {
            reasons.push(why);
        }
    }
    Ok(edited)
}

/// The pre-reboot steps, and the reasons a reboot is needed now (empty: none). Pure.
pub fn plan(f: &Facts, want: &Desired) -> Result<(Plan, Vec<String>), Failure> {
    let profile = want.profile;
    let done = &f.state.done;
    let mut plan = Plan::default();
    let mut reasons = Vec::new();
    if profile.host.iommu == IommuPolicy::Auto {
        iommu_steps(f, &mut plan)?;
        let wanted = wanted_args(f);
        if !kargs::has_args(&f.cmdline, wanted) {
            reasons.push(format!(
                "the running kernel's command line lacks {}",
                wanted.join(" ")
            ));
        }
    }

    // MIG mode turned on but pending until the GPU's reset (Ampere): a reboot applies it, and
    // a GPU of a MIG-backed entry can hold no GPU instance before (recorded-behaviour.md §5).
    for req in &profile.gpus {
        let Ok(gpus) = select::select(&f.host, &req.select) else {
            continue;
        };
        for g in gpus {
            let mig_backed = select::known_type(g, &req.vgpu_type).is_some_and(|t| t.mig_backed());
            let waiting = g.mig_mode.is_some_and(|m| m.pending && !m.current);
            let why = format!(
                "MIG mode on {} {} is pending until the GPU is reset",
                g.model.name, g.address
            );
            if mig_backed && waiting && !reasons.contains(&why) {
                reasons.push(why);
            }
        }
    }

    // Nothing may give the selected GPUs to vfio-pci again at the next boot.
    let selected: Vec<&crate::facts::Gpu> = profile
        .gpus
        .iter()
        .filter_map(|req| select::select(f, &req.select).ok())
        .flatten()
        .collect();
    let release = super::vfio_release::plan(f, &selected, REGEN_BOOT, &mut plan)?;

    // nouveau must not claim the GPUs at the next boot.
    let ours = f.nouveau_conf.is_some();
    if f.modules.nouveau && !f.nouveau_blacklisted {
        plan.push(
            "nouveau:blacklist",
            "Blacklist nouveau",
            Action::WriteFile {
                path: NOUVEAU_CONF.into(),
                before: f.nouveau_conf.clone(),
                after: NOUVEAU_TEXT.into(),
                mode: 0o644,
            },
        );
    }
    if f.modules.nouveau
        && (!f.nouveau_blacklisted || (ours && !done.iter().any(|d| d == REGEN_INITRAMFS)))
    {
        let cmd = if f.has_update_initramfs || f.os.family == crate::facts::OsFamily::Debian {
            Cmd::new("update-initramfs").arg("-u")
        } else {
            Cmd::new("dracut").arg("-f")
        };
        plan.push(
            REGEN_INITRAMFS,
            "Rebuild the initramfs without nouveau",
            Action::Run(cmd),
        );
    }
    // NVIDIA's installer refuses while nouveau drives a GPU: unload it now when nothing holds it
    // (no reboot for it), else the install waits for the reboot the blacklist needs.
    let mut install_after_reboot = None;
    if f.modules.nouveau {
        match f.nouveau_use.judge() {
            Verdict::Unload if f.runs_programs => plan.push(
                "nouveau:unload",
                "Unload nouveau (nothing holds it) so the driver installer can run",
                Action::Run(Cmd::new("modprobe").arg("-r").arg("nouveau")),
            ),
            Verdict::Clear | Verdict::Unload => {
                reasons.push("nouveau is loaded until the reboot".into())
            }
            Verdict::Reboot(why) => {
                reasons.push(format!("{why}; it goes at the reboot"));
                install_after_reboot = Some(why);
            }
        }
    }
    let scheduler_edit = scheduler_step(f, profile, &mut plan, &mut reasons)?;
    // The initramfs carries a copy of modprobe.d.
    if (release.initramfs || scheduler_edit) && !plan.steps.iter().any(|s| s.id == REGEN_INITRAMFS)
    {
        let cmd = if f.has_update_initramfs || f.os.family == crate::facts::OsFamily::Debian {
            Cmd::new("update-initramfs").arg("-u")
        } else {
            Cmd::new("dracut").arg("-f")
        };
        plan.push(
            REGEN_INITRAMFS,
            "Rebuild the initramfs with the edited modprobe.d",
            Action::Run(cmd),
        );
    }

    // Selected GPUs passed through to vfio-pci are given back: a `driver_override` (what driverctl
    // and udev rules set) is cleared, the GPU unbound and, with the NVIDIA driver loaded, probed
    // again so that it binds now. What would give it back at the next boot is fixed above.
    // A GPU left without a driver (a run stopped between the unbind and the probe) is probed too.
    let nvidia_loaded = f.driver.loaded_version.is_some();
    let mut given_back: Vec<&str> = Vec::new();
    for g in selected.iter().filter(|g| match g.driver.as_deref() {
        Some(d) => d == "vfio-pci",
        None => nvidia_loaded,
    }) {
        if given_back.contains(&g.address.as_str()) {
            continue;
        }
        given_back.push(&g.address);
        let dev = format!("/sys/bus/pci/devices/{}", g.address);
        plan.push(
            format!("override:{}", g.address),
            format!("Clear the driver override of {}", g.address),
            Action::WriteAttr {
                path: format!("{dev}/driver_override"),
                value: "\n".into(),
            },
        );
        if g.driver.is_some() {
            plan.push(
                format!("unbind:{}", g.address),
                format!("Unbind {} from vfio-pci", g.address),
                Action::WriteAttr {
                    path: format!("{dev}/driver/unbind"),
                    value: g.address.clone(),
                },
            );
        }
        if nvidia_loaded {
            plan.push(
                format!("probe:{}", g.address),
                format!("Bind {} to the NVIDIA driver", g.address),
                Action::WriteAttr {
                    path: "/sys/bus/pci/drivers_probe".into(),
                    value: g.address.clone(),
                },
            );
        }
    }

    // The host driver.
    if !f.driver.installed() {
        match (&profile.driver, install_after_reboot) {
            (Some(_), Some(why)) => plan.after_reboot.push(format!(
                "install the NVIDIA vGPU host driver, then reboot to load it (not before: {why}, \
                 and NVIDIA's installer refuses while nouveau drives a GPU)"
            )),
            // Validated before planning (see [`driver_source`]).
            (Some(_), None) => plan.push(
                "driver",
                "Install the NVIDIA vGPU host driver",
                Action::InstallDriver {
                    source: want.driver_source.clone().unwrap_or_default(),
                },
            ),
            (None, _) => {
                return Err(Failure::usage(
                    "[driver]: the vGPU host driver is not installed and the profile has no [driver] \
                     section: add `path = \"/root/NVIDIA-GRID-Linux-KVM-....zip\"` or a licensed `url`",
                ))
            }
        }
    } else if let Some(up) = &want.driver_upgrade {
        super::upgrade::plan(
            f,
            up,
            want.driver_source.as_deref().unwrap_or_default(),
            &mut plan,
        )?;
    } else if f.driver.loaded_version.is_none() {
        reasons.push("the vGPU host driver is installed but not loaded".into());
    } else if f.driver.installed_version != f.driver.loaded_version {
        // An upgrade installed its driver: the old module runs until the reboot loads the new.
        reasons.push(format!(
            "NVIDIA driver {} is installed and {} is loaded: the reboot loads {}",
            f.driver.installed_version.as_deref().unwrap_or("?"),
            f.driver.loaded_version.as_deref().unwrap_or("?"),
            f.driver.installed_version.as_deref().unwrap_or("?")
        ));
    }
    Ok((plan, reasons))
}

/// The driver source a plan installs from, validated against the host before planning: bad input
/// (missing file, expired link, http) is refused before any change. None when nothing is to
/// install. On a host with a driver installed, a package whose name says another version is an
/// upgrade (then validated too); one whose name says none, or the same, is left alone (not even
/// validated: a package removed after its install is no error).
pub fn driver_source(
    host: &Host,
    f: &HostFacts,
    profile: &crate::profile::Profile,
) -> Result<(Option<String>, Option<super::upgrade::Upgrade>), Failure> {
    let Some(d) = &profile.driver else {
        return Ok((None, None));
    };
    let upgrade = if f.driver.installed() {
        let named = package_name(d).and_then(|n| crate::driver::version_from_name(&n));
        match (named, f.driver.installed_version.as_deref()) {
            (Some(to), Some(from)) if to != from => Some(super::upgrade::Upgrade {
                from: from.to_string(),
                to,
            }),
            _ => return Ok((None, None)),
        }
    } else {
        None
    };
    let src = crate::driver::validate(d, host, std::time::SystemTime::now())
        .map_err(Failure::usage_from)?;
    Ok((Some(src.describe()), upgrade))
}

/// The file name of the profile's driver package: the path's, or the url path's last segment.
fn package_name(d: &crate::profile::DriverConfig) -> Option<String> {
    let raw = d.path.as_deref().or(d.url.as_deref())?;
    let no_query = raw.split(['?', '#']).next().unwrap_or(raw);
    let name = no_query.trim_end_matches('/').rsplit('/').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// On the running system, judge the plan's GRUB edits by sourcing the files with `/bin/sh`, as
/// update-grub will. Never a shell for a test or simulated root: their files are not this system's.
pub fn check_grub_edits(host: &Host, f: &Facts, plan: &Plan) -> Result<(), Failure> {
    let BootLoader::DebianGrub { dropins } = &f.boot else {
        return Ok(());
    };
    if host.reach() != crate::host::Reach::Live {
        return Ok(());
    }
    let wanted = wanted_args(f);
    let args = wanted.join(" ");
    let files = grub_files(f, dropins, &args)?;
    let edits: Vec<grub_default::FileEdit> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::WriteBytes {
                path,
                before,
                after,
                ..
            } if files.iter().any(|(p, _)| p == path) => Some(grub_default::FileEdit {
                name: path.clone(),
                before: raw_text::decode(before).ok()?,
                after: raw_text::decode(after).ok()?,
            }),
            _ => None,
        })
        .collect();
    if edits.is_empty() {
        return Ok(());
    }
    check_with_sh(host, &files, &edits, wanted, &args)
}

#[cfg(test)]
mod package_name_tests {
    use super::package_name;
    use crate::profile::DriverConfig;

    #[test]
    fn the_package_name_is_the_paths_or_the_url_paths_last_segment() {
        let path = DriverConfig {
            path: Some("/root/NVIDIA-GRID-Linux-KVM-580.105.06-580.105.05-581.42.zip".into()),
            ..Default::default()
        };
        assert_eq!(
            package_name(&path).as_deref(),
            Some("NVIDIA-GRID-Linux-KVM-580.105.06-580.105.05-581.42.zip")
        );
        let url = DriverConfig {
            url: Some(
                "https://dl.example.com/vgpu/NVIDIA-Linux-x86_64-580.105.06-vgpu-kvm.run?st=1&exp=2#x"
                    .into(),
            ),
            ..Default::default()
        };
        let name = package_name(&url).unwrap();
        assert_eq!(name, "NVIDIA-Linux-x86_64-580.105.06-vgpu-kvm.run");
        assert_eq!(
            crate::driver::version_from_name(&name).as_deref(),
            Some("580.105.06")
        );
    }
}
