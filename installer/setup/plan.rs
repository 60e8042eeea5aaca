//! The plan: an ordered list of steps, each plain data, computed by a pure function of the facts
//! and the profile. Its Display is the dry run. A step already satisfied is not planned.

use std::fmt;

use crate::facts::Interface;
use crate::host::Cmd;
use crate::profile::SavedVgpu;
use crate::vgpu::place::Create;

/// Bad input found while planning: names the profile field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    pub field: String,
    pub reason: String,
}

/// One vGPU creation as the sysfs write that makes it, with the precondition it relies on.
#[derive(Clone, Debug, PartialEq)]
pub struct SysfsCreate {
    pub create: Create,
    /// The attribute written (under the root): `<type dir>/create` (mdev) or
    /// `<VF>/nvidia/current_vgpu_type` (vendor VFIO).
    pub path: String,
    /// What is written: the UUID (mdev) or the type id (vendor VFIO).
    pub value: String,
    /// Where the precondition is read: the type directory (mdev) or the vendor directory.
    pub attr_dir: String,
}

impl SysfsCreate {
    pub fn new(create: Create, attr_dir: &str) -> SysfsCreate {
        let (path, value) = match create.interface {
            Interface::VendorVfio => (
                format!("{attr_dir}/current_vgpu_type"),
                create.type_id.clone(),
            ),
            _ => (
                format!("{attr_dir}/{}/create", create.type_id),
                create.uuid.clone(),
            ),
        };
        SysfsCreate {
            create,
            path,
            value,
            attr_dir: attr_dir.to_string(),
        }
    }

    /// What must still hold for the write to do what the plan says.
    pub fn precondition(&self) -> String {
        let c = &self.create;
        match c.interface {
            Interface::VendorVfio => format!(
                "VF {} has no vGPU type set and its creatable_vgpu_types lists {} as {}",
                c.parent, c.type_id, c.type_name
            ),
            _ => format!(
                "{}'s type directory {} is {} with room for one and no vGPU {} exists",
                c.parent, c.type_id, c.type_name, c.uuid
            ),
        }
    }
}

/// One GPU's part of a restore (from the pins), run in its own thread so that one failing or
/// slow GPU never stops another.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    /// The GPU (PF), or the parent when it is no PCI function of a GPU.
    pub gpu: String,
    /// Every pin of this GPU, in the pins' order (the report's order).
    pub pins: Vec<SavedVgpu>,
    /// The pins ask for SR-IOV on this GPU.
    pub sriov: bool,
    /// SR-IOV wanted and its VFs all there when observed: how many.
    pub vfs_ready: Option<u32>,
    pub steps: Vec<LaneStep>,
    /// Pins live as pinned: nothing to do.
    pub present: Vec<SavedVgpu>,
    /// Pins this plan cannot make, with why.
    pub failed: Vec<(SavedVgpu, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LaneStep {
    /// `sriov-manage -e`, bounded by `bound_s` (`--vf-timeout`). It runs beside the steps after it,
    /// so each vGPU is made as soon as its own VF lists its type; those steps stop when it fails.
    EnableSriov { pf: String, bound_s: u64 },
    /// `nvidia-smi vgpu -i <pf> -shm 1`: mixed-size mode, after this GPU's SR-IOV has ended
    /// (sriov-manage clears it) and before its first vGPU (recorded-behaviour.md §4).
    MixedSize { pf: String },
    /// `nvidia-smi -i <pf> -mig 1` at boot, first: on a GPU whose MIG mode does not persist
    /// (Hopper and later, recorded-behaviour.md §5).
    MigMode { pf: String },
    /// One GPU instance per MIG-backed pin to make, once this GPU's SR-IOV has ended
    /// (sriov-manage wipes instances) and before its first vGPU.
    GpuInstances { pf: String, profiles: Vec<String> },
    /// The named readiness condition of one vGPU: `parent` (its VF, or the PF once its driver
    /// is bound) lists the pin's type, at most `bound_s` seconds (`--vf-timeout`).
    WaitListed {
        pin: SavedVgpu,
        parent: String,
        bound_s: u64,
    },
    /// The sysfs write that makes one pinned vGPU.
    Write(PinWrite),
}

/// A pin's creation: the write, with its precondition (the type directory or list entry still
/// names the pinned type and can take one).
#[derive(Clone, Debug, PartialEq)]
pub struct PinWrite {
    pub pin: SavedVgpu,
    pub write: SysfsCreate,
    /// Why it is not made on the pinned parent (an mdev pin on another free VF of its GPU).
    pub moved: Option<String>,
}

impl fmt::Display for LaneStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaneStep::EnableSriov { pf, bound_s } => write!(
                f,
                "run: {} -e {pf} (at most {bound_s} s, --vf-timeout), beside the steps below; \
                 they stop if it fails",
                crate::vgpu::sriov::SRIOV_MANAGE
            ),
            LaneStep::MixedSize { pf } => write!(
                f,
                "run: {} (mixed-size mode, once SR-IOV has ended, before the first vGPU)",
                crate::vgpu::mixed_size::command(pf)
            ),
            LaneStep::MigMode { pf } => write!(
                f,
                "run: {} (MIG mode, before SR-IOV: it does not persist on this GPU)",
                crate::vgpu::mig::mode_on(pf)
            ),
            LaneStep::GpuInstances { pf, profiles } => write!(
                f,
                "run: {} (once SR-IOV has ended, before the first vGPU)",
                crate::vgpu::mig::create_instances(pf, profiles)
            ),
            LaneStep::WaitListed {
                pin,
                parent,
                bound_s,
            } => write!(
                f,
                "wait until {parent} lists {} (at most {bound_s} s, --vf-timeout)",
                pin.type_name
            ),
            LaneStep::Write(w) => {
                write!(
                    f,
                    "write {:?} to /{} (if {})",
                    w.write.value,
                    w.write.path,
                    w.write.precondition()
                )?;
                if let Some(m) = &w.moved {
                    write!(f, "; {m}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "GPU {} ({} pinned vGPU(s), in its own thread):",
            self.gpu,
            self.pins.len()
        )?;
        if let Some(n) = self.vfs_ready {
            writeln!(f, "      - SR-IOV: its {n} VFs are there")?;
        }
        for s in &self.steps {
            writeln!(f, "      - {s}")?;
        }
        for p in &self.present {
            writeln!(
                f,
                "      - present: vGPU {} {} on {}",
                p.uuid, p.type_name, p.parent
            )?;
        }
        for (p, why) in &self.failed {
            writeln!(
                f,
                "      - fails: vGPU {} {} on {}: {why}",
                p.uuid, p.type_name, p.parent
            )?;
        }
        Ok(())
    }
}

/// Work a plan cannot place yet: after its waits finish, the executor observes the host again
/// and plans this (a planned re-observation; the next plan is shown before it is applied).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Later {
    /// What it waits for.
    pub after: String,
    pub work: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write a whole file (diff shown against `before`).
    WriteFile {
        path: String,
        before: Option<String>,
        after: String,
        mode: u32,
    },
    /// Write a whole file kept byte for byte (a boot configuration file that may hold bytes that
    /// are not UTF-8; the diff shows them as U+FFFD).
    WriteBytes {
        path: String,
        before: Vec<u8>,
        after: Vec<u8>,
        mode: u32,
    },
    Run(Cmd),
    /// Write a sysfs attribute.
    WriteAttr {
        path: String,
        value: String,
    },
    /// Fetch, verify and install the host driver.
    InstallDriver {
        source: String,
    },
    /// `sriov-manage -e`, then wait for the named readiness condition (every VF of `pf` and its
    /// type listing), at most `bound_s` seconds (`--vf-timeout`).
    EnableSriov {
        pf: String,
        vfs: u32,
        bound_s: u64,
    },
    /// `nvidia-smi -i <gpu> -mig 1`, before SR-IOV (recorded-behaviour.md §5). On a GPU that
    /// needs a reset for it (Ampere) the mode stays pending: the next observation asks for the
    /// reboot.
    MigMode {
        gpu: String,
    },
    /// One GPU instance of `profile` per vGPU still to make, after SR-IOV (sriov-manage wipes
    /// instances) and before the vGPUs; read back with `-lgi` (the driver picks the ids).
    CreateGpuInstances {
        gpu: String,
        profile: String,
        count: u32,
        /// Instances of `profile` there must be afterwards.
        total: u32,
    },
    /// Create placed vGPUs on one GPU, pinning each in the active profile once it exists (with
    /// the ones already `present`). Each write's precondition is checked just before it.
    CreateVgpus {
        gpu: String,
        model: String,
        type_name: String,
        present: Vec<SavedVgpu>,
        create: Vec<SysfsCreate>,
    },
    /// Copy this binary to where the units run it from.
    CopyBinary {
        to: String,
    },
    /// Enable a unit (the wants link, under the root).
    EnableUnit {
        unit: String,
    },
    /// Add imported pins (and the PFs whose SR-IOV restore enables) to the active profile.
    PinImported {
        pins: Vec<SavedVgpu>,
        sriov: Vec<String>,
        /// GPUs whose pins then hold several types: restored in mixed-size mode.
        mixed_size: Vec<String>,
    },
    /// Bring the host to the pinned state now, as the boot unit does: the restore plan of the
    /// pins (one lane per GPU, each run in its own thread).
    RestorePins {
        lanes: Vec<Lane>,
    },
    /// Pin exactly these vGPUs (what exists) in the active profile.
    PinProfile {
        pins: Vec<SavedVgpu>,
    },
    /// Remove live vGPUs a lower `count` or a change of type drops (with the operator's
    /// consent), unpinning each as it goes.
    RemoveVgpus {
        devices: Vec<Unpin>,
    },
    /// Disable a unit.
    DisableUnit {
        unit: String,
    },
    /// Remove a file vgpuctl created (`uninstall --all`).
    RemoveFile {
        path: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Stable id, recorded in the state file.
    pub id: String,
    pub title: String,
    pub action: Action,
}

/// A vGPU a lower `count` drops: removed now when it is live, and unpinned (not recreated at
/// boot) when it was pinned.
#[derive(Clone, Debug, PartialEq)]
pub struct Unpin {
    /// The mdev UUID or the pin's; a vendor-VFIO device nobody pinned has none.
    pub uuid: Option<String>,
    pub type_name: String,
    pub parent: String,
    pub gpu: String,
    pub interface: crate::facts::Interface,
    pub live: bool,
    pub pinned: bool,
}

impl fmt::Display for Unpin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} on {}, GPU {})",
            self.uuid.as_deref().unwrap_or("vGPU without UUID"),
            self.type_name,
            self.parent,
            self.gpu
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Work that can only be planned after the reboot (shown, not executed now).
    pub after_reboot: Vec<String>,
    /// Work planned after this plan's waits, from a new observation.
    pub later: Option<Later>,
    /// Notes for the operator (devices left alone, skipped GPUs).
    pub notes: Vec<String>,
    /// Pins this plan drops (a lower `count`): applied only with the operator's consent.
    pub unpins: Vec<Unpin>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
    pub fn push(&mut self, id: impl Into<String>, title: impl Into<String>, action: Action) {
        self.steps.push(Step {
            id: id.into(),
            title: title.into(),
            action,
        });
    }
}

/// A unified diff of two texts, a few lines of context.
pub fn diff(path: &str, before: Option<&str>, after: &str) -> String {
    let before = before.unwrap_or("");
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteFile { path, before, after, mode } => {
                let what = if before.is_some() { "edit" } else { "create" };
                writeln!(f, "{what} {path} (mode {mode:o}):")?;
                for line in diff(path, before.as_deref(), after).lines() {
                    writeln!(f, "      {line}")?;
                }
                Ok(())
            }
            Action::WriteBytes { path, before, after, mode } => {
                writeln!(f, "edit {path} (mode {mode:o}):")?;
                let (b, a) = (String::from_utf8_lossy(before), String::from_utf8_lossy(after));
                for line in diff(path, Some(&b), &a).lines() {
                    writeln!(f, "      {line}")?;
                }
                Ok(())
            }
            Action::Run(cmd) => writeln!(f, "run: {cmd}"),
            Action::WriteAttr { path, value } => writeln!(f, "write {value:?} to {path}"),
            Action::InstallDriver { source } => writeln!(
                f,
                "fetch and verify the host driver from {source}, extract the host package, check it, install it"
            ),
            Action::EnableSriov { pf, vfs, bound_s } => writeln!(
                f,
                "run: /usr/lib/nvidia/sriov-manage -e {pf}; wait until {vfs} VFs of {pf} and their vGPU type listings appear (at most {bound_s} s, --vf-timeout)"
            ),
            Action::MigMode { gpu } => writeln!(
                f,
                "run: {} (if MIG mode is off; no vGPU exists on it yet)",
                crate::vgpu::mig::mode_on(gpu)
            ),
            Action::CreateGpuInstances { gpu, profile, count, total } => {
                let profiles = vec![profile.clone(); *count as usize];
                writeln!(
                    f,
                    "run: {} (if MIG mode is on and SR-IOV is done: sriov-manage wipes GPU \
                     instances), then read them back with `{}`: {total} of {profile}",
                    crate::vgpu::mig::create_instances(gpu, &profiles),
                    crate::vgpu::mig::list_instances(gpu)
                )
            }
            Action::CreateVgpus { gpu, model, type_name, present, create } => {
                writeln!(
                    f,
                    "create {} x {type_name} on {model} {gpu} ({} present); pin each in /etc/vgpuctl/vgpus.toml:",
                    create.len(),
                    present.len()
                )?;
                for c in create {
                    writeln!(f, "      - write {:?} to /{}", c.value, c.path)?;
                }
                Ok(())
            }
            Action::CopyBinary { to } => writeln!(f, "copy this vgpuctl binary to {to}"),
            Action::EnableUnit { unit } => writeln!(
                f,
                "enable {unit}: link /etc/systemd/system/multi-user.target.wants/{unit}"
            ),
            Action::DisableUnit { unit } => writeln!(f, "disable {unit}"),
            Action::RemoveFile { path } => writeln!(f, "remove {path}"),
            Action::PinImported { pins, sriov, mixed_size } => {
                writeln!(f, "add to the pins /etc/vgpuctl/vgpus.toml:")?;
                for p in pins {
                    writeln!(f, "      - pin {} {} ({}) on {}", p.uuid, p.type_name, p.type_id, p.parent)?;
                }
                for s in sriov {
                    writeln!(f, "      - SR-IOV on {s} at boot")?;
                }
                for g in mixed_size {
                    writeln!(f, "      - mixed-size mode on {g} at boot (its pins hold several vGPU types)")?;
                }
                Ok(())
            }
            Action::RestorePins { lanes } => {
                writeln!(f, "restore every pin, as vgpuctl-restore.service does at boot:")?;
                for l in lanes {
                    write!(f, "    {l}")?;
                }
                Ok(())
            }
            Action::PinProfile { pins } => {
                // By type and parent: the UUIDs named in a plan are the ones it creates or drops.
                writeln!(f, "write the pins /etc/vgpuctl/vgpus.toml ({} vGPU(s)), then the active profile /etc/vgpuctl/profile.toml:", pins.len())?;
                for p in pins {
                    writeln!(f, "      - {} on {}", p.type_name, p.parent)?;
                }
                Ok(())
            }
            Action::RemoveVgpus { devices } => {
                writeln!(f, "remove (no VM uses them):")?;
                for d in devices {
                    writeln!(f, "      - {d}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() && self.after_reboot.is_empty() && self.later.is_none() {
            writeln!(f, "Nothing to do: the host already matches the profile.")?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            write!(f, "{:>3}. {}\n     {}", i + 1, s.title, s.action)?;
        }
        if let Some(l) = &self.later {
            writeln!(f, "After {}: observe the host again and plan:", l.after)?;
            for w in &l.work {
                writeln!(f, "     - {w}")?;
            }
        }
        if !self.after_reboot.is_empty() {
            writeln!(
                f,
                "After the reboot (planned from what the driver then shows):"
            )?;
            for w in &self.after_reboot {
                writeln!(f, "     - {w}")?;
            }
        }
        if !self.unpins.is_empty() {
            writeln!(
                f,
                "Removed or unpinned by this plan (needs your confirmation, or --allow-remove \
                 with --yes):"
            )?;
            for u in &self.unpins {
                let what = match (u.live, u.pinned) {
                    (true, true) => "remove and unpin",
                    (true, false) => "remove",
                    _ => "unpin (not live)",
                };
                writeln!(f, "     - {what} {u}")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
