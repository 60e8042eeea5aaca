//! Programs on the simulated host: each run is answered by name, acting on the root as the real
//! tool would act on a real host. A program whose file is absent from the root is "command not
//! found" (127), so which tools exist is decided by the root's files, as on a real host.

use std::path::Path;

use anyhow::Result;

use super::bootcfg;
use super::driver_pkg;
use super::kernel::SimKernel;
use super::layout;
use super::models::{Boot, Iface};
use super::state::{self, Event, Pending};
use crate::seam::{Cmd, RunOutput};

const PATH: &[&str] = &[
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
];

/// The root-relative file a program name resolves to, if present.
fn resolve(root: &Path, program: &str) -> Option<String> {
    if program.contains('/') {
        let rel = program.trim_start_matches('/').to_string();
        return root.join(&rel).is_file().then_some(rel);
    }
    PATH.iter()
        .map(|d| format!("{d}/{program}"))
        .find(|rel| root.join(rel).is_file())
}

fn ok(s: impl Into<String>) -> Result<RunOutput> {
    Ok(RunOutput::ok(s))
}

fn fail(code: i32, s: impl Into<String>) -> Result<RunOutput> {
    Ok(RunOutput::failed(code, s))
}

pub(crate) fn run(k: &SimKernel, root: &Path, cmd: &Cmd) -> Result<RunOutput> {
    // `sh x.run --check` is the same as running the archive.
    let (program, args): (String, Vec<String>) = if matches!(cmd.name(), "sh" | "bash")
        && cmd.args.first().is_some_and(|a| a.ends_with(".run"))
    {
        (cmd.args[0].clone(), cmd.args[1..].to_vec())
    } else {
        (cmd.program.clone(), cmd.args.clone())
    };
    let Some(file) = resolve(root, &program) else {
        return fail(127, format!("{program}: command not found\n"));
    };
    let name = file.rsplit('/').next().unwrap_or(&file).to_string();
    if hangs(k, &name, &args) {
        return hang(cmd, &program);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    if name.ends_with(".run") {
        return run_installer(k, root, &file, &a);
    }
    match name.as_str() {
        "sriov-manage" => sriov_manage(k, cmd, &a),
        "update-grub" | "grub-mkconfig" | "grub2-mkconfig" => grub_mkconfig(k, root, &name, &a),
        "grubby" => grubby(root, &a),
        "proxmox-boot-tool" | "kernel-install" => {
            layout::proxmox_refresh(root, k.model)?;
            ok(format!(
                "Running hook script 'proxmox-auto-removal'..\nRunning hook script 'zz-proxmox-boot'..\n\
                 Re-executing '/etc/kernel/postinst.d/zz-proxmox-boot' in new private mount namespace..\n\
                 Copying and configuring kernels on /dev/disk/by-uuid/{}\n\tCopying kernel and creating boot-entry for {}\n",
                layout::ESP_UUID,
                k.model.os.kver
            ))
        }
        "update-initramfs" | "dracut" => {
            let blacklisted = nouveau_blacklisted(root);
            k.with(|st| {
                st.initramfs_blacklists_nouveau = blacklisted;
                Ok(())
            })?;
            let kv = k.model.os.kver;
            if name == "dracut" {
                layout::put(
                    root,
                    &format!("boot/initramfs-{kv}.img"),
                    &format!("simulated initramfs {}\n", state::now_ms()),
                )?;
                ok("")
            } else {
                layout::put(
                    root,
                    &format!("boot/initrd.img-{kv}"),
                    &format!("simulated initramfs {}\n", state::now_ms()),
                )?;
                if k.model.os.proxmox {
                    // Proxmox's initramfs hook syncs the ESPs.
                    layout::proxmox_refresh(root, k.model)?;
                }
                ok(format!(
                    "update-initramfs: Generating /boot/initrd.img-{kv}\n"
                ))
            }
        }
        "modprobe" => modprobe(k, root, &a),
        "dkms" => super::kernels::dkms(root, k.model, &a),
        "systemctl" => systemctl(k, root, &a),
        "nvidia-smi" => nvidia_smi(k, &a),
        // The uninstaller a `.run` install leaves (nvidia-installer's `nvidia-uninstall`).
        "nvidia-uninstall" => uninstall_driver(k, root),
        "apt-get" | "apt" | "dnf" | "yum"
            if a.iter()
                .any(|x| matches!(*x, "remove" | "purge" | "erase" | "autoremove")) =>
        {
            super::packages::remove(k, root, &name, &a)
        }
        "apt-get" | "apt" | "dnf" | "yum" => package_install(k, root, &name, &a),
        _ => fail(
            1,
            format!("{name}: the vgpuctl simulator does not play this program\n"),
        ),
    }
}

/// `hang=PROGRAM[@ADDR],...`: whether this run is one that never returns.
fn hangs(k: &SimKernel, name: &str, args: &[String]) -> bool {
    let Some(spec) = k.opt("hang") else {
        return false;
    };
    spec.split(',').map(str::trim).any(|h| {
        let (prog, addr) = match h.split_once('@') {
            Some((p, a)) => (p, normalize_addr(a)),
            None => (h, None),
        };
        prog == name
            && addr.is_none_or(|want| {
                args.iter()
                    .any(|a| normalize_addr(a).is_some_and(|got| got == want))
            })
    })
}

/// A run that does not return: it lasts its caller's bound and then ends as a killed one would
/// (with no bound it lasts a day, which no test waits for).
fn hang(cmd: &Cmd, program: &str) -> Result<RunOutput> {
    let after = cmd
        .timeout
        .unwrap_or(std::time::Duration::from_secs(24 * 3600));
    std::thread::sleep(after);
    Err(anyhow::Error::new(crate::seam::TimedOut {
        program: program.to_string(),
        after,
    }))
}

const SRIOV_MANAGE_USAGE: &str = "Usage:\n    /usr/lib/nvidia/sriov-manage <-e|-d> <ssss:bb:dd.f|ALL>\n        Enable/disable Virtual functions on the GPU specified by the PCI_ID=ssss:bb:dd.f.\n        If 'ALL' is specified in place of PCI_ID, operate on all the nvidia GPUs in the system.\n\n    /usr/lib/nvidia/sriov-manage -e <ssss:bb:dd.f|ALL> -r 1\n\t\tReset and rescan the GPU followed by enabling Virtual functions on the GPU.\n\n    /usr/lib/nvidia/sriov-manage -h\n        Print this help.\n";

/// NVIDIA's `sriov-manage` (recorded-behaviour §2): for each GPU it unbinds the PF from nvidia,
/// binds it to pci-pf-stub, writes `sriov_numvfs` and rebinds nvidia, so the VFs exist when it
/// returns (`vf_delay_ms` later); each VF's vGPU group is filled in afterwards (`vf_group_ms`).
/// Exits 0 on a GPU it cannot enable. Failures: `unbind_lock_busy`, `boot_race`.
fn sriov_manage(k: &SimKernel, cmd: &Cmd, a: &[&str]) -> Result<RunOutput> {
    let m = k.model;
    let (enable, target) = match a {
        ["-e", t, ..] => (true, *t),
        ["-d", t, ..] => (false, *t),
        _ => return ok(SRIOV_MANAGE_USAGE),
    };
    let pfs: Vec<String> = if target.eq_ignore_ascii_case("all") {
        m.pfs.iter().map(|s| s.to_string()).collect()
    } else {
        match normalize_addr(target) {
            Some(a) if m.pfs.contains(&a.as_str()) => vec![a],
            _ => return ok(format!("GPU {target} not found\n")),
        }
    };
    let delay: u64 = k
        .opt("vf_delay_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let never = k.opt("vfs_never").is_some_and(|v| v == "1");
    let boot_race = k.opt("boot_race").is_some_and(|v| v == "1");
    let busy: u32 = k
        .opt("unbind_lock_busy")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut out = String::new();
    let mut failed: Option<String> = None;
    let mut staged = Vec::new();
    let mut due = Vec::new();
    k.with(|st| {
        if boot_race && st.boot_race_played != st.boot_count {
            // While nvidia-vgpu-mgr initialises after a boot: the script's awk write to the
            // stub driver's new_id fails, then its bind finds no device (stackhpc PR 37).
            st.boot_race_played = st.boot_count;
            if let Some(pf) = pfs.first() {
                out.push_str(&format!("Enabling VFs on {pf}\n"));
            }
            failed = Some(
                "awk: write failure: error writing standard output: File exists\n\
                 echo: write error: No such device\n"
                    .to_string(),
            );
            return Ok(());
        }
        for pf in &pfs {
            let bound = st.bound.get(pf).is_some_and(|d| d == "nvidia");
            if m.sriov_total == 0 || !st.modules.contains("nvidia") || !bound {
                // Not a GPU it can enable: it says so in passing and still exits 0.
                out.push_str(&format!(
                    "Enabling VFs on {pf}\nFailed to enable VFs on {pf}\n"
                ));
                continue;
            }
            if !enable {
                out.push_str(&format!("Disabling VFs on {pf}\n"));
                k.drop_vfs(st, pf);
                k.render_gpu(st, pf)?;
                continue;
            }
            let has_vfs = st.numvfs.get(pf).copied().unwrap_or(0) > 0
                || st
                    .pending
                    .iter()
                    .any(|p| matches!(&p.event, Event::EnableVfs { pf: x } if x == pf));
            if has_vfs {
                out.push_str(&format!("GPU at {pf} already has VFs enabled.\n"));
                continue;
            }
            if st.unbind_lock_failures < busy {
                // An NVML client (nvidia-smi, DCGM, nvidia-persistenced) holds the GPU.
                st.unbind_lock_failures += 1;
                failed = Some(format!("Cannot obtain unbindLock for {pf}\n"));
                return Ok(());
            }
            out.push_str(&format!("Enabling VFs on {pf}\n"));
            // The script rebinds the GPU through pci-pf-stub, which clears mixed-size mode
            // and wipes every MIG GPU instance on the card (recorded-behaviour §2, cubecos);
            // MIG mode itself stays.
            st.mixed_size.remove(pf);
            st.gpu_instances.retain(|g| g.pf != *pf);
            if never {
                // vGPU 17.2: VF creation failed, the script still exits 0.
                continue;
            }
            if delay == 0 {
                k.enable_vfs(st, pf, m.sriov_total)?;
            } else {
                let due_ms = state::now_ms() + delay;
                st.pending.push(Pending {
                    due_ms,
                    event: Event::EnableVfs { pf: pf.clone() },
                });
                staged.push((pf.clone(), due_ms, st.clone()));
                due.push(due_ms);
            }
        }
        Ok(())
    })?;
    if let Some(msg) = failed {
        return Ok(RunOutput {
            status: 1,
            stdout: out,
            stderr: msg,
        });
    }
    let staged_pfs: Vec<String> = staged.iter().map(|(pf, _, _)| pf.clone()).collect();
    for (pf, due_ms, snapshot) in staged {
        let (root, m) = (k.root.clone(), k.model);
        std::thread::spawn(move || {
            if let Err(e) = layout::stage_vfs(&root, m, snapshot, &pf, due_ms) {
                tracing::debug!(pf, error = %e, "staging VFs failed; they will be built when due");
            }
        });
    }
    // The script returns once its sriov_numvfs write did, i.e. with the VFs there.
    if let Some(last) = due.iter().max().copied() {
        let bound = cmd.timeout.map(|t| state::now_ms() + t.as_millis() as u64);
        let until = bound.map_or(last, |b| b.min(last));
        loop {
            let now = state::now_ms();
            if now >= until {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis((until - now).min(20)));
        }
        if bound.is_some_and(|b| b < last) {
            return Err(anyhow::Error::new(crate::seam::TimedOut {
                program: cmd.program.clone(),
                after: cmd.timeout.unwrap_or_default(),
            }));
        }
        // The clock thread has made them appear by now, unless it is behind: then do it here
        // (only when needed, so as not to queue behind the per-VF groups that follow).
        let shown = |pf: &str| {
            std::fs::read_to_string(
                k.root
                    .join(format!("{}/sriov_numvfs", layout::devdir(m, pf))),
            )
            .is_ok_and(|n| n.trim() != "0")
        };
        if !staged_pfs.iter().all(|pf| shown(pf)) {
            k.apply_due();
        }
    }
    ok(out)
}

/// `0:e8:0.0` / `e8:00.0` / `0000:e8:00.0` -> `0000:e8:00.0`.
pub fn normalize_addr(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        u32::from_str_radix(dom, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(dev, 16).ok()?,
        u32::from_str_radix(func, 16).ok()?
    ))
}

fn grub_mkconfig(k: &SimKernel, root: &Path, name: &str, a: &[&str]) -> Result<RunOutput> {
    if k.model.boot == Boot::Bls {
        // grub2-mkconfig on a BLS host regenerates grub.cfg, which does not hold the args.
        return ok("Generating grub configuration file ...\ndone\n");
    }
    let cfg = layout::regenerate_grub_cfg(root, k.model)?;
    let out_file = a
        .iter()
        .position(|x| *x == "-o")
        .and_then(|i| a.get(i + 1))
        .map(|s| s.trim_start_matches('/').to_string());
    let mut stdout = String::new();
    match (name, out_file) {
        ("update-grub", _) => {}
        (_, Some(f)) if f != "boot/grub/grub.cfg" => layout::put(root, &f, &cfg)?,
        (_, Some(_)) => {}
        // grub-mkconfig without -o prints the config (the seed redirected it into grub.cfg).
        (_, None) => stdout = cfg.clone(),
    }
    let stderr = format!(
        "Sourcing file `/etc/default/grub'\nGenerating grub configuration file ...\n\
         Found linux image: /boot/vmlinuz-{}\nFound initrd image: /boot/initrd.img-{}\ndone\n",
        k.model.os.kver, k.model.os.kver
    );
    Ok(RunOutput {
        status: 0,
        stdout,
        stderr,
    })
}

fn grubby(root: &Path, a: &[&str]) -> Result<RunOutput> {
    let entries_dir = root.join("boot/loader/entries");
    let mut entries: Vec<_> = std::fs::read_dir(&entries_dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries.reverse(); // newest kernel first, as grubby's index order
    let get = |p: &str| a.iter().find_map(|x| x.strip_prefix(p)).map(String::from);
    if let Some(which) = get("--info=") {
        let mut out = String::new();
        for (i, p) in entries.iter().enumerate() {
            let e = std::fs::read_to_string(p)?;
            let f = |k: &str| bootcfg::bls_field(&e, k).unwrap_or_default();
            let kernel = format!("/boot{}", f("linux"));
            if which != "ALL" && which != kernel && which != "DEFAULT" {
                continue;
            }
            let opts = f("options");
            let root_arg = opts
                .split_whitespace()
                .find_map(|w| w.strip_prefix("root="))
                .unwrap_or("")
                .to_string();
            let args: Vec<&str> = opts
                .split_whitespace()
                .filter(|w| !w.starts_with("root="))
                .collect();
            out.push_str(&format!(
                "index={i}\nkernel=\"{kernel}\"\nargs=\"{}\"\nroot=\"{root_arg}\"\ninitrd=\"/boot{}\"\ntitle=\"{}\"\nid=\"{}\"\n",
                args.join(" "),
                f("initrd"),
                f("title"),
                p.file_stem().unwrap_or_default().to_string_lossy()
            ));
        }
        return ok(out);
    }
    let Some(target) = get("--update-kernel=") else {
        return fail(
            1,
            "grubby: no action specified (the simulator plays --update-kernel and --info)\n",
        );
    };
    let add = get("--args=").unwrap_or_default();
    let remove = get("--remove-args=").unwrap_or_default();
    for p in &entries {
        let e = std::fs::read_to_string(p)?;
        let kernel = format!(
            "/boot{}",
            bootcfg::bls_field(&e, "linux").unwrap_or_default()
        );
        if target != "ALL" && target != kernel && target != "DEFAULT" {
            continue;
        }
        let opts = bootcfg::bls_field(&e, "options").unwrap_or_default();
        let new = bootcfg::set_bls_field(&e, "options", &bootcfg::edit_args(&opts, &add, &remove));
        if new != e {
            std::fs::write(p, new)?;
        }
    }
    // Recent grubby keeps /etc/default/grub in step, so a later kernel install inherits the args.
    if target == "ALL" {
        let p = root.join("etc/default/grub");
        if let Ok(t) = std::fs::read_to_string(&p) {
            let new = bootcfg::edit_assignment(&t, "GRUB_CMDLINE_LINUX", |o| {
                bootcfg::edit_args(o, &add, &remove)
            });
            if new != t {
                std::fs::write(&p, new)?;
            }
        }
    }
    ok("")
}

fn modprobe(k: &SimKernel, root: &Path, a: &[&str]) -> Result<RunOutput> {
    let remove = a.iter().any(|x| *x == "-r" || *x == "--remove");
    let mods: Vec<String> = a
        .iter()
        .filter(|x| !x.starts_with('-'))
        .map(|x| x.replace('-', "_"))
        .collect();
    let m = k.model;
    let kver = super::kernels::running(root, m);
    let installed = super::kernels::module_built(root, &kver);
    let mut err = String::new();
    k.with(|st| {
        for md in &mods {
            if remove && md == "nouveau" {
                err.push_str(&super::nouveau::remove(st).unwrap_or_default());
                continue;
            }
            if remove {
                let in_use = st.bound.values().any(|d| layout::module_of(d) == md);
                if in_use {
                    err.push_str(&format!("modprobe: FATAL: Module {md} is in use.\n"));
                } else {
                    st.modules.remove(md);
                }
                continue;
            }
            let available = match md.as_str() {
                "nvidia" => installed,
                "nvidia_vgpu_vfio" => installed && st.driver.is_some() && m.iface == Iface::Mdev,
                "nouveau" | "vfio_pci" | "vfio" | "mdev" | "vfio_pci_core" | "vfio_iommu_type1"
                | "kvm" | "kvm_intel" => true,
                _ => false,
            };
            if !available {
                err.push_str(&format!(
                    "modprobe: FATAL: Module {md} not found in directory /lib/modules/{kver}\n"
                ));
                continue;
            }
            if md == "nvidia"
                && st.opts.get("secure_boot").is_some_and(|v| v == "1")
                && !st.modules.contains("nvidia")
            {
                let signed = root
                    .join(format!("lib/modules/{kver}/updates/dkms/.signed"))
                    .exists();
                if !signed {
                    err.push_str(
                        "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service\n",
                    );
                    continue;
                }
            }
            if st.modules.insert(md.clone()) {
                if md == "nvidia_vgpu_vfio" {
                    st.modules.extend(
                        ["mdev", "vfio_pci_core", "vfio", "vfio_iommu_type1"].map(String::from),
                    );
                }
                // A new driver probes the devices nobody owns.
                if let Some(d) = layout::default_driver(m, st) {
                    if layout::module_of(d) == md {
                        for pf in m.pfs {
                            if !st.bound.contains_key(*pf) {
                                let _ = k.bind(st, pf, d);
                            }
                        }
                    }
                }
            }
        }
        layout::render_globals(root, m, st).map_err(|e| std::io::Error::other(e.to_string()))?;
        for pf in m.pfs {
            k.render_gpu(st, pf)?;
        }
        Ok(())
    })?;
    if err.is_empty() {
        ok("")
    } else {
        fail(1, err)
    }
}

/// Units enabled under the root (`*.target.wants/*` links), sorted, deduplicated.
pub(crate) fn enabled_units(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for base in ["etc/systemd/system"] {
        for e in std::fs::read_dir(root.join(base))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with(".wants") {
                for u in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    out.push(u.file_name().to_string_lossy().to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn unit_file(root: &Path, unit: &str) -> Option<String> {
    [
        "etc/systemd/system",
        "usr/local/lib/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ]
    .iter()
    .find_map(|d| std::fs::read_to_string(root.join(d).join(unit)).ok())
}

/// Enabled units whose `ExecStart` program is vgpuctl: (unit, argv, conditions hold).
pub(crate) fn enabled_vgpuctl_units(root: &Path) -> Vec<(String, Vec<String>, bool)> {
    let mut out = Vec::new();
    for u in enabled_units(root) {
        let Some(text) = unit_file(root, &u) else {
            continue;
        };
        let Some(exec) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("ExecStart="))
            .map(|s| s.trim_start_matches(['-', '@', '+', '!', ':']).to_string())
        else {
            continue;
        };
        let argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
        if argv
            .first()
            .is_none_or(|p| p.rsplit('/').next() != Some("vgpuctl"))
        {
            continue;
        }
        let cond_ok = path_conditions_hold(root, &text);
        out.push((u, argv, cond_ok));
    }
    out
}

/// systemd.unit(5), "Conditions and Asserts": every plain `ConditionPathExists=` must hold; those
/// written `|PATH` (triggering, `|` before any `!`) count when at least one of them holds.
fn path_conditions_hold(root: &Path, text: &str) -> bool {
    let mut any_trigger = false;
    let mut a_trigger_holds = false;
    for c in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ConditionPathExists="))
    {
        let (trigger, c) = match c.strip_prefix('|') {
            Some(c) => (true, c),
            None => (false, c),
        };
        let (neg, p) = match c.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, c),
        };
        let holds = root.join(p.trim_start_matches('/')).exists() != neg;
        if trigger {
            any_trigger = true;
            a_trigger_holds |= holds;
        } else if !holds {
            return false;
        }
    }
    !any_trigger || a_trigger_holds
}

fn wanted_by(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("WantedBy="))
        .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect()
}

fn systemctl(k: &SimKernel, root: &Path, a: &[&str]) -> Result<RunOutput> {
    // Options that do not change what the simulator does; `--root DIR` is the root itself.
    let mut words: Vec<&str> = Vec::new();
    let mut skip = false;
    for x in a.iter().copied() {
        if skip {
            skip = false;
        } else if x == "--root" {
            skip = true;
        } else if !x.starts_with("--root=")
            && !matches!(
                x,
                "-q" | "--quiet" | "--no-block" | "--no-pager" | "--system"
            )
        {
            words.push(x);
        }
    }
    let now = words.contains(&"--now");
    let words: Vec<&str> = words.into_iter().filter(|w| *w != "--now").collect();
    let Some((verb, units)) = words.split_first() else {
        return fail(1, "systemctl: no verb\n");
    };
    let unit_name = |u: &str| {
        if u.contains('.') {
            u.to_string()
        } else {
            format!("{u}.service")
        }
    };
    match *verb {
        "daemon-reload" => ok(""),
        "reboot" => {
            k.with(|st| {
                st.reboot_requested = true;
                Ok(())
            })?;
            ok("")
        }
        "enable" | "disable" => {
            let mut out = String::new();
            for u in units {
                let u = unit_name(u);
                let Some(text) = unit_file(root, &u) else {
                    return fail(
                        1,
                        format!("Failed to {verb} unit: Unit file {u} does not exist.\n"),
                    );
                };
                for target in wanted_by(&text) {
                    let l = format!("etc/systemd/system/{target}.wants/{u}");
                    if *verb == "enable" {
                        let src = [
                            "etc/systemd/system",
                            "usr/lib/systemd/system",
                            "lib/systemd/system",
                        ]
                        .iter()
                        .map(|d| format!("{d}/{u}"))
                        .find(|p| root.join(p).is_file())
                        .unwrap_or_default();
                        // Relative (systemctl writes absolute links), so the link resolves inside the root.
                        layout::link(root, &l, &format!("../../../../{src}"))?;
                        out.push_str(&format!("Created symlink /{l} → /{src}.\n"));
                    } else if root.join(&l).symlink_metadata().is_ok() {
                        layout::unlink(root, &l);
                        out.push_str(&format!("Removed \"/{l}\".\n"));
                    }
                }
                if now {
                    k.set_service(&u, *verb == "enable")?;
                }
            }
            Ok(RunOutput {
                status: 0,
                stdout: String::new(),
                stderr: out,
            })
        }
        "start" | "restart" | "stop" => {
            for u in units {
                let u = unit_name(u);
                if unit_file(root, &u).is_none() {
                    return fail(5, format!("Failed to {verb} {u}: Unit {u} not found.\n"));
                }
                k.set_service(&u, *verb != "stop")?;
            }
            ok("")
        }
        "is-active" => {
            let u = unit_name(units.first().copied().unwrap_or(""));
            let active = k.with(|st| Ok(st.active_services.contains(&u)))?;
            if active {
                ok("active\n")
            } else {
                Ok(RunOutput {
                    status: 3,
                    stdout: "inactive\n".into(),
                    stderr: String::new(),
                })
            }
        }
        "is-enabled" => {
            let u = unit_name(units.first().copied().unwrap_or(""));
            if unit_file(root, &u).is_none() {
                return Ok(RunOutput {
                    status: 1,
                    stdout: String::new(),
                    stderr: format!(
                        "Failed to get unit file state for {u}: No such file or directory\n"
                    ),
                });
            }
            if enabled_units(root).contains(&u) {
                ok("enabled\n")
            } else {
                Ok(RunOutput {
                    status: 1,
                    stdout: "disabled\n".into(),
                    stderr: String::new(),
                })
            }
        }
        _ => fail(
            1,
            format!("systemctl {verb}: not played by the vgpuctl simulator\n"),
        ),
    }
}

fn nvidia_smi(k: &SimKernel, a: &[&str]) -> Result<RunOutput> {
    let m = k.model;
    let st = k.with(|st| Ok(st.clone()))?;
    let Some(ver) = super::branch::loaded_version(&st) else {
        return fail(
            9,
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
        );
    };
    let mode = if st.driver.is_some() && m.vgpu_capable() {
        "Host VGPU"
    } else if m.vm.is_some() {
        "Pass-Through"
    } else {
        "None"
    };
    let hetero_driver = mode == "Host VGPU" && driver_major(&ver) >= 550;
    if a.first() == Some(&"vgpu") && a.contains(&"-shm") {
        return set_mixed_size(k, a, hetero_driver);
    }
    if a.first() == Some(&"mig") {
        return super::mig::smi_mig(k, &a[1..]);
    }
    if a.contains(&"-mig") || a.contains(&"--multi-instance-gpu") {
        return super::mig::set_mode(k, a);
    }
    if let Some(q) = a.iter().find_map(|x| x.strip_prefix("--query-gpu=")) {
        return query_gpu(k, &st, q, a);
    }
    if a.first() == Some(&"-q") {
        let mut out = format!("\n==============NVSMI LOG==============\n\nDriver Version                            : {ver}\n");
        if hetero_driver {
            // The driver-level line as cubecos recorded it (sic, recorded-behaviour §3).
            out.push_str(
                "vGPU Driver Capability\n        Heterogenous Multi-vGPU           : Supported\n",
            );
        }
        out.push_str(&format!(
            "\nAttached GPUs                             : {}\n",
            m.pfs.len()
        ));
        for pf in m.pfs {
            out.push_str(&format!(
                "GPU 0000{pf}\n    Product Name                          : NVIDIA {}\n    GPU Virtualization Mode\n        Virtualization Mode               : {mode}\n        Host VGPU Mode                    : {}\n",
                m.gpu,
                if m.sriov_total > 0 { "SR-IOV" } else { "Non SR-IOV" }
            ));
            out.push_str(&super::mig::q_block(m, &st, pf));
            if hetero_driver {
                // Placement of these lines in the GPU block is *a guess*; the names are
                // cubecos's (issue 1316).
                let (cap, state) = if m.mixed_size_gpu() {
                    let on = st.mixed_size.contains(*pf);
                    ("Supported", if on { "Enabled" } else { "Disabled" })
                } else {
                    ("Not Supported", "N/A")
                };
                out.push_str(&format!(
                    "    vGPU Device Capability\n        Heterogeneous Time-Slice Profiles : {cap}\n    vGPU Heterogeneous Mode               : {state}\n"
                ));
            }
        }
        return ok(out);
    }
    let mut out = format!(
        "| NVIDIA-SMI {ver}             Driver Version: {ver}     CUDA Version: N/A      |\n"
    );
    for (i, pf) in m.pfs.iter().enumerate() {
        let n = st.vgpus.iter().filter(|v| v.pf == *pf).count();
        out.push_str(&format!(
            "|   {i}  NVIDIA {:<24}|   0000{}  | vGPUs: {n}\n",
            m.gpu,
            pf.to_uppercase()
        ));
    }
    ok(out)
}

/// `nvidia-smi --query-gpu=FIELDS --format=csv[,noheader]`: the fields vgpuctl reads
/// (`index`, `pci.bus_id`, `name`, `mig.mode.current`, `mig.mode.pending`, the last two as the
/// recorded sources read them, §5); another field is refused as nvidia-smi refuses an unknown one.
fn query_gpu(k: &SimKernel, st: &state::State, fields: &str, a: &[&str]) -> Result<RunOutput> {
    let m = k.model;
    let gpus = match super::mig::targets(m, a) {
        Ok(g) => g,
        Err(e) => return fail(6, e),
    };
    let names: Vec<&str> = fields.split(',').map(str::trim).collect();
    let mut out = String::new();
    if !a.iter().any(|x| x.contains("noheader")) {
        out.push_str(&names.join(", "));
        out.push('\n');
    }
    for (i, pf) in gpus {
        let (cur, pend) = super::mig::mode_values(m, st, &pf);
        let mut row = Vec::new();
        for f in &names {
            row.push(match *f {
                "index" => i.to_string(),
                "pci.bus_id" => super::mig::bus_id(&pf),
                "name" => format!("NVIDIA {}", m.gpu),
                "mig.mode.current" => cur.clone(),
                "mig.mode.pending" => pend.clone(),
                other => {
                    return fail(
                        2,
                        format!("Field \"{other}\" is not a valid field to query.\n"),
                    )
                }
            });
        }
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    ok(out)
}

fn driver_major(ver: &str) -> u32 {
    ver.split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `nvidia-smi vgpu -i <index|PCI bus id> -shm 0|1`: mixed-size (heterogeneous) mode on or off
/// (recorded-behaviour §4: refused while a vGPU exists on the GPU). Output wording and exit
/// codes are *guesses* (nvidia-smi's documented codes: 3 not supported, 6 not found, 255 other);
/// `In use by another client` is the recorded refusal's text.
fn set_mixed_size(k: &SimKernel, a: &[&str], hetero_driver: bool) -> Result<RunOutput> {
    let m = k.model;
    let arg = |flag: &str| {
        a.iter()
            .position(|x| *x == flag)
            .and_then(|i| a.get(i + 1))
            .copied()
    };
    let (Some(gpu), Some(value)) = (arg("-i"), arg("-shm")) else {
        return fail(2, "Invalid combination of input arguments.\n");
    };
    let on = match value {
        "1" => true,
        "0" => false,
        _ => return fail(2, format!("Invalid value for -shm: {value}\n")),
    };
    let pf = match gpu.parse::<usize>() {
        Ok(i) => m.pfs.get(i).map(|s| s.to_string()),
        Err(_) => normalize_addr(gpu).filter(|p| m.pfs.contains(&p.as_str())),
    };
    let Some(pf) = pf else {
        return fail(6, format!("No GPU found with id {gpu}\n"));
    };
    let shown = format!("0000{}", pf.to_uppercase());
    if !hetero_driver || !m.mixed_size_gpu() {
        return fail(
            3,
            format!("Setting vGPU heterogeneous mode is not supported for GPU {shown}.\n"),
        );
    }
    let mut refused = None;
    k.with(|st| {
        if st.vgpus.iter().any(|v| v.pf == pf) {
            refused = Some(format!(
                "Failed to set vGPU heterogeneous mode for GPU {shown}: In use by another client\n"
            ));
        } else if on {
            st.mixed_size.insert(pf.clone());
        } else {
            st.mixed_size.remove(&pf);
        }
        Ok(())
    })?;
    if let Some(msg) = refused {
        return fail(255, msg);
    }
    ok(format!(
        "vGPU heterogeneous mode {} for GPU {shown}.\n",
        if on { "enabled" } else { "disabled" }
    ))
}

/// The `.run` archive: `--check`, `--version`, `-x`, or an install (`--dkms -s ...`).
fn run_installer(k: &SimKernel, root: &Path, file: &str, a: &[&str]) -> Result<RunOutput> {
    let info = match driver_pkg::play(root, file, a)? {
        Ok(info) => info,
        Err(answered) => return Ok(answered),
    };
    if a.contains(&"--uninstall") {
        return uninstall_driver(k, root);
    }
    if !a.contains(&"--no-nouveau-check") && k.with(|st| Ok(super::nouveau::drives_a_device(st)))? {
        layout::put(
            root,
            "var/log/nvidia-installer.log",
            super::nouveau::INSTALLER_REFUSAL,
        )?;
        return fail(1, super::nouveau::INSTALLER_REFUSAL);
    }
    if !info.target.ends_with("vgpu-kvm") {
        return fail(
            1,
            "ERROR: this simulated guest driver cannot be installed on a host\n",
        );
    }
    let out = install_driver(k, root, &info.version, a, true)?;
    if out.status == 0 {
        k.with(|st| {
            st.package = None;
            Ok(())
        })?;
    }
    Ok(out)
}

/// `leaves_uninstaller`: nvidia-installer (a `.run`) leaves `nvidia-uninstall`; a package does
/// not (its package manager removes it).
fn install_driver(
    k: &SimKernel,
    root: &Path,
    version: &str,
    a: &[&str],
    leaves_uninstaller: bool,
) -> Result<RunOutput> {
    let m = k.model;
    let secure_boot = k.opt("secure_boot").is_some_and(|v| v == "1");
    let signed = a
        .iter()
        .any(|x| x.starts_with("--module-signing-secret-key"));
    let mut log = format!(
        "Verifying archive integrity... OK\nUncompressing NVIDIA Accelerated Graphics Driver for Linux-x86_64 {version}\n\n\
         nvidia-installer log file '/var/log/nvidia-installer.log'\ncreation time: simulated\n\n"
    );
    if secure_boot && !signed {
        log.push_str(
            "ERROR: The kernel module failed to load. Secure boot is enabled on this system, so this is \
             likely because it was not signed by a key that is trusted by the kernel. Please try \
             installing the driver again, and sign the kernel module when prompted to do so.\n\
             ERROR: Installation has failed.\n",
        );
        layout::put(root, "var/log/nvidia-installer.log", &log)?;
        return fail(1, log);
    }
    // A real install writes hundreds of files (libraries, modules built by DKMS) and the manager's
    // unit is not the last of them: a disk that fills part-way leaves the unit behind.
    if let Err(e) = super::put_driver_files(root, m, version, true)
        .and_then(|_| super::put_driver_payload(root, m, version))
    {
        let why = e
            .downcast_ref::<std::io::Error>()
            .map(|io| io.to_string())
            .unwrap_or_else(|| format!("{e:#}"));
        log.push_str(&format!(
            "ERROR: Unable to install files: {why}\nERROR: Installation has failed.  Please see \
             the file '/var/log/nvidia-installer.log' for details.\n"
        ));
        let _ = layout::put(root, "var/log/nvidia-installer.log", &log);
        return fail(1, log);
    }
    // nvidia-installer leaves its uninstaller, `nvidia-uninstall` (what `.run --uninstall`
    // does), in /usr/bin; a package install does not (the package manager removes those).
    if leaves_uninstaller {
        layout::put_mode(
            root,
            "usr/bin/nvidia-uninstall",
            &format!("#!/bin/sh\n# vgpuctl simulator stub: nvidia-uninstall {version}\nexit 0\n"),
            0o755,
        )?;
    }
    if signed {
        layout::put(
            root,
            &format!(
                "lib/modules/{}/updates/dkms/.signed",
                super::kernels::running(root, m)
            ),
            "",
        )?;
    }
    // `--dkms`: the installer registers the module's sources with DKMS, which rebuilds it for
    // later kernels (when their headers are there, §7).
    if a.contains(&"--dkms") {
        super::kernels::register(root, version)?;
    }
    // The installer enables the manager (nvidia-vgpud runs on demand).
    let u = "nvidia-vgpu-mgr.service";
    layout::link(
        root,
        &format!("etc/systemd/system/multi-user.target.wants/{u}"),
        &format!("../../../../usr/lib/systemd/system/{u}"),
    )?;
    k.with(|st| {
        st.driver = Some(version.to_string());
        Ok(())
    })?;
    log.push_str("Installing DKMS kernel module:\n  done.\n\nInstallation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: ");
    log.push_str(version);
    log.push_str(") is now complete.  Please reboot your system.\n");
    layout::put(root, "var/log/nvidia-installer.log", &log)?;
    ok(log)
}

/// `NVIDIA-Linux-...-vgpu-kvm.run --uninstall`: nvidia-installer's own option ("Uninstall the
/// currently installed NVIDIA driver", its --help). A guess at the effect, not recorded: the files
/// the install wrote and the manager's enablement go, and the directories left empty by that.
fn uninstall_driver(k: &SimKernel, root: &Path) -> Result<RunOutput> {
    let Some(version) = k.with(|st| Ok(st.driver.clone()))? else {
        return fail(1, "ERROR: No NVIDIA driver is currently installed.\n");
    };
    super::remove_driver_files(root, k.model, &version)?;
    k.with(|st| {
        st.driver = None;
        Ok(())
    })?;
    let log = format!(
        "Uninstalling NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version {version})\n         Uninstallation of existing driver: NVIDIA Accelerated Graphics Driver for Linux-x86_64          ({version}) is complete.\n"
    );
    layout::put(root, "var/log/nvidia-uninstall.log", &log)?;
    ok(log)
}

fn package_install(k: &SimKernel, root: &Path, name: &str, a: &[&str]) -> Result<RunOutput> {
    if !a.contains(&"install") {
        return fail(
            1,
            format!(
                "{name}: the simulator plays only `install -y <file>` and `remove -y <name>`\n"
            ),
        );
    }
    if let Some(out) = super::kernels::install_headers_package(k.model, root, name, a)? {
        return Ok(out);
    }
    let Some(pkg) = a
        .iter()
        .find(|x| x.ends_with(".deb") || x.ends_with(".rpm"))
    else {
        return fail(
            100,
            format!("E: {name}: the simulator has no package repository\n"),
        );
    };
    if !root
        .join(pkg.trim_start_matches("./").trim_start_matches('/'))
        .is_file()
        && !root.join(pkg.trim_start_matches('/')).is_file()
    {
        return fail(
            100,
            format!("E: Unsupported file {pkg} given on commandline\n"),
        );
    }
    if !pkg.contains("nvidia-vgpu") && !pkg.contains("NVIDIA-vGPU") {
        return fail(100, format!("E: {pkg}: not an NVIDIA vGPU package\n"));
    }
    // nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb / NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm
    let version = pkg
        .split(['_', '-'])
        .find(|p| {
            p.matches('.').count() == 2 && p.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .map(|v| v.trim_end_matches(".x86").to_string())
        .unwrap_or_else(|| super::DRIVER_VERSION.to_string());
    // NVIDIA's packages build the module with DKMS, as the `.run`'s `--dkms` does (the sources
    // under /usr/src/nvidia-<version>; a guess, not recorded).
    let out = install_driver(k, root, &version, &["--dkms", "-s"], false)?;
    if out.status == 0 {
        let name = super::packages::package_name(pkg);
        k.with(|st| {
            st.package = name.clone();
            st.package_known = name;
            Ok(())
        })?;
    }
    Ok(out)
}

/// nouveau is blacklisted in a modprobe.d file (`blacklist nouveau` or an `install nouveau
/// /bin/false` override).
pub(crate) fn nouveau_blacklisted(root: &Path) -> bool {
    ["etc/modprobe.d", "usr/lib/modprobe.d", "run/modprobe.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".conf"))
                .any(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .map(|l| {
                            l.split('#')
                                .next()
                                .unwrap_or("")
                                .split_whitespace()
                                .collect::<Vec<_>>()
                        })
                        .any(|w| {
                            matches!(
                                w.as_slice(),
                                ["blacklist", "nouveau"] | ["install", "nouveau", ..]
                            )
                        })
                })
        })
}
