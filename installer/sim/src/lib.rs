//! The simulated host: a directory laid out like a real Linux root plus a kernel that plays the
//! kernel and the NVIDIA stack behind the same I/O layer as a real host.
//!
//! `open` builds or loads a root; [`SimKernel`] answers sysfs writes and program runs from a
//! persistent [`state::State`] and re-renders the files they affect; [`reboot`] plays a boot.
//!
//! This crate does not depend on vgpuctl: [`SimHost`], [`Cmd`] and [`RunOutput`] are its own
//! small interface (see `seam`), which vgpuctl's binary adapts to its `Kernel` seam.

pub mod bootcfg;
pub mod branch;
pub mod driver_pkg;
mod kernel;
pub mod kernels;
pub mod layout;
pub mod makeself;
pub mod mig;
pub mod models;
mod modprobe;
mod nouveau;
mod packages;
mod programs;
pub mod seam;
pub mod state;
pub mod vfio_persist;

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use kernel::SimKernel;
use models::{FreshDriver, Model};
pub use seam::{Cmd, RunOutput, SimHost, TimedOut};
use state::State;

/// The models `--simulate` accepts (each also as `<model>-ready`).
pub const MODELS: &[&str] = &[
    "a40x8",
    "t4x2",
    "l40s-vfio",
    "rtxpro6000-vfio",
    "rhel-a10",
    "proxmox-l4",
    "cloud-h100",
    "geforce",
    "a100-mig",
    "h200x8-vfio",
];

/// The vGPU host driver the simulated driver package carries (the seed's), and `-ready` models
/// but those of another driver branch (`Model::driver`: 580 on `rtxpro6000-vfio`).
pub const DRIVER_VERSION: &str = "550.163.02";

/// Sim options (`--sim-opt KEY=VALUE`) and what they do.
pub const OPTS: &[(&str, &str)] = &[
    (
        "vf_delay_ms",
        "VFs appear this long after `sriov-manage -e` (default 0)",
    ),
    (
        "create_ms",
        "each vGPU creation takes this long (default 0)",
    ),
    (
        "vfs_never",
        "1: `sriov-manage -e` exits 0 but VFs never appear",
    ),
    (
        "create_fail",
        "PCI address(es), comma-separated: creating a vGPU there fails with EBUSY",
    ),
    (
        "secure_boot",
        "1: Secure Boot is on (unsigned modules fail to install)",
    ),
    (
        "nouveau_fbcon",
        "0: the console is not on nouveau's framebuffer (a headless host), so nouveau can be unloaded",
    ),
    (
        "driver_delay_ms",
        "after a boot, the GPUs get their driver this long later (udev race)",
    ),
    (
        "vf_group_ms",
        "each VF's vGPU sysfs group appears this long after the previous one, once \
         `sriov-manage -e` returned (default 2)",
    ),
    (
        "unbind_lock_busy",
        "N: `sriov-manage -e` fails N times with `Cannot obtain unbindLock`, then works",
    ),
    (
        "boot_race",
        "1: the first `sriov-manage` after each boot fails (vGPU manager still starting)",
    ),
    (
        "hang",
        "PROGRAM[@ADDR], comma-separated: that program (on that PCI address) never returns",
    ),
    (
        "vfio_persist",
        "cmdline|modprobe|driverctl|udev: a persisted vfio-pci binding of the GPUs (see vfio_persist)",
    ),
    (
        "new_kernel",
        "VERSION[:noheaders]: a newer kernel is installed (the boot loader starts it next), with \
         its headers or without them; the NVIDIA module is not built for it",
    ),
];

/// Open the simulated host at `root`: build it when `root` is empty or missing (model may end in
/// "-ready"), or load it; error (naming both) when the root holds another model or is a non-empty
/// non-sim directory. `opts` are "KEY=VALUE" strings from repeated --sim-opt, validated (unknown
/// key -> error listing the known ones), merged into the persisted state (an empty VALUE clears).
pub fn open(root: &Path, model: &str, opts: &[String]) -> Result<SimHost> {
    let Some((spec, ready)) = models::parse(model) else {
        bail!(
            "unknown simulated model {model:?}: use one of {} (each also as MODEL-ready)",
            MODELS.join(", ")
        );
    };
    let parsed = parse_opts(opts)?;
    let empty = match std::fs::read_dir(root) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    if empty {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create simulated root {}", root.display()))?;
        build(root, spec, model, ready, &parsed)?;
    } else {
        match detect(root) {
            None => bail!(
                "{} is not empty and is not a simulated host: give --simulate an empty or new \
                 directory as --root",
                root.display()
            ),
            Some(found)
                if found.strip_suffix("-ready").unwrap_or(&found)
                    != model.strip_suffix("-ready").unwrap_or(model) =>
            {
                bail!(
                    "{} holds the simulated model {found:?}, not {model:?}: use --simulate \
                     {found} or a new --root",
                    root.display()
                )
            }
            Some(_) => {}
        }
    }
    let root = root.canonicalize()?;
    let k = SimKernel::load(&root, spec)?;
    k.reconcile()?;
    // A root built just now holds the options already; the source is planted all the same.
    let persisted = if empty { None } else { k.opt("vfio_persist") };
    if !parsed.is_empty() {
        k.merge_opts(&parsed)?;
        // A kernel update can also land on a host in use (before its next reboot).
        if !empty {
            plant_new_kernel(&root, spec, &parsed)?;
        }
    }
    // Events that fell due while no process had the root open happen now.
    k.apply_due();
    let host = SimHost::new(root, k);
    // A newly named vfio-pci binding source is planted once (the admin's edit).
    let planted = parsed.iter().rev().find(|(k, _)| k == "vfio_persist");
    if let Some((_, kind)) = planted.filter(|(_, v)| !v.is_empty() && Some(v) != persisted.as_ref())
    {
        vfio_persist::plant(&host, spec, kind)?;
    }
    Ok(host)
}

/// The simulated host at `root` as it was built (any model), e.g. for `vgpuctl sim reboot`.
pub fn attach(root: &Path) -> Result<SimHost> {
    let st = state::load(root).context("not a simulated root")?;
    let (m, _) = models::parse(&st.model).context("unknown model in the simulator state")?;
    let root = root.canonicalize()?;
    let k = SimKernel::load(&root, m)?;
    k.apply_due();
    Ok(SimHost::new(root, k))
}

/// The model of a simulated root, if it is one.
pub fn detect(root: &Path) -> Option<String> {
    state::load(root).ok().map(|s| s.model)
}

fn parse_opts(opts: &[String]) -> Result<Vec<(String, String)>> {
    let known: Vec<&str> = OPTS.iter().map(|(k, _)| *k).collect();
    let mut out = Vec::new();
    for o in opts {
        let Some((k, v)) = o.split_once('=') else {
            bail!(
                "--sim-opt {o:?} is not KEY=VALUE; known keys: {}",
                known.join(", ")
            );
        };
        let k = k.trim();
        if !known.contains(&k) {
            bail!(
                "unknown --sim-opt key {k:?}; known keys: {}",
                known.join(", ")
            );
        }
        let v = v.trim();
        let numeric = matches!(
            k,
            "vf_delay_ms" | "create_ms" | "driver_delay_ms" | "vf_group_ms"
        );
        if numeric && !v.is_empty() && v.parse::<u64>().is_err() {
            bail!("--sim-opt {k}={v:?}: expected milliseconds (a whole number)");
        }
        if k == "unbind_lock_busy" && !v.is_empty() && v.parse::<u32>().is_err() {
            bail!("--sim-opt {k}={v:?}: expected a count (a whole number)");
        }
        if k == "hang" {
            for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                if let Some((_, addr)) = h.split_once('@') {
                    if programs::normalize_addr(addr).is_none() {
                        bail!("--sim-opt hang={v:?}: {addr:?} is not a PCI address (ssss:bb:dd.f)");
                    }
                }
            }
        }
        if matches!(
            k,
            "vfs_never" | "secure_boot" | "boot_race" | "nouveau_fbcon"
        ) && !matches!(v, "" | "0" | "1")
        {
            bail!("--sim-opt {k}={v:?}: expected 0 or 1");
        }
        if k == "vfio_persist" && !v.is_empty() && !vfio_persist::KINDS.contains(&v) {
            bail!(
                "--sim-opt vfio_persist={v:?}: expected one of {}",
                vfio_persist::KINDS.join(", ")
            );
        }
        if k == "new_kernel" && !v.is_empty() && kernels::parse_new_kernel(v).is_none() {
            bail!("--sim-opt new_kernel={v:?}: expected VERSION or VERSION:noheaders (e.g. 6.8.0-60-generic:noheaders)");
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn build(
    root: &Path,
    m: &'static Model,
    name: &str,
    ready: bool,
    opts: &[(String, String)],
) -> Result<()> {
    let mut st = State {
        model: name.to_string(),
        ..State::default()
    };
    for (k, v) in opts {
        if !v.is_empty() {
            st.opts.insert(k.clone(), v.clone());
        }
    }
    layout::build_static(root, m, &st)?;
    // The freshly booted machine.
    st.boot_count = 1;
    st.boot_id = uuid::Uuid::new_v4().to_string();
    st.cmdline = layout::boot_cmdline(root, m);
    st.modules = base_modules(m);
    // The running kernel's headers are there (a driver install builds against them).
    kernels::plant_headers(root, m, m.os.kver)?;
    std::fs::write(
        root.join("lib/modules").join(m.os.kver).join("modules.dep"),
        "",
    )?;
    match m.fresh {
        FreshDriver::VfioPci => {
            st.modules.extend(
                [
                    "nouveau",
                    "vfio_pci",
                    "vfio_pci_core",
                    "vfio",
                    "vfio_iommu_type1",
                ]
                .map(String::from),
            );
            for pf in m.pfs {
                st.bound.insert(pf.to_string(), "vfio-pci".into());
            }
        }
        FreshDriver::Nouveau => {
            st.modules
                .extend(["nouveau", "drm_kms_helper", "drm"].map(String::from));
            for pf in m.pfs {
                st.bound.insert(pf.to_string(), "nouveau".into());
            }
        }
        FreshDriver::Datacenter(v) => {
            st.datacenter_driver = Some(v.to_string());
            st.modules.insert("nvidia".into());
            for pf in m.pfs {
                st.bound.insert(pf.to_string(), "nvidia".into());
            }
            put_driver_files(root, m, v, false)?;
        }
    }
    st.iommu = iommu_active(m, &st.cmdline);
    state::save(root, &st)?;
    layout::render_all(root, m, &st)?;
    // Where an operator would put the licensed zip (the seed's file name). Every model has it,
    // so a profile naming it validates everywhere and refusals come from the hardware.
    driver_pkg::build_driver_zip(
        &root.join("root").join(driver_pkg::zip_name(DRIVER_VERSION)),
        DRIVER_VERSION,
    )?;
    if ready {
        make_ready(root, m)?;
    }
    plant_new_kernel(root, m, opts)
}

/// `new_kernel=`: a kernel update installed since the last boot (after a -ready host's
/// bring-up): on disk, the boot loader's next default (the package's postinst runs update-grub),
/// not running. Once: a kernel already installed is left as it is.
fn plant_new_kernel(root: &Path, m: &Model, opts: &[(String, String)]) -> Result<()> {
    let new_kernel = opts
        .iter()
        .find(|(k, _)| k == "new_kernel")
        .and_then(|(_, v)| kernels::parse_new_kernel(v));
    if let Some((v, headers)) = new_kernel {
        if root.join(format!("boot/vmlinuz-{v}")).exists() {
            return Ok(());
        }
        kernels::plant(root, m, &v, headers)?;
        if m.boot == models::Boot::Grub {
            layout::regenerate_grub_cfg(root, m)?;
        }
    }
    Ok(())
}

/// `-ready`: what an operator's bring-up leaves: IOMMU on in the boot config, nouveau
/// blacklisted and the initramfs rebuilt, the host driver installed, then a reboot. Done through
/// the same simulated programs a real run would use.
fn make_ready(root: &Path, m: &'static Model) -> Result<()> {
    let host = SimHost::new(root.to_path_buf(), SimKernel::load(root, m)?);
    let args = match m.cpu {
        models::Cpu::Intel => "intel_iommu=on iommu=pt",
        models::Cpu::Amd => "iommu=pt",
    };
    let run = |c: Cmd| -> Result<()> {
        let out = host.run(&c)?;
        if !out.success() {
            bail!("building the -ready model: `{c}` failed: {}", out.tail(5));
        }
        Ok(())
    };
    match m.boot {
        models::Boot::Grub => {
            let p = root.join("etc/default/grub");
            let t = std::fs::read_to_string(&p)?;
            let t = bootcfg::edit_assignment(&t, "GRUB_CMDLINE_LINUX_DEFAULT", |o| {
                bootcfg::edit_args(o, args, "")
            });
            std::fs::write(&p, t)?;
            run(Cmd::new("update-grub"))?;
        }
        models::Boot::Bls => {
            run(Cmd::new("grubby").args(["--update-kernel=ALL", &format!("--args={args}")]))?
        }
        models::Boot::SystemdBoot => {
            let p = root.join("etc/kernel/cmdline");
            let t = std::fs::read_to_string(&p)?;
            std::fs::write(&p, format!("{}\n", bootcfg::edit_args(t.trim(), args, "")))?;
            run(Cmd::new("proxmox-boot-tool").arg("refresh"))?;
        }
    }
    std::fs::write(
        root.join("etc/modprobe.d/blacklist-nouveau.conf"),
        "blacklist nouveau\noptions nouveau modeset=0\n",
    )?;
    if m.os.debian {
        run(Cmd::new("update-initramfs").arg("-u"))?;
    } else {
        run(Cmd::new("dracut").arg("-f"))?;
    }
    // NVIDIA's installer refuses while nouveau drives a GPU: the blacklist takes effect first.
    reboot(&host, &[])?;
    // The model's own driver branch (580 on an RTX PRO 6000 Blackwell).
    let run_file = format!("root/{}", driver_pkg::run_name(m.driver));
    driver_pkg::build_run(&root.join(&run_file), m.driver)?;
    run(Cmd::new(format!("/{run_file}")).args(["--dkms", "-s"]))?;
    std::fs::remove_file(root.join(&run_file))?;
    reboot(&host, &[])?;
    Ok(())
}

fn base_modules(m: &Model) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    if m.vm.is_none() {
        s.insert(
            if m.cpu == models::Cpu::Intel {
                "kvm_intel"
            } else {
                "kvm"
            }
            .to_string(),
        );
        s.insert("kvm".to_string());
    }
    s
}

/// IOMMU groups exist iff the firmware table is there and the kernel turned the IOMMU on:
/// AMD's is on by default, Intel's needs `intel_iommu=on` (Ubuntu/RHEL kernels default off).
pub(crate) fn iommu_active(m: &Model, cmdline: &str) -> bool {
    let has = |a: &str| cmdline.split_whitespace().any(|w| w == a);
    m.firmware_iommu
        && match m.cpu {
            models::Cpu::Amd => !has("amd_iommu=off") && !has("iommu=off"),
            models::Cpu::Intel => has("intel_iommu=on") && !has("iommu=off"),
        }
}

/// The files NVIDIA's installer leaves (the sim's `--dkms -s` and package installs).
pub(crate) fn put_driver_files(root: &Path, m: &Model, version: &str, vgpu: bool) -> Result<()> {
    let stub = |p: &str, what: &str| {
        layout::put_mode(
            root,
            p,
            &format!("#!/bin/sh\n# vgpuctl simulator stub: {what} {version}\nexit 0\n"),
            0o755,
        )
    };
    stub("usr/bin/nvidia-smi", "nvidia-smi")?;
    let kdir = format!("lib/modules/{}/updates/dkms", kernels::running(root, m));
    layout::put(
        root,
        &format!("{kdir}/nvidia.ko"),
        &format!("simulated nvidia.ko {version}\n"),
    )?;
    if vgpu {
        stub("usr/lib/nvidia/sriov-manage", "sriov-manage")?;
        stub("usr/bin/nvidia-vgpu-mgr", "nvidia-vgpu-mgr")?;
        stub("usr/bin/nvidia-vgpud", "nvidia-vgpud")?;
        layout::put(
            root,
            "usr/lib/systemd/system/nvidia-vgpu-mgr.service",
            driver_pkg::VGPU_MGR_UNIT,
        )?;
        layout::put(
            root,
            "usr/lib/systemd/system/nvidia-vgpud.service",
            driver_pkg::VGPUD_UNIT,
        )?;
        if m.iface == models::Iface::Mdev {
            layout::put(root, &format!("{kdir}/nvidia-vgpu-vfio.ko"), "simulated\n")?;
        }
    }
    Ok(())
}

/// Undo [`put_driver_files`] and [`put_driver_payload`] (`.run --uninstall`): their files, the
/// manager's wants link the installer made, then the directories that left empty.
pub(crate) fn remove_driver_files(root: &Path, m: &Model, version: &str) -> Result<()> {
    // DKMS removes the module it built for every kernel (`dkms remove --all`).
    for kv in kernels::installed(root) {
        if kv != kernels::running(root, m) {
            let kdir = format!("lib/modules/{kv}/updates/dkms");
            for f in ["nvidia.ko", "nvidia-vgpu-vfio.ko"] {
                let _ = std::fs::remove_file(root.join(format!("{kdir}/{f}")));
            }
            let _ = std::fs::remove_dir(root.join(&kdir));
            let _ = std::fs::remove_dir(root.join(format!("lib/modules/{kv}/updates")));
        }
    }
    kernels::unregister(root, version);
    let running = kernels::running(root, m);
    let kdir = format!("lib/modules/{running}/updates/dkms");
    let mut files: Vec<String> = [
        "usr/bin/nvidia-smi",
        "usr/bin/nvidia-uninstall",
        "usr/lib/nvidia/sriov-manage",
        "usr/bin/nvidia-vgpu-mgr",
        "usr/bin/nvidia-vgpud",
        "usr/lib/systemd/system/nvidia-vgpu-mgr.service",
        "usr/lib/systemd/system/nvidia-vgpud.service",
        "etc/systemd/system/multi-user.target.wants/nvidia-vgpu-mgr.service",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in [
        "nvidia.ko",
        "nvidia-vgpu-vfio.ko",
        "nvidia-sim.complete",
        ".signed",
    ] {
        files.push(format!("{kdir}/{f}"));
    }
    for i in 0..PAYLOAD_FILES {
        files.push(format!(
            "usr/lib/x86_64-linux-gnu/nvidia/libnvidia-sim-{i:02}.so.{version}"
        ));
    }
    for f in &files {
        match std::fs::remove_file(root.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let kver = running;
    for d in [
        kdir.as_str(),
        &format!("lib/modules/{kver}/updates"),
        &format!("lib/modules/{kver}"),
        "lib/modules",
        "usr/lib/nvidia",
        "usr/lib/x86_64-linux-gnu/nvidia",
        "usr/lib/x86_64-linux-gnu",
    ] {
        // Only an empty one goes (remove_dir refuses the others).
        let _ = std::fs::remove_dir(root.join(d));
    }
    Ok(())
}

/// The bulk of a driver install, after the binaries and units `put_driver_files` writes: user-space
/// libraries and the DKMS module tree (`PAYLOAD_FILES` x 256 KiB), the last one a marker that the
/// install got to its end.
pub(crate) fn put_driver_payload(root: &Path, m: &Model, version: &str) -> Result<()> {
    let chunk = vec![b'x'; PAYLOAD_CHUNK];
    for i in 0..PAYLOAD_FILES {
        let p = root.join(format!(
            "usr/lib/x86_64-linux-gnu/nvidia/libnvidia-sim-{i:02}.so.{version}"
        ));
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, &chunk)?;
    }
    let kdir = format!("lib/modules/{}/updates/dkms", kernels::running(root, m));
    layout::put(root, &format!("{kdir}/nvidia-sim.complete"), version)?;
    Ok(())
}

pub const PAYLOAD_FILES: usize = 24;
const PAYLOAD_CHUNK: usize = 256 * 1024;

/// What `vgpuctl sim reboot` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RebootReport {
    pub boot_id: String,
    pub cmdline: String,
    pub units: Vec<UnitRun>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct UnitRun {
    pub unit: String,
    pub command: Vec<String>,
    /// Exit code; None when a condition skipped it.
    pub status: Option<i32>,
    pub output: String,
}

impl std::fmt::Display for RebootReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulated reboot: boot id {}", self.boot_id)?;
        writeln!(f, "  /proc/cmdline: {}", self.cmdline)?;
        if self.units.is_empty() {
            writeln!(f, "  no enabled vgpuctl units ran")?;
        }
        for u in &self.units {
            match u.status {
                Some(s) => writeln!(f, "  ran {} ({}): exit {s}", u.unit, u.command.join(" "))?,
                None => writeln!(f, "  skipped {} (condition not met)", u.unit)?,
            }
        }
        Ok(())
    }
}

/// `vgpuctl sim reboot`: new boot id, /proc/cmdline from the boot-loader config, VFs and vGPUs
/// gone, modules/drivers/services as a boot would leave them, then run enabled units.
/// `relaunch` = argv prefix to run this binary on the same simulated root, e.g.
/// [current_exe, "--root", DIR, "--simulate", MODEL]; a unit `ExecStart=/usr/local/sbin/vgpuctl restore`
/// is run as relaunch + ["restore"]. Returns a report (units run, their exit codes).
pub fn reboot(host: &SimHost, relaunch: &[String]) -> Result<RebootReport> {
    let root: PathBuf = host.root().to_path_buf();
    let st0 = state::load(&root).context("not a simulated root")?;
    let (m, _) = models::parse(&st0.model).context("unknown model in the simulator state")?;
    let k = SimKernel::load(&root, m)?;
    let st = k.boot()?;
    let mut report = RebootReport {
        boot_id: st.boot_id.clone(),
        cmdline: st.cmdline.clone(),
        units: Vec::new(),
    };
    for (unit, exec, cond_ok) in programs::enabled_vgpuctl_units(&root) {
        if !cond_ok {
            report.units.push(UnitRun {
                unit,
                command: exec,
                status: None,
                output: String::new(),
            });
            continue;
        }
        if !root.join(exec[0].trim_start_matches('/')).is_file() {
            // systemd: "Failed to locate executable ...: No such file or directory" (203/EXEC).
            report.units.push(UnitRun {
                output: format!(
                    "{unit}: Failed to locate executable {}: No such file or directory\n",
                    exec[0]
                ),
                unit,
                command: exec,
                status: Some(203),
            });
            continue;
        }
        if relaunch.is_empty() {
            bail!("unit {unit} runs vgpuctl but no relaunch command was given");
        }
        let mut argv: Vec<String> = relaunch.to_vec();
        argv.extend(exec.iter().skip(1).cloned());
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot start {} for unit {unit}", argv[0]))?;
        let status = out.status.code().unwrap_or(128);
        k.set_service(&unit, status == 0)?;
        report.units.push(UnitRun {
            unit,
            command: argv,
            status: Some(status),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(report)
}

/// The state of a simulated host, for tests and `sim` subcommands.
pub fn state_of(host: &SimHost) -> Result<State> {
    state::load(host.root())
}

#[cfg(test)]
mod tests;
