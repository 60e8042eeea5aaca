//! Observe: read, once, everything a setup or import decision needs: the host facts, the bytes of
//! the boot configuration files the IOMMU edit reads, the units, the checkpoint state, the active
//! profile (pins) and whether the installed binary is this one. The planner takes only this value;
//! nothing after it reads the host to decide.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::ops::Deref;

use crate::exit::Failure;
use crate::facts::{self, BootLoader, HostFacts};
use crate::host::Host;
use crate::profile::Profile;

use super::paths::{BINARY, NOUVEAU_CONF, RESTORE_UNIT, RESUME_UNIT, UNIT_DIR, WANTS_DIR};
use super::state::{self, State};

/// How reading one file went, kept as data so the planner can judge it without the host.
#[derive(Clone, Debug, PartialEq)]
pub enum FileRead {
    Bytes(Vec<u8>),
    Missing,
    /// Present but not readable as a file (a directory, no permission): the error's text.
    Unreadable(String),
}

impl FileRead {
    fn of(host: &Host, rel: &str) -> FileRead {
        match host.read_bytes(rel) {
            Ok(b) => FileRead::Bytes(b),
            Err(e) if e.kind() == ErrorKind::NotFound => FileRead::Missing,
            Err(e) => FileRead::Unreadable(e.to_string()),
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            FileRead::Bytes(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Facts {
    pub host: HostFacts,
    /// Boot configuration files by path (absolute, as shown): GRUB's defaults and drop-ins,
    /// grub.cfg, /etc/kernel/cmdline, as the host's boot loader needs.
    pub files: BTreeMap<String, FileRead>,
    /// BLS entries (path, text), for grubby hosts.
    pub bls_entries: Vec<(String, String)>,
    /// The installed restore unit's text.
    pub restore_unit: Option<String>,
    pub resume_unit_enabled: bool,
    /// /usr/local/sbin/vgpuctl is this very binary.
    pub binary_current: bool,
    /// vgpuctl's own nouveau blacklist file, if it exists (its text).
    pub nouveau_conf: Option<String>,
    /// What drives and holds nouveau (whether it can be unloaded before the driver install).
    pub nouveau_use: crate::driver::nouveau::NouveauUse,
    /// The host has update-initramfs (else dracut).
    pub has_update_initramfs: bool,
    /// The host runs programs (a live or simulated host; not a bare `--root`).
    pub runs_programs: bool,
    pub state: State,
    /// The copy of the operator's profile on the host.
    pub active: Option<Profile>,
    /// The pins on the host (what restore recreates), [`crate::pins::load`].
    pub pins: Option<crate::pins::Pins>,
    /// modprobe.d files (path, text) in modprobe's order, [`modprobe_d`].
    pub modprobe_d: Vec<(String, String)>,
    /// `/proc/driver/nvidia/params`: the loaded driver's options.
    pub nvidia_params: Option<String>,
    /// Who holds each vGPU in use ([`vgpu_key`] -> the processes, VM names where QEMU shows them).
    pub holders: BTreeMap<String, Vec<String>>,
    /// How the installed driver is removed the way it was installed (None: nothing kept says
    /// how), [`super::driver_removal::uninstaller`].
    pub driver_uninstall: Option<crate::host::Cmd>,
}

/// A live vGPU's key in [`Facts::holders`]: its mdev UUID, else its VF.
pub fn vgpu_key(v: &facts::Vgpu) -> String {
    v.uuid.clone().unwrap_or_else(|| v.parent.clone())
}

/// The holders of every vGPU in use, read from the processes' open files.
fn holders(host: &Host, hf: &HostFacts) -> BTreeMap<String, Vec<String>> {
    let live: Vec<facts::Vgpu> = hf.vgpus().into_iter().filter(|v| v.in_use).collect();
    if live.is_empty() {
        return BTreeMap::new();
    }
    let held = facts::vfio_holders::VfioHolders::observe(host);
    live.iter()
        .map(|v| {
            let dev = match &v.uuid {
                Some(u) if v.interface == facts::Interface::Mdev => {
                    format!("{}/{u}", facts::vgpus::MDEV_DEVICES)
                }
                _ => format!("{}/{}", facts::gpus::PCI_DEVICES, v.parent),
            };
            (vgpu_key(v), held.holders(host, &dev))
        })
        .collect()
}

impl Deref for Facts {
    type Target = HostFacts;
    fn deref(&self) -> &HostFacts {
        &self.host
    }
}

impl Facts {
    /// A boot configuration file as observed (missing when it was not read).
    pub fn file(&self, path: &str) -> &FileRead {
        self.files.get(path).unwrap_or(&FileRead::Missing)
    }
}

pub const GRUB_DEFAULT: &str = "/etc/default/grub";
pub const GRUB_CFGS: [&str; 2] = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"];
pub const KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";

fn binary_current(host: &Host) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let (Ok(a), Ok(b)) = (std::fs::read(&exe), host.read_bytes(BINARY)) else {
        return false;
    };
    a == b
}

/// Observe the host. Fails only on vgpuctl's own files being unreadable or corrupt (the state,
/// the active profile), which no plan can be made without.
pub fn observe(host: &Host) -> Result<Facts, Failure> {
    let hf = facts::observe(host);
    let mut files = BTreeMap::new();
    let mut bls_entries = Vec::new();
    match &hf.boot {
        BootLoader::DebianGrub { dropins } => {
            for p in std::iter::once(GRUB_DEFAULT.to_string()).chain(dropins.iter().cloned()) {
                let r = FileRead::of(host, &p);
                files.insert(p, r);
            }
            for p in GRUB_CFGS {
                files.insert(p.to_string(), FileRead::of(host, p));
            }
        }
        BootLoader::Grubby => {
            bls_entries = host
                .list("boot/loader/entries")
                .into_iter()
                .filter(|n| n.ends_with(".conf"))
                .filter_map(|n| {
                    let p = format!("/boot/loader/entries/{n}");
                    host.read(&p).ok().map(|c| (p, c))
                })
                .collect();
        }
        BootLoader::KernelCmdline { .. } => {
            files.insert(KERNEL_CMDLINE.into(), FileRead::of(host, KERNEL_CMDLINE));
        }
        BootLoader::Unknown => {}
    }
    Ok(Facts {
        files,
        bls_entries,
        restore_unit: host.read(&format!("{UNIT_DIR}/{RESTORE_UNIT}")).ok(),
        resume_unit_enabled: host.exists(&format!("{WANTS_DIR}/{RESUME_UNIT}")),
        binary_current: binary_current(host),
        nouveau_conf: host.read(NOUVEAU_CONF).ok(),
        nouveau_use: crate::driver::nouveau::NouveauUse::observe(host, &hf),
        has_update_initramfs: host.exists("usr/sbin/update-initramfs"),
        runs_programs: host.reach().runs_programs(),
        state: state::load(host)?,
        active: crate::active::load(host)?,
        pins: crate::pins::load(host)?,
        modprobe_d: modprobe_d(host),
        nvidia_params: host.read(crate::edit::registry_dwords::PROC_PARAMS).ok(),
        holders: holders(host, &hf),
        driver_uninstall: super::driver_removal::uninstaller(
            host,
            hf.os.family,
            hf.driver.installed_version.as_deref(),
        ),
        host: hf,
    })
}

/// The directories modprobe reads its configuration from, the one that wins for a file name
/// first (modprobe.d(5)).
const MODPROBE_DIRS: [&str; 4] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// The `*.conf` files modprobe reads, (path, text), in the order it applies them: by file name,
/// a name in /etc hiding the same name further down [`MODPROBE_DIRS`]. Unreadable files are left
/// out (modprobe skips them too).
pub fn modprobe_d(host: &Host) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<String, (String, String)> = BTreeMap::new();
    for dir in MODPROBE_DIRS {
        for name in host.list(dir.trim_start_matches('/')) {
            if !name.ends_with(".conf") || by_name.contains_key(&name) {
                continue;
            }
            let p = format!("{dir}/{name}");
            if let Ok(t) = host.read(&p) {
                by_name.insert(name, (p, t));
            }
        }
    }
    by_name.into_values().collect()
}

/// What a restore plans from: the GPUs (their VFs, parents and type listings), the vGPUs that
/// exist, and the pinned parents that are no PCI function of a GPU. Read without running any
/// program: at boot a restore starts no process it does not need.
#[derive(Clone, Debug, Default)]
pub struct VgpuFacts {
    pub gpus: Vec<facts::Gpu>,
    pub mdevs: Vec<facts::Vgpu>,
    /// Pinned parents that belong to no GPU (an mdev parent such as `mtty`), as read.
    pub others: Vec<facts::Parent>,
}

impl VgpuFacts {
    /// The parent `address` as observed: a GPU's PF or VF, or another pinned parent.
    pub fn parent(&self, address: &str) -> Option<&facts::Parent> {
        self.gpus
            .iter()
            .flat_map(|g| g.parents.iter())
            .chain(self.others.iter())
            .find(|p| p.address == address)
    }

    /// Every vGPU: mdev devices and vendor-VFIO VFs with a type set (as [`HostFacts::vgpus`]).
    pub fn vgpus(&self) -> Vec<facts::Vgpu> {
        let mut out = self.mdevs.clone();
        for g in &self.gpus {
            for p in &g.parents {
                if let (facts::Interface::VendorVfio, Some(t)) = (p.interface, &p.current_type) {
                    out.push(facts::Vgpu {
                        uuid: None,
                        parent: p.address.clone(),
                        gpu: Some(g.address.clone()),
                        type_id: t.id.clone(),
                        type_name: t.name.clone(),
                        interface: facts::Interface::VendorVfio,
                        in_use: p.in_use,
                    });
                }
            }
        }
        out
    }
}

impl From<&HostFacts> for VgpuFacts {
    fn from(f: &HostFacts) -> VgpuFacts {
        VgpuFacts {
            gpus: f.gpus.clone(),
            mdevs: f.mdevs.clone(),
            others: Vec::new(),
        }
    }
}

/// Observe what a restore of `pins` needs.
pub fn observe_vgpus(host: &Host, pins: &crate::pins::Pins) -> VgpuFacts {
    let in_use = facts::vfio_holders::VfioHolders::observe(host);
    let gpus = facts::gpus::observe(host, &in_use);
    let mdevs = facts::observe_mdevs(host, &gpus, &in_use);
    let mut others: Vec<facts::Parent> = Vec::new();
    for p in pins.vgpus.iter().filter(|p| p.gpu.is_none()) {
        if others.iter().any(|o| o.address == p.parent) {
            continue;
        }
        others.extend(facts::vgpus::read_parent(host, &p.parent, &in_use));
    }
    VgpuFacts {
        gpus,
        mdevs,
        others,
    }
}
