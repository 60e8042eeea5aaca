//! `vgpuctl check`: judge the observed host. Pure: findings from [`HostFacts`], no I/O.

use serde::Serialize;

use crate::facts::{BootLoader, CpuVendor, HostFacts, Interface};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Blocker,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub message: String,
    /// The `vgpuctl setup` step that will do it, or the manual action. Empty when ok.
    pub fix: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuSummary {
    pub address: String,
    pub model: String,
    pub device_id: String,
    pub vgpu_supported: bool,
    pub reason: Option<String>,
    pub memory_gib: Option<u32>,
    pub driver: Option<String>,
    pub interface: String,
    pub vfs_enabled: u32,
    pub vfs_total: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub gpus: Vec<GpuSummary>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn blockers(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .count()
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn ok(&mut self, id: &str, message: impl Into<String>) {
        self.push(id, Severity::Ok, message, "");
    }
    fn warn(&mut self, id: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(id, Severity::Warn, message, fix);
    }
    fn block(&mut self, id: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(id, Severity::Blocker, message, fix);
    }
    fn push(
        &mut self,
        id: &str,
        severity: Severity,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Finding {
            id: id.to_string(),
            severity,
            message: message.into(),
            fix: fix.into(),
        });
    }
}

pub fn check(f: &HostFacts) -> Report {
    let mut out = Findings(Vec::new());
    let gpus: Vec<GpuSummary> = f
        .gpus
        .iter()
        .map(|g| GpuSummary {
            address: g.address.clone(),
            model: g.model.name.clone(),
            device_id: g.device_hex(),
            vgpu_supported: g.model.vgpu_supported,
            reason: g.model.reason.clone(),
            memory_gib: g.memory_gib(),
            driver: g.driver.clone(),
            interface: g.interface.as_str().to_string(),
            vfs_enabled: g.sriov_numvfs.unwrap_or(0),
            // A pre-Ampere PF may advertise VFs its vGPU driver never makes: not VFs to count.
            vfs_total: if g.sriov_capable() {
                g.sriov_totalvfs.unwrap_or(0)
            } else {
                0
            },
        })
        .collect();
    let supported: Vec<_> = f.gpus.iter().filter(|g| g.model.vgpu_supported).collect();

    // GPUs.
    if f.gpus.is_empty() {
        out.block(
            "gpu.none",
            "no NVIDIA GPU found under /sys/bus/pci/devices",
            "install an NVIDIA data-centre GPU that supports vGPU; check `lspci -nn | grep -i nvidia` \
             and that the card is seated and powered",
        );
    }
    for g in &f.gpus {
        let id = format!("gpu.{}", g.address);
        if g.model.vgpu_supported {
            out.ok(
                &id,
                format!(
                    "{} {} ({}) supports vGPU",
                    g.address,
                    g.model.name,
                    g.device_hex()
                ),
            );
        } else {
            let reason = g.model.reason.clone().unwrap_or_default();
            if supported.is_empty() {
                out.block(&id, format!("{} {}: {reason}", g.address, g.model.name),
                    "vGPU needs a GPU on NVIDIA's support list (docs.nvidia.com/vgpu/gpus-supported-by-vgpu.html)");
            } else {
                out.warn(
                    &id,
                    format!("{} {}: {reason}", g.address, g.model.name),
                    "setup leaves this GPU alone",
                );
            }
        }
    }

    // A VM guest cannot be a vGPU host.
    if f.is_vm {
        let what = f
            .dmi_vendor
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        let gpu_note = if f.gpus.is_empty() {
            ""
        } else {
            " with a passed-through GPU"
        };
        out.block(
            "host.vm",
            format!("this machine is a virtual machine{what}{gpu_note}: the CPU reports the `hypervisor` flag"),
            "run vgpuctl on the bare-metal KVM host; inside this VM install NVIDIA's guest or \
             data-centre driver instead (a cloud GPU instance is already a pass-through GPU)",
        );
    } else if !f.cpu_virt && !f.gpus.is_empty() {
        out.warn(
            "cpu.virt",
            "the CPU does not advertise hardware virtualization (vmx/svm)",
            "enable Intel VT-x / AMD-V (SVM) in the firmware setup",
        );
    }

    // IOMMU: firmware table, kernel command line, active.
    let vendor = match f.cpu_vendor {
        CpuVendor::Intel => "VT-d",
        CpuVendor::Amd => "AMD-Vi (IOMMU)",
        CpuVendor::Other => "the IOMMU",
    };
    match &f.firmware_iommu {
        Some(t) => out.ok(
            "iommu.firmware",
            format!("firmware publishes an IOMMU (ACPI {t} table)"),
        ),
        None if !f.is_vm => out.block(
            "iommu.firmware",
            "the firmware publishes no IOMMU (no ACPI DMAR or IVRS table)",
            format!(
                "enable {vendor} in the firmware (BIOS/UEFI) setup; for SR-IOV GPUs also enable \
                 SR-IOV and \"Above 4G decoding\"; then run vgpuctl check again"
            ),
        ),
        None => {}
    }
    let wanted = crate::setup::prereboot::wanted_args(f);
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|a| !crate::edit::kargs::has_args(&f.cmdline, &[a]))
        .collect();
    if missing.is_empty() {
        out.ok(
            "iommu.cmdline",
            format!("kernel command line has {}", wanted.join(" ")),
        );
    } else if !f.is_vm {
        out.warn(
            "iommu.cmdline",
            format!("kernel command line lacks {}", missing.join(" ")),
            format!(
                "`vgpuctl setup` adds it through {} (then a reboot)",
                f.boot.describe()
            ),
        );
    }
    if f.iommu_active {
        out.ok(
            "iommu.active",
            "IOMMU is active (/sys/kernel/iommu_groups is populated)",
        );
    } else if !f.is_vm && f.firmware_iommu.is_some() {
        out.warn(
            "iommu.active",
            "IOMMU is not active yet (/sys/kernel/iommu_groups is empty)",
            "`vgpuctl setup` fixes the kernel command line; it takes effect after the reboot setup asks for",
        );
    }
    if f.boot == BootLoader::Unknown && !f.is_vm && !missing.is_empty() {
        out.warn(
            "boot.loader",
            "no supported boot loader configuration found (GRUB, grubby/BLS, /etc/kernel/cmdline)",
            format!("add `{}` to the kernel command line by hand, reboot, and set iommu = \"skip\" in the profile", wanted.join(" ")),
        );
    }

    // Secure Boot.
    if f.secure_boot == Some(true) {
        out.warn(
            "secure_boot",
            "Secure Boot is on: the driver's kernel modules must be signed with an enrolled key",
            "give signing_key and signing_cert in the profile's [driver] section (enrol the \
             certificate with `mokutil --import`), or disable Secure Boot",
        );
    }

    // nouveau and vfio-pci.
    if f.modules.nouveau {
        out.warn(
            "nouveau",
            "the nouveau driver is loaded and would claim the GPUs",
            "`vgpuctl setup` blacklists nouveau and rebuilds the initramfs",
        );
    } else if !f.gpus.is_empty() && f.nouveau_blacklisted {
        out.ok("nouveau", "nouveau is blacklisted");
    }
    for g in supported
        .iter()
        .filter(|g| g.driver.as_deref() == Some("vfio-pci"))
    {
        out.warn(
            &format!("vfio.{}", g.address),
            format!(
                "{} is bound to vfio-pci (passed through), not to the NVIDIA driver",
                g.address
            ),
            "`vgpuctl setup` unbinds it before installing the driver",
        );
    }

    // What gives them to vfio-pci again at every boot (a runtime unbind alone does not last).
    for (i, b) in f.vfio_persist.bindings.iter().enumerate() {
        let caught: Vec<&String> = b
            .gpus
            .iter()
            .filter(|a| supported.iter().any(|g| g.address == **a))
            .collect();
        if caught.is_empty() {
            continue;
        }
        out.warn(
            &format!("vfio.persist.{i}.{}", b.file),
            format!(
                "`{}` in {} gives {} to vfio-pci at every boot",
                b.text,
                b.file,
                caught
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            b.fix(),
        );
    }

    // Host driver and services.
    let d = &f.driver;
    if !f.is_vm {
        match (&d.loaded_version, d.installed()) {
            (Some(v), true) => out.ok("driver", format!("NVIDIA vGPU host driver {v} is loaded")),
            (None, true) => out.warn(
                "driver",
                "the NVIDIA vGPU host driver is installed but not loaded",
                "reboot (setup's reboot checkpoint), then run setup again",
            ),
            (Some(v), false) => out.warn(
                "driver",
                format!("NVIDIA driver {v} is loaded but it is not the vGPU host (vgpu-kvm) driver"),
                "`vgpuctl setup` installs the GRID host driver from the profile's [driver]",
            ),
            (None, false) if !supported.is_empty() => out.warn(
                "driver",
                "the NVIDIA vGPU host driver is not installed",
                "`vgpuctl setup` installs it from the profile's [driver] (a licensed url or a local file)",
            ),
            (None, false) => {}
        }
        if d.loaded_version.is_some() && d.installed() {
            match d.vgpu_mgr_active {
                Some(true) => out.ok("vgpu_mgr", "nvidia-vgpu-mgr.service is running"),
                Some(false) => out.warn(
                    "vgpu_mgr",
                    "nvidia-vgpu-mgr.service is not running",
                    "`systemctl enable --now nvidia-vgpu-mgr.service`; see `journalctl -u nvidia-vgpu-mgr`",
                ),
                None => {}
            }
            if supported.iter().any(|g| g.sriov_capable()) && !d.sriov_manage {
                out.warn(
                    "sriov_manage",
                    "/usr/lib/nvidia/sriov-manage is missing",
                    "reinstall the vGPU host driver",
                );
            }
        }
    }

    if !f.is_vm && (d.installed() || !supported.is_empty()) {
        kernel_findings(f, &mut out);
    }

    // SR-IOV and vGPUs.
    for g in supported.iter().filter(|g| g.sriov_capable()) {
        let (n, t) = (g.sriov_numvfs.unwrap_or(0), g.sriov_totalvfs.unwrap_or(0));
        if t > 0 && n == t {
            out.ok(
                &format!("sriov.{}", g.address),
                format!("{} has {n}/{t} VFs enabled", g.address),
            );
        } else if d.loaded_version.is_some() {
            out.warn(
                &format!("sriov.{}", g.address),
                format!("{} has {n}/{t} virtual functions enabled", g.address),
                "`vgpuctl setup` (and the restore unit at every boot) runs sriov-manage -e",
            );
        }
        if g.interface != Interface::None {
            let used = f
                .vgpus()
                .iter()
                .filter(|v| v.gpu.as_deref() == Some(&g.address))
                .count();
            out.ok(
                &format!("vgpus.{}", g.address),
                format!(
                    "{} uses the {} interface, {used} vGPU(s)",
                    g.address,
                    g.interface.as_str()
                ),
            );
        }
    }

    // Persistence.
    if !f.rc_local.is_empty() {
        out.warn(
            "rc_local",
            format!(
                "/etc/rc.local has {} line(s) creating vGPUs or VFs by hand (e.g. line {})",
                f.rc_local.len(),
                f.rc_local[0].line
            ),
            "`vgpuctl import` moves them into the restore unit and comments them out",
        );
    }
    if f.active_profile {
        if f.restore_unit_enabled {
            out.ok("restore_unit", "vgpuctl-restore.service is enabled");
        } else {
            out.warn(
                "restore_unit",
                "an active profile exists but vgpuctl-restore.service is not enabled: vGPUs will be gone after a reboot",
                "`vgpuctl setup --profile /etc/vgpuctl/profile.toml` re-installs and enables it",
            );
        }
    }

    let findings = out.0;
    let ready = !findings.iter().any(|f| f.severity == Severity::Blocker);
    Report {
        ready,
        gpus,
        findings,
    }
}

/// Per GPU: its mixed-size (heterogeneous) mode as the loaded driver reports it (`nvidia-smi -q`,
/// recorded-behaviour.md §3, §4), against the GPUs the pins run in that mode (`pinned`). Nothing
/// for a GPU the driver gave no answer for.
pub fn mixed_size_findings(f: &HostFacts, pinned: &[String]) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    for g in f.gpus.iter().filter(|g| g.model.vgpu_supported) {
        let Some(m) = g.mixed_size else { continue };
        let id = format!("mixed_size.{}", g.address);
        // In MIG mode sizes mix by GPU instance profile, never by mixed-size mode (NVIDIA
        // supports neither on one GPU at once): "one vGPU type per GPU" would be wrong there.
        if g.mig_mode.is_some_and(|x| x.current || x.pending) && !m.enabled {
            out.ok(
                &id,
                format!(
                    "{}: in MIG mode, vGPUs of different sizes sit on GPU instances of different                      profiles (mixed-size mode does not apply)",
                    g.address
                ),
            );
            continue;
        }
        let wanted = pinned.contains(&g.address);
        match (m.supported, m.enabled, wanted) {
            (_, true, _) => out.ok(
                &id,
                format!(
                    "{}: mixed-size mode is on (vGPUs of different sizes side by side)",
                    g.address
                ),
            ),
            (false, _, true) => out.warn(
                &id,
                format!(
                    "{}: its pins hold vGPUs of several types, but its driver reports no \
                     mixed-size mode: only one type can be made",
                    g.address
                ),
                "a vGPU 17 or later host driver (the GPU must have the mode), or pin one type \
                     per GPU (change the profile and run setup)",
            ),
            (true, false, true) => out.warn(
                &id,
                format!(
                    "{}: pinned in mixed-size mode, but the mode is off now (it does not survive \
                     a reboot, and sriov-manage -e clears it)",
                    g.address
                ),
                "`vgpuctl restore` turns it on after SR-IOV and before the first vGPU, as the \
                     restore unit does at every boot (the driver switches only a GPU holding no vGPU)",
            ),
            (true, false, false) => out.ok(
                &id,
                format!(
                    "{}: mixed-size mode available, off (equal-size: one vGPU type); several \
                     [[gpus]] entries with different types on this GPU turn it on",
                    g.address
                ),
            ),
            (false, false, false) => out.ok(
                &id,
                format!(
                    "{}: no mixed-size mode (its driver says not supported): one vGPU type per \
                     GPU; mixed sizes need a vGPU 17 or later driver on a GPU that has the mode",
                    g.address
                ),
            ),
        }
    }
    out.0
}

/// On Proxmox VE, who does what with the GPUs, so vgpuctl's restore and Proxmox never take the
/// same VF: vgpuctl-restore.service enables SR-IOV and recreates the pinned vGPUs at boot;
/// Proxmox (qemu-server) creates a VM's vGPU itself at VM start on a function its `hostpciN`
/// names with `mdev=` (an mdev, or a `current_vgpu_type` write on the vendor-specific VFIO
/// interface); pve-nvidia-vgpu-helper's `pve-nvidia-sriov@` units run `sriov-manage -e`, which
/// leaves a GPU whose VFs are enabled as it is (recorded-behaviour.md §2). A `hostpciN` with
/// `mdev=` that may take a VF holding a pinned vGPU is a warning; one without `mdev=` gives the
/// VM that vGPU. `pins`: (parent, GPU, UUID, type name) of every pin.
pub fn proxmox_findings(
    px: &crate::facts::proxmox::ProxmoxFacts,
    pins: &[(String, String, String, String)],
    restore_enabled: bool,
) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    // A VF holds one vGPU; a PF without SR-IOV holds many and is shared.
    let pinned_vfs: Vec<&(String, String, String, String)> = pins
        .iter()
        .filter(|(parent, gpu, _, _)| parent != gpu)
        .collect();
    let with_mdev = px.hostpci.iter().filter(|h| h.mdev.is_some()).count();
    let restore = match (pins.is_empty(), restore_enabled) {
        (true, _) => {
            "vgpuctl pins no vGPU (vgpuctl-restore.service has nothing to recreate)".to_string()
        }
        (false, true) => format!(
            "vgpuctl-restore.service enables SR-IOV and recreates {} pinned vGPU(s) at every boot",
            pins.len()
        ),
        (false, false) => format!(
            "{} vGPU(s) are pinned but vgpuctl-restore.service is not enabled (`vgpuctl setup` \
             enables it)",
            pins.len()
        ),
    };
    out.ok(
        "proxmox.roles",
        format!(
            "Proxmox VE: {restore}; Proxmox creates a VM's vGPU at VM start for each hostpci with \
             mdev= ({with_mdev} configured), on the VFs vgpuctl does not pin"
        ),
    );
    for unit in &px.sriov_units {
        out.ok(
            &format!("proxmox.sriov.{unit}"),
            format!(
                "pve-nvidia-sriov@{unit}.service also enables SR-IOV at boot: sriov-manage leaves \
                 a GPU whose VFs are enabled as it is, so it and vgpuctl-restore.service agree"
            ),
        );
    }
    for h in &px.hostpci {
        for (parent, _, uuid, type_name) in &pinned_vfs {
            if !h.functions.contains(parent) {
                continue;
            }
            let via = h
                .mapping
                .as_ref()
                .map(|m| format!(" (mapping {m})"))
                .unwrap_or_default();
            let id = format!("proxmox.vf.{}.{}.{parent}", h.vmid, h.key);
            let short = crate::vgpu_name::short(type_name);
            match (&h.mdev, &h.mapping) {
                (Some(t), Some(m)) => out.warn(
                    &id,
                    format!(
                        "VM {} {}{via} with mdev={t} may take VF {parent}, which holds vGPU \
                         {uuid} ({short}) that vgpuctl recreates at every boot",
                        h.vmid, h.key
                    ),
                    format!(
                        "remove {parent} from mapping {m} (`vgpuctl export --proxmox` prints the \
                         mappings without pinned VFs), or unpin the vGPU (lower its count and run \
                         setup)"
                    ),
                ),
                (Some(t), None) => out.warn(
                    &id,
                    format!(
                        "VM {} {} asks Proxmox for an mdev={t} vGPU on VF {parent}, which already \
                         holds vGPU {uuid} ({short}) that vgpuctl recreates at every boot: the VM \
                         cannot start with it",
                        h.vmid, h.key
                    ),
                    format!(
                        "give VM {} another VF (or a mapping from `vgpuctl export --proxmox`), or \
                         drop mdev= to pass it vgpuctl's vGPU as it is",
                        h.vmid
                    ),
                ),
                (None, _) => out.ok(
                    &id,
                    format!(
                        "VM {} {}{via} passes through VF {parent}: it gets vgpuctl's vGPU {uuid} \
                         ({short})",
                        h.vmid, h.key
                    ),
                ),
            }
        }
    }
    out.0
}

/// A vGPU type the active profile asks for on a GPU: (GPU address, type name, MIG-backed).
pub type WantedType = (String, String, bool);

/// Per GPU the driver gave a MIG answer for: its MIG capability and mode (current and pending,
/// recorded-behaviour.md §5), with the `nvidia-smi` command when the profile's types need the
/// other mode: MIG-backed types live in GPU instances (MIG on), time-sliced ones need it off.
pub fn mig_findings(f: &HostFacts, wanted: &[WantedType]) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    for g in f.gpus.iter().filter(|g| g.model.vgpu_supported) {
        let Some(m) = g.mig_mode else { continue };
        let id = format!("mig.{}", g.address);
        let a = &g.address;
        let names = |mig: bool| {
            let mut n: Vec<&str> = wanted
                .iter()
                .filter(|(addr, _, m)| addr == a && *m == mig)
                .map(|(_, t, _)| t.as_str())
                .collect();
            n.dedup();
            n.join(", ")
        };
        let (mig_types, sliced_types) = (names(true), names(false));
        let word = |on: bool| if on { "on" } else { "off" };
        let mode = format!(
            "MIG mode {} (pending: {})",
            word(m.current),
            word(m.pending)
        );
        if !m.capable {
            if !mig_types.is_empty() {
                out.warn(
                    &id,
                    format!("{a}: no MIG on this GPU, but the profile asks for {mig_types}"),
                    "a MIG-backed type needs a GPU with MIG (A100, A30, H100, H200, B200): pick a time-sliced type for this GPU",
                );
            }
            continue;
        }
        match (mig_types.is_empty(), sliced_types.is_empty()) {
            (false, _) if m.current => out.ok(
                &id,
                format!("{a}: MIG capable, {mode}: ready for {mig_types}"),
            ),
            (false, _) if m.pending => out.warn(
                &id,
                format!(
                    "{a}: MIG capable, {mode}: {mig_types} need it on, which waits for the GPU's reset"
                ),
                "reboot the host: the pending MIG mode takes effect when the GPU resets",
            ),
            (false, _) => out.warn(
                &id,
                format!("{a}: MIG capable, {mode}: {mig_types} need it on"),
                format!(
                    "`vgpuctl setup` turns it on; by hand: `nvidia-smi -i {a} -mig 1` (before sriov-manage -e; on an Ampere GPU the mode waits for a reboot)"
                ),
            ),
            (true, false) if m.current || m.pending => out.warn(
                &id,
                format!("{a}: MIG capable, {mode}: the time-sliced {sliced_types} need it off"),
                format!(
                    "`nvidia-smi -i {a} -mig 0` (the driver refuses while the GPU's VFs are enabled: `sriov-manage -d {a}` first)"
                ),
            ),
            _ => out.ok(&id, format!("{a}: MIG capable, {mode}")),
        }
    }
    out.0
}

/// What the vGPU scheduling policy is and will be, as `RmPVMRL` values (NVIDIA's vGPU user guide,
/// "Changing Scheduling Behavior for Time-Sliced vGPUs"; see [`crate::edit::registry_dwords`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerFacts {
    /// The loaded driver's (`/proc/driver/nvidia/params`): None when no driver shows one,
    /// Some(None) when its `NVreg_RegistryDwords` sets none (best effort, the default).
    pub loaded: Option<Option<u32>>,
    /// What modprobe.d gives the module at its next load (None: not set).
    pub configured: Option<u32>,
    /// What the active profile's `[host] scheduler` asks (None: leave the driver's).
    pub wanted: Option<u32>,
}

/// One finding on the scheduling policy, with the fix when it is not (yet) the wanted one.
pub fn scheduler_finding(s: &SchedulerFacts) -> Finding {
    use crate::edit::registry_dwords::{describe, format_value};
    let next = s.configured.unwrap_or(0);
    let now = s.loaded.map(|v| v.unwrap_or(0));
    let mut out = Findings(Vec::new());
    match (s.wanted, now) {
        (Some(w), _) if w != next => out.warn(
            "scheduler",
            format!(
                "vGPU scheduler: modprobe.d gives the driver {} at its next load; the profile asks {}",
                describe(next),
                describe(w)
            ),
            format!(
                "`vgpuctl setup --profile /etc/vgpuctl/profile.toml` sets RmPVMRL={} in the nvidia module's NVreg_RegistryDwords (modprobe.d); a reboot loads it",
                format_value(w)
            ),
        ),
        (_, Some(n)) if n != next => out.warn(
            "scheduler",
            format!(
                "vGPU scheduler: the loaded driver runs {}; modprobe.d gives {} at the next module load",
                describe(n),
                describe(next)
            ),
            "reboot to load the nvidia module with it",
        ),
        (_, Some(n)) => out.ok("scheduler", format!("vGPU scheduler: {} (loaded driver)", describe(n))),
        (_, None) => out.ok(
            "scheduler",
            format!(
                "vGPU scheduler: {} (modprobe.d; no loaded driver shows its options)",
                describe(next)
            ),
        ),
    }
    out.0.remove(0)
}

/// The human form of a report.
pub fn render(report: &Report, facts: &HostFacts) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let sim = if facts.simulated { " (simulated)" } else { "" };
    let _ = writeln!(
        s,
        "Host {}{sim}: {}, kernel {}, {}",
        facts.root,
        if facts.os.pretty_name.is_empty() {
            "unknown OS"
        } else {
            &facts.os.pretty_name
        },
        facts.kernel_release.as_deref().unwrap_or("?"),
        facts.boot.describe()
    );
    if report.gpus.is_empty() {
        let _ = writeln!(s, "\nGPUs: none");
    } else {
        let _ = writeln!(s, "\nGPUs");
        use crate::table::Align::{Left as L, Right as R};
        let head = [
            "ADDRESS",
            "MODEL",
            "ID",
            "MEMORY",
            "VGPU",
            "DRIVER",
            "INTERFACE",
            "VFs",
        ];
        let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        for g in &report.gpus {
            rows.push(vec![
                g.address.clone(),
                g.model.clone(),
                g.device_id.clone(),
                g.memory_gib
                    .map(|m| format!("{m} GiB"))
                    .unwrap_or_else(|| "?".into()),
                if g.vgpu_supported { "yes" } else { "no" }.into(),
                g.driver.clone().unwrap_or_else(|| "-".into()),
                g.interface.clone(),
                format!("{}/{}", g.vfs_enabled, g.vfs_total),
            ]);
        }
        s.push_str(&crate::table::render(&rows, &[L, L, L, R, L, L, L, L]));
    }
    let _ = writeln!(s, "\nFindings");
    let shown = grouped_findings(report);
    for f in &shown {
        let tag = match f.severity {
            Severity::Ok => "ok     ",
            Severity::Warn => "WARN   ",
            Severity::Blocker => "BLOCKER",
        };
        let _ = writeln!(s, "  {tag} {}", f.message);
        if !f.fix.is_empty() {
            let _ = writeln!(s, "          fix: {}", f.fix);
        }
    }
    // As shown: eight GPUs' identical warning is one item to look at.
    let warns = shown
        .iter()
        .filter(|f| f.severity == Severity::Warn)
        .count();
    let _ = writeln!(s);
    if let Some(up) = vgpu_is_up(facts).filter(|_| report.ready) {
        let look = if warns > 0 {
            format!("; {warns} item(s) above to look at")
        } else {
            String::new()
        };
        let _ = writeln!(s, "Verdict: {up}{look}");
    } else if report.ready {
        let _ = writeln!(s, "Verdict: ready for `vgpuctl setup` ({warns} item(s) setup will take care of or you should look at)");
    } else {
        let _ = writeln!(
            s,
            "Verdict: BLOCKED: {} blocker(s) must be fixed before `vgpuctl setup` can run",
            report.blockers()
        );
    }
    s
}

/// The findings as a person reads them: a per-GPU finding (id `KIND.ADDRESS`) that says the
/// same of several GPUs of one model is one finding naming them (see [`crate::gpu_group`]).
/// `--json` keeps one finding per GPU.
pub fn grouped_findings(report: &Report) -> Vec<Finding> {
    // A per-GPU finding's key: its model, severity, kind and words with the GPU taken out (a
    // NUL marks where it was named). Any other finding is its own group.
    #[derive(PartialEq)]
    enum Key {
        Gpu(String, Severity, String, String, String),
        Other(usize),
    }
    let key = |i: usize, f: &Finding| -> (Key, (usize, String)) {
        let Some(g) = report
            .gpus
            .iter()
            .find(|g| f.id.ends_with(&format!(".{}", g.address)))
        else {
            return (Key::Other(i), (i, String::new()));
        };
        let named = format!("{} {}", g.address, g.model);
        let cut = |t: &str| {
            if t.contains(&named) {
                t.replacen(&named, "\0", 1)
            } else {
                t.replace(&g.address, "\0")
            }
        };
        let kind = f.id[..f.id.len() - g.address.len()].to_string();
        let k = Key::Gpu(
            g.model.clone(),
            f.severity,
            kind,
            cut(&f.message),
            cut(&f.fix),
        );
        (k, (i, g.address.clone()))
    };
    let keyed = report.findings.iter().enumerate().map(|(i, f)| key(i, f));
    crate::gpu_group::group(keyed)
        .into_iter()
        .map(|(k, members)| match k {
            Key::Gpu(model, severity, kind, message, fix) if members.len() > 1 => {
                let addrs: Vec<String> = members.into_iter().map(|(_, a)| a).collect();
                let of_model = report.gpus.iter().filter(|g| g.model == model).count();
                let label = crate::gpu_group::label(&model, &addrs, addrs.len() == of_model);
                Finding {
                    id: format!("{kind}*"),
                    severity,
                    message: message.replace('\0', &label),
                    fix: fix.replace('\0', &label),
                }
            }
            // One GPU (or not about a GPU): its own words.
            _ => report.findings[members[0].0].clone(),
        })
        .collect()
}

/// What is true of a host that already runs vGPUs: how many, on how many GPUs, and whether
/// they come back at boot. None when the host has no vGPU (then it is a host for setup).
pub fn vgpu_is_up(facts: &HostFacts) -> Option<String> {
    let vgpus = facts.vgpus();
    if vgpus.is_empty() {
        return None;
    }
    let gpus: std::collections::BTreeSet<&str> = vgpus
        .iter()
        .map(|v| v.gpu.as_deref().unwrap_or(&v.parent))
        .collect();
    let n = |k: usize, one: &str| format!("{k} {one}{}", if k == 1 { "" } else { "s" });
    let at_boot = if facts.active_profile && facts.restore_unit_enabled {
        "restored at boot by vgpuctl-restore.service"
    } else {
        "not restored at boot by vgpuctl (`vgpuctl import` takes hand-made ones over)"
    };
    Some(format!(
        "vGPU is up: {} on {}, {at_boot}",
        n(vgpus.len(), "vGPU"),
        n(gpus.len(), "GPU")
    ))
}

/// The running kernel and the one the boot loader starts next: is an nvidia module built for
/// each, and are its headers there (DKMS builds the module only with them, recorded-behaviour §7).
fn kernel_findings(f: &HostFacts, out: &mut Findings) {
    use crate::facts::kernels::{headers_package, install_command, next_boot_need, NextBoot};
    let k = &f.kernels;
    let driver = f.driver.installed();
    let headers_word = |h: bool| if h { "installed" } else { "not installed" };
    if let Some(r) = &k.running {
        let v = &r.version;
        match (driver, r.module_built, r.headers) {
            (true, true, h) => {
                let said = format!(
                    "its module is built for the running kernel {v}, whose headers are {}",
                    headers_word(h)
                );
                // Said on the driver's own line when that one is fine: a finished host's list
                // stays short.
                match out
                    .0
                    .iter_mut()
                    .find(|x| x.id == "driver" && x.severity == Severity::Ok)
                {
                    Some(d) => d.message = format!("{}; {said}", d.message),
                    None => out.ok("kernel.running", format!("running kernel {v}: {said}")),
                }
            }
            (true, false, true) => out.block(
                "kernel.running",
                format!("running kernel {v}: no nvidia module is built for it (its headers are installed)"),
                format!("`dkms autoinstall -k {v}`, then reboot"),
            ),
            (true, false, false) => out.block(
                "kernel.running",
                format!("running kernel {v}: no nvidia module is built for it and its headers are not installed"),
                format!(
                    "`vgpuctl setup` installs {} and builds the module, then reboot (by hand: \
                     `{}`, then `dkms autoinstall -k {v}`)",
                    headers_package(&f.os, v),
                    install_command(&f.os, v)
                ),
            ),
            (false, _, true) => out.ok(
                "kernel.running",
                format!("running kernel {v}: its headers are installed (the driver install builds its module against them)"),
            ),
            (false, _, false) => out.warn(
                "kernel.running",
                format!("running kernel {v}: its headers are not installed; the driver install cannot build its module"),
                format!("install {} (`{}`)", headers_package(&f.os, v), install_command(&f.os, v)),
            ),
        }
    }
    let Some(n) = &k.next else { return };
    if k.running.as_ref().is_some_and(|r| r.version == n.version) {
        return;
    }
    let v = &n.version;
    match next_boot_need(k, &f.os, driver) {
        NextBoot::Ready if driver => out.ok(
            "kernel.next",
            format!(
                "kernel {v}, which the boot loader starts next: an nvidia module is built for it; \
                 its headers are {}",
                headers_word(n.headers)
            ),
        ),
        NextBoot::Ready if !n.headers => out.warn(
            "kernel.next",
            format!("kernel {v}, which the boot loader starts next: its headers are not installed"),
            format!("install {} (`{}`)", headers_package(&f.os, v), install_command(&f.os, v)),
        ),
        NextBoot::Ready => out.ok(
            "kernel.next",
            format!("kernel {v}, which the boot loader starts next: its headers are installed"),
        ),
        NextBoot::Build { .. } => out.warn(
            "kernel.next",
            format!(
                "kernel {v}, which the boot loader starts next: no nvidia module is built for it \
                 (its headers are installed); after a reboot the host would have no vGPUs"
            ),
            format!("`vgpuctl setup` builds it before the reboot (`dkms autoinstall -k {v}`)"),
        ),
        NextBoot::NoDkms { .. } => out.warn(
            "kernel.next",
            format!(
                "kernel {v}, which the boot loader starts next: no nvidia module is built for it \
                 and the driver is not registered with DKMS; after a reboot the host would have no vGPUs"
            ),
            "reinstall the vGPU host driver with DKMS (`.run --dkms`, what `vgpuctl setup` does)",
        ),
        NextBoot::NoHeaders { package, .. } => out.block(
            "kernel.next",
            format!(
                "kernel {v}, which the boot loader starts next: no nvidia module is built for it \
                 and its headers are not installed; after a reboot the host would have no vGPUs"
            ),
            format!(
                "`vgpuctl setup` installs {package} and builds the module before the reboot \
                 (by hand: `{}`, then `dkms autoinstall -k {v}`)",
                install_command(&f.os, v)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(address: &str, model: &str) -> GpuSummary {
        GpuSummary {
            address: address.into(),
            model: model.into(),
            device_id: "10de:2235".into(),
            vgpu_supported: true,
            reason: None,
            memory_gib: Some(48),
            driver: Some("vfio-pci".into()),
            interface: "none".into(),
            vfs_enabled: 0,
            vfs_total: 32,
        }
    }

    fn vfio(address: &str) -> Finding {
        Finding {
            id: format!("vfio.{address}"),
            severity: Severity::Warn,
            message: format!(
                "{address} is bound to vfio-pci (passed through), not to the NVIDIA driver"
            ),
            fix: "`vgpuctl setup` unbinds it before installing the driver".into(),
        }
    }

    #[test]
    fn findings_true_of_some_gpus_of_a_model_name_each_and_models_stay_apart() {
        let a = ["0000:67:00.0", "0000:68:00.0", "0000:e8:00.0"];
        let report = Report {
            ready: true,
            gpus: vec![
                gpu(a[0], "A40"),
                gpu(a[1], "A40"),
                gpu(a[2], "A40"),
                gpu("0000:17:00.0", "L4"),
            ],
            findings: vec![vfio(a[0]), vfio("0000:17:00.0"), vfio(a[2])],
        };
        let shown: Vec<String> = grouped_findings(&report)
            .iter()
            .map(|f| f.message.clone())
            .collect();
        assert_eq!(
            shown,
            [
                "2 × A40 0000:67:00.0, 0000:e8:00.0 is bound to vfio-pci (passed through), not to the NVIDIA driver",
                "0000:17:00.0 is bound to vfio-pci (passed through), not to the NVIDIA driver",
            ]
        );
    }
}
