//! The plan: an ordered list of steps, each plain data, computed by a pure function of the facts
//! and the profile. Its Display is the dry run. A step already satisfied is not planned.

use std::fmt;

use crate::host::Cmd;

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
    /// `sriov-manage -e` then wait for the VFs.
    EnableSriov {
        pf: String,
        vfs: u32,
    },
    /// Place and create vGPUs on one GPU, then pin them in the active profile.
    CreateVgpus {
        gpu: String,
        model: String,
        type_name: String,
        count: u32,
        present: u32,
        uuids: Vec<String>,
    },
    /// Copy this binary to where the units run it from.
    CopyBinary {
        to: String,
    },
    /// Enable a unit (the wants link, under the root).
    EnableUnit {
        unit: String,
    },
    /// Pin vGPUs in the active profile.
    PinProfile,
    /// Remove live vGPUs a lower `count` drops (with the operator's consent).
    RemoveVgpus {
        devices: Vec<Unpin>,
    },
    /// Disable a unit.
    DisableUnit {
        unit: String,
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
            Action::EnableSriov { pf, vfs } => writeln!(
                f,
                "run: /usr/lib/nvidia/sriov-manage -e {pf}; wait until {vfs} VFs and their vGPU types appear"
            ),
            Action::CreateVgpus { gpu, model, type_name, count, present, uuids } => {
                let fixed = if uuids.is_empty() {
                    String::new()
                } else {
                    format!(" (UUIDs {})", uuids.join(", "))
                };
                writeln!(
                    f,
                    "create {} x {type_name} on {model} {gpu} ({present} of {count} present){fixed}; pin them in /etc/vgpuctl/vgpus.toml",
                    count - present
                )
            }
            Action::CopyBinary { to } => writeln!(f, "copy this vgpuctl binary to {to}"),
            Action::EnableUnit { unit } => writeln!(
                f,
                "enable {unit}: link /etc/systemd/system/multi-user.target.wants/{unit}"
            ),
            Action::DisableUnit { unit } => writeln!(f, "disable {unit}"),
            Action::PinProfile => writeln!(
                f,
                "write the pins /etc/vgpuctl/vgpus.toml, then the active profile /etc/vgpuctl/profile.toml"
            ),
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
        if self.steps.is_empty() && self.after_reboot.is_empty() {
            writeln!(f, "Nothing to do: the host already matches the profile.")?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            write!(f, "{:>3}. {}\n     {}", i + 1, s.title, s.action)?;
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
