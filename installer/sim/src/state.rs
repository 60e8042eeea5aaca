//! The simulated machine's persistent state (`<root>/.vgpuctl-sim/state.json`): what the kernel
//! and the NVIDIA stack hold in memory on a real host. The sysfs/procfs files under the root are
//! rendered from it, so every vgpuctl process that opens the root sees the same machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const STATE_DIR: &str = ".vgpuctl-sim";
pub const STATE_FILE: &str = ".vgpuctl-sim/state.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// As built: "a40x8" or "a40x8-ready".
    pub model: String,
    pub opts: BTreeMap<String, String>,
    pub boot_count: u32,
    pub boot_id: String,
    pub cmdline: String,
    pub pending: Vec<Pending>,
    pub active_services: BTreeSet<String>,
    pub reboot_requested: bool,
    /// Loaded kernel modules (names as in /proc/modules).
    pub modules: BTreeSet<String>,
    /// Installed vgpu-kvm host driver version (files on disk; loaded only after a reboot).
    pub driver: Option<String>,
    /// The package manager's name of the installed driver when it came from a `.deb`/`.rpm`
    /// (None for a `.run` install): what `apt-get remove` / `dnf remove` accepts.
    pub package: Option<String>,
    /// The last NVIDIA package name installed, kept after its removal: apt still knows it.
    pub package_known: Option<String>,
    /// The vGPU host driver version the nvidia module was loaded from at the last boot: an
    /// install or `--uninstall` changes the files, the module in memory stays until the next boot.
    pub loaded_driver: Option<String>,
    /// Installed datacenter driver (cloud GPU instance).
    pub datacenter_driver: Option<String>,
    /// The initramfs was last rebuilt while nouveau was blacklisted in modprobe.d.
    pub initramfs_blacklists_nouveau: bool,
    /// The IOMMU is active this boot (groups exist).
    pub iommu: bool,
    /// PCI device -> bound driver name (PFs and VFs).
    pub bound: BTreeMap<String, String>,
    pub overrides: BTreeMap<String, String>,
    /// PF -> number of enabled VFs.
    pub numvfs: BTreeMap<String, u32>,
    /// VFs whose vGPU sysfs group (`mdev_supported_types/` or `nvidia/`) the driver has filled
    /// in: it appears per VF some time after `sriov-manage -e` returned (recorded-behaviour §2).
    pub vf_groups: BTreeSet<String>,
    /// The boot (`boot_count`) whose first `sriov-manage` already failed (`boot_race=1`).
    pub boot_race_played: u32,
    /// How many `Cannot obtain unbindLock` failures were played (`unbind_lock_busy=N`).
    pub unbind_lock_failures: u32,
    pub vgpus: Vec<Vgpu>,
    /// `NVreg_RegistryDwords` as modprobe.d gave it when the nvidia module last loaded (at boot):
    /// shown in `/proc/driver/nvidia/params`; a later modprobe.d edit waits for the next boot.
    pub registry_dwords: String,
    /// GPUs (PFs) in mixed-size (heterogeneous) mode, turned on by `nvidia-smi vgpu -i N -shm 1`
    /// (recorded-behaviour §4). Driver memory: a boot or `sriov-manage -e` (§2) clears it.
    pub mixed_size: BTreeSet<String>,
    /// GPUs (PFs) whose MIG mode is on now (`mig.mode.current`, recorded-behaviour §5).
    pub mig_current: BTreeSet<String>,
    /// GPUs whose MIG mode is on once the GPU is reset (`mig.mode.pending`): differs from
    /// `mig_current` while a change waits for the reset (an Ampere GPU, until the next boot).
    pub mig_pending: BTreeSet<String>,
    /// MIG GPU instances (`nvidia-smi mig -cgi`). Driver memory: a boot, a rebind by
    /// `sriov-manage -e` (§2) or the PF's unbind wipes them.
    pub gpu_instances: Vec<GpuInstance>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInstance {
    pub pf: String,
    /// The id the driver handed out (`-lgi`'s Instance ID).
    pub id: u32,
    /// Its GPU instance profile id (`-lgip`'s ID).
    pub profile: u32,
    /// Placement: first memory slice and slice count (`-lgi`'s Start:Size).
    pub start: u32,
    pub size: u32,
    /// Its default compute instance exists (`-cgi ... -C`, or `-cci`).
    #[serde(default)]
    pub compute: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vgpu {
    /// The mdev UUID; empty on vendor-specific VFIO (the kernel has none).
    pub uuid: String,
    pub parent: String,
    pub pf: String,
    pub type_id: u32,
    /// A MIG-backed vGPU's GPU instance (its `id`): the driver binds one per vGPU.
    #[serde(default)]
    pub gpu_instance: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Wall-clock milliseconds since the epoch (shared by every process on the root).
    pub due_ms: u64,
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// `sriov-manage -e` finishing: the PF's VFs appear.
    EnableVfs { pf: String },
    /// The driver filling in one VF's vGPU sysfs group after its VFs appeared.
    VfGroup { vf: String },
    /// udev binding a driver to a device some time after boot.
    Bind { dev: String, driver: String },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where each save leaves a fresh random token: the stamp another process compares with the one
/// it last saw, to reload only when someone else saved. Not the state file's metadata: a save
/// is a rename of a new file, its inode number can be the one freed two saves ago, ext4 sets
/// mtime from the coarse clock (one tick is several ms) and two saves can have the same length;
/// a process trusting that triple would keep a stale state and save it over a change it never
/// saw. (Inode numbers were seen to alternate between two values here; this kernel's multigrain
/// timestamps kept mtimes apart, an older kernel's coarse ones would not.)
pub const GEN_FILE: &str = ".vgpuctl-sim/gen";

/// There while a process may be rendering files from a changed state (see `SimKernel::with`).
pub const DIRTY_FILE: &str = ".vgpuctl-sim/dirty";

/// The state's change stamp: the token the last save wrote.
pub fn stamp(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join(GEN_FILE)).ok()
}

/// Hold the root's state lock (`flock` on `.vgpuctl-sim/lock`) until the returned file is
/// dropped: every process on the root that changes the state loads, changes and saves it under
/// this lock, so no process saves over a change it did not see (each one's clock thread applies
/// due events, even in a process that is only waiting). None when the lock cannot be taken.
pub fn lock(root: &Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(STATE_DIR).join("lock"))
        .ok()?;
    loop {
        // SAFETY: flock on a descriptor we own; released when `f` is closed.
        let rc = unsafe { nix::libc::flock(f.as_raw_fd(), nix::libc::LOCK_EX) };
        if rc == 0 {
            return Some(f);
        }
        // A signal (the crash tests' SIGKILL aside, a SIGCHLD from a program run) is no
        // reason to go on unlocked.
        if std::io::Error::last_os_error().raw_os_error() != Some(nix::libc::EINTR) {
            return None;
        }
    }
}

pub fn load(root: &Path) -> Result<State> {
    let p = root.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a simulator state", p.display()))
}

/// Atomic (temp file + rename). Deliberately not `host::files::write_atomic`: that one passes
/// fault-injection points, and a crash test must crash vgpuctl, not the simulated kernel's
/// memory (which survives a process crash on a real host).
pub fn save(root: &Path, st: &State) -> Result<()> {
    let p = root.join(STATE_FILE);
    let text = serde_json::to_string(st)?;
    write_replace(&p, text.as_bytes())?;
    // After the state: a process that sees the new token finds the new state.
    write_replace(
        &root.join(GEN_FILE),
        uuid::Uuid::new_v4().simple().to_string().as_bytes(),
    )
}

pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir: PathBuf = path.parent().context("no parent")?.to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sim-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
