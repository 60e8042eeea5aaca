//! The import plan: from the facts and what rc.local and mdevctl define, the SR-IOV to enable,
//! the vGPUs to pin and create, and the files to change. Pure. A vGPU on a VF that does not exist
//! yet is planned after the wait for its PF's VFs (the executor observes again, then plans it):
//! the dry run shows that phase as the real run will do it.

use std::fmt;

use super::observe::Facts;
use super::paths::{BINARY, RESTORE_UNIT, RESTORE_UNIT_TEXT, UNIT_DIR};
use super::plan::{Action, Later, Plan};
use crate::profile::SavedVgpu;

use super::import_sources::{Sources, RC_LOCAL};
use crate::import::mdevctl;
use crate::import::rc_rewrite::{self, Change};
use crate::import::rclocal::{self, RcItem, SriovTarget};
use crate::import::vendor_vfio;

/// One vGPU an import source defines.
struct Found {
    origin: String,
    uuid: String,
    parent: String,
    /// mdev: the type directory; vendor VFIO: the type id as written (this driver branch's).
    type_dir: String,
    /// Index into the rc.local items, for the line to rewrite once imported.
    rc_item: Option<usize>,
    /// A vendor-specific VFIO line (`<VF>/nvidia/current_vgpu_type`).
    vendor: bool,
}

/// A vGPU whose parent appears only once its PF's VFs are enabled.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub uuid: String,
    pub parent: String,
    pub type_dir: String,
    pub pf: String,
    /// Its rc.local line, if it came from there.
    pub line: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportPlan {
    pub plan: Plan,
    /// The pins this import writes (now, or in the later phase: then empty and `waiting` set).
    pub pins: Vec<SavedVgpu>,
    pub waiting: Vec<Waiting>,
    /// PFs whose SR-IOV the restore unit enables at boot.
    pub sriov: Vec<String>,
    pub problems: Vec<String>,
    pub rc_changes: Vec<Change>,
    /// mdevctl definitions set to start manually.
    pub mdevctl_manual: Vec<String>,
    /// No source defines anything to import.
    pub nothing: bool,
    /// Why nothing can be imported at all (the whole import is refused).
    pub refused: Option<String>,
}

/// The PF a VF-looking parent belongs to, when its VFs are not enabled yet: same domain and bus,
/// device 0 function 0 (how NVIDIA lays out its VFs, e.g. 0000:e8:00.4 -> 0000:e8:00.0).
fn pf_guess(parent: &str) -> Option<String> {
    let a = crate::pci::PciAddr::parse(parent).ok()?;
    let pf = crate::pci::PciAddr {
        device: 0,
        function: 0,
        ..a
    }
    .to_string();
    (pf != parent).then_some(pf)
}

/// Plan the import. `gave_up` are PFs whose SR-IOV this run already failed to enable: their VFs'
/// lines are judged as they are, not waited for again.
pub fn plan(f: &Facts, src: &Sources, gave_up: &[String], vf_timeout_s: u64) -> ImportPlan {
    let mut out = ImportPlan::default();
    let items = &src.rc_items;
    let mut found: Vec<Found> = Vec::new();
    let mut sriov_items: Vec<usize> = Vec::new();
    for (idx, it) in items.iter().enumerate() {
        match &it.item {
            RcItem::Vgpu {
                uuid,
                parent,
                type_dir,
            } => found.push(Found {
                origin: format!("/etc/rc.local:{}", it.line),
                uuid: uuid.clone(),
                parent: parent.clone(),
                type_dir: type_dir.clone(),
                rc_item: Some(idx),
                vendor: false,
            }),
            RcItem::VendorVgpu { vf, type_id } => {
                // Pinned under the UUID of a vendor-VFIO pin already on that VF, if any.
                let pinned = f.pins.as_ref().and_then(|p| {
                    p.vgpus
                        .iter()
                        .find(|v| v.parent == *vf && v.interface == "vendor-vfio")
                        .map(|v| v.uuid.as_str())
                });
                found.push(Found {
                    origin: format!("/etc/rc.local:{}", it.line),
                    uuid: vendor_vfio::pin_uuid(vf, pinned),
                    parent: vf.clone(),
                    type_dir: type_id.clone(),
                    rc_item: Some(idx),
                    vendor: true,
                })
            }
            RcItem::SriovEnable { target } => {
                sriov_items.push(idx);
                match target {
                    SriovTarget::Gpu(a) => out.sriov.push(a.to_string()),
                    SriovTarget::All => out.sriov.extend(
                        f.gpus
                            .iter()
                            .filter(|g| g.sriov_capable())
                            .map(|g| g.address.clone()),
                    ),
                }
            }
            RcItem::Skipped { reason } => out
                .problems
                .push(format!("/etc/rc.local:{}: not imported: {reason}", it.line)),
        }
    }
    let mut defs = Vec::new();
    for (path, text, def) in &src.mdevctl {
        match def {
            Ok(def) => {
                found.push(Found {
                    origin: format!("/{path}"),
                    uuid: def.uuid.clone(),
                    parent: def.parent.clone(),
                    type_dir: def.mdev_type.clone(),
                    rc_item: None,
                    vendor: false,
                });
                defs.push((path.clone(), text.clone(), def.clone()));
            }
            Err(e) => out.problems.push(format!("not imported: {e}")),
        }
    }
    out.sriov.sort();
    out.sriov.dedup();
    if found.is_empty() && out.sriov.is_empty() {
        out.nothing = true;
        return out;
    }

    // SR-IOV to enable now: the PFs rc.local enables and those of the VFs its lines name, when
    // their VFs are not all there.
    let vfs_missing =
        |pf: &str| f.gpu(pf).is_some_and(|g| g.vfs_pending()) && !gave_up.iter().any(|p| p == pf);
    // An offline root (not the running system): SR-IOV cannot be enabled from here, so the types
    // of VFs that do not exist yet cannot be read; those lines are reported and left alone.
    let mut offline_pfs: Vec<String> = Vec::new();
    let mut vfs_missing = |pf: &str| {
        let missing = vfs_missing(pf);
        if missing && !f.runs_programs {
            if !offline_pfs.iter().any(|p| p == pf) {
                offline_pfs.push(pf.to_string());
            }
            return false;
        }
        missing
    };
    let mut enable: Vec<String> = out
        .sriov
        .iter()
        .filter(|p| vfs_missing(p))
        .cloned()
        .collect();
    for fd in &found {
        let now = src.parents.get(&fd.parent).cloned().unwrap_or_default();
        if now.exists {
            continue;
        }
        if let Some(pf) = pf_guess(&fd.parent).filter(|pf| vfs_missing(pf)) {
            if !enable.contains(&pf) {
                enable.push(pf.clone());
            }
            out.waiting.push(Waiting {
                uuid: fd.uuid.clone(),
                parent: fd.parent.clone(),
                type_dir: if fd.vendor {
                    format!("type id {}", fd.type_dir)
                } else {
                    fd.type_dir.clone()
                },
                pf,
                line: fd.rc_item.map(|i| items[i].line),
            });
        }
    }
    for pf in &enable {
        let g = f.gpu(pf);
        out.plan.push(
            format!("sriov:{pf}"),
            format!(
                "Enable SR-IOV on {} {pf}",
                g.map(|g| g.model.name.as_str()).unwrap_or("GPU")
            ),
            Action::EnableSriov {
                pf: pf.clone(),
                vfs: g.and_then(|g| g.sriov_totalvfs).unwrap_or(0),
                bound_s: vf_timeout_s,
            },
        );
    }

    if !offline_pfs.is_empty() {
        out.problems.push(format!(
            "SR-IOV on {}: not enabled from here (this root is not the running system), so the \
             types of its VFs cannot be read; run vgpuctl import inside that system",
            offline_pfs.join(", ")
        ));
    }

    // Resolve each vGPU's type by its directory on this host; report what does not exist.
    let mut imported_items: Vec<usize> = sriov_items.clone();
    for fd in &found {
        if let Some(i) = fd
            .rc_item
            .filter(|_| out.waiting.iter().any(|w| w.uuid == fd.uuid))
        {
            // Shown as it will be imported; judged again once the VFs exist.
            imported_items.push(i);
            continue;
        }
        let now = src.parents.get(&fd.parent).cloned().unwrap_or_default();
        if fd.vendor {
            // The id is this driver branch's: the pin holds the name it lists here.
            let siblings: Vec<&[(String, String)]> =
                now.sibling_types.iter().map(Vec::as_slice).collect();
            match vendor_vfio::resolve(&fd.parent, now.vendor.as_ref(), &siblings, &fd.type_dir) {
                Ok((type_id, type_name)) => {
                    if out.pins.iter().any(|p| p.uuid == fd.uuid) {
                        out.problems.push(format!(
                            "{}: VF {} is set twice; imported once",
                            fd.origin, fd.parent
                        ));
                    } else {
                        out.pins.push(SavedVgpu {
                            uuid: fd.uuid.clone(),
                            type_id,
                            type_name,
                            parent: fd.parent.clone(),
                            gpu: now.gpu.clone(),
                            interface: "vendor-vfio".into(),
                            gi_profile: None,
                        });
                    }
                    imported_items.extend(fd.rc_item);
                }
                Err(e) => out.problems.push(format!(
                    "{}: {e}; not imported, line left as it is",
                    fd.origin
                )),
            }
            continue;
        }
        let name = now.types.as_ref().and_then(|t| {
            t.iter()
                .find(|(id, _)| *id == fd.type_dir)
                .map(|(_, n)| n.clone())
        });
        let Some(type_name) = name else {
            let offers = now
                .types
                .as_ref()
                .map(|t| {
                    let mut ids: Vec<&str> = t.iter().map(|(id, _)| id.as_str()).collect();
                    ids.sort();
                    ids.join(", ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no mdev types at all".into());
            out.problems.push(format!(
                "{}: {} -> /sys/class/mdev_bus/{}/mdev_supported_types/{} does not exist on this host ({} offers: {offers}); not imported, line left as it is",
                fd.origin, fd.uuid, fd.parent, fd.type_dir, fd.parent
            ));
            continue;
        };
        if out.pins.iter().any(|p| p.uuid == fd.uuid) {
            out.problems.push(format!(
                "{}: UUID {} appears twice; imported once",
                fd.origin, fd.uuid
            ));
        } else {
            out.pins.push(SavedVgpu {
                uuid: fd.uuid.clone(),
                type_id: fd.type_dir.clone(),
                type_name,
                parent: fd.parent.clone(),
                gpu: now.gpu.clone(),
                interface: "mdev".into(),
                gi_profile: None,
            });
        }
        if let Some(i) = fd.rc_item {
            imported_items.push(i);
        }
    }

    // rc.local without the imported commands; the rest of their lines keeps running.
    imported_items.sort();
    imported_items.dedup();
    let imported: Vec<&rclocal::RcLine> = imported_items.iter().map(|&i| &items[i]).collect();
    let rc_new = src
        .rc_local
        .as_deref()
        .map(|t| rc_rewrite::rewrite(t, &imported));
    let rc_new = match rc_new {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            out.plan.steps.clear();
            out.refused = Some(format!("/etc/rc.local: {e}; nothing was changed"));
            return out;
        }
        None => None,
    };
    if let Some((_, changes)) = &rc_new {
        out.rc_changes = changes.clone();
    }
    if !out.waiting.is_empty() {
        out.plan.later = Some(Later {
            after: format!(
                "the VFs of {} and their type listings appear (at most {vf_timeout_s} s each, \
                 --vf-timeout)",
                enable.join(", ")
            ),
            work: std::iter::once(
                "the import below, with each vGPU's type named from its VF's listing".to_string(),
            )
            .collect(),
        });
        return out;
    }

    // A GPU whose pins then hold several types runs in mixed-size mode (recorded-behaviour.md
    // §4: the seed's A40-1B and A40-24A on one A40), where its driver has that mode.
    let mixed_size = imported_mixed_size(f, &out.pins, &mut out.plan.notes);
    // Everything is placed: pins, the restore unit, rc.local, mdevctl, then the vGPUs now.
    out.plan.push(
        "import:pin",
        "Pin the imported vGPUs and SR-IOV in /etc/vgpuctl/vgpus.toml",
        Action::PinImported {
            pins: out.pins.clone(),
            sriov: out.sriov.clone(),
            mixed_size: mixed_size.clone(),
        },
    );
    if !f.binary_current {
        out.plan.push(
            "binary",
            format!("Install vgpuctl as {BINARY}"),
            Action::CopyBinary { to: BINARY.into() },
        );
    }
    if f.restore_unit.as_deref() != Some(RESTORE_UNIT_TEXT) {
        out.plan.push(
            "unit:restore",
            "Install the boot-time restore unit",
            Action::WriteFile {
                path: format!("/{UNIT_DIR}/{RESTORE_UNIT}"),
                before: f.restore_unit.clone(),
                after: RESTORE_UNIT_TEXT.into(),
                mode: 0o644,
            },
        );
        if f.runs_programs {
            out.plan.push(
                "daemon-reload",
                "Reload systemd",
                Action::Run(crate::host::Cmd::new("systemctl").arg("daemon-reload")),
            );
        }
    }
    out.plan.push(
        "enable:restore",
        "Enable the restore unit",
        Action::EnableUnit {
            unit: RESTORE_UNIT.into(),
        },
    );
    if let (Some(before), Some((after, changes))) = (&src.rc_local, &rc_new) {
        if !changes.is_empty() {
            out.plan.push(
                "import:rc.local",
                "Take the imported commands out of /etc/rc.local",
                Action::WriteFile {
                    path: format!("/{RC_LOCAL}"),
                    before: Some(before.clone()),
                    after: after.clone(),
                    mode: src.rc_mode,
                },
            );
        }
    }
    for (path, text, def) in defs.iter().filter(|(_, _, d)| d.autostart) {
        let mut manual = def.clone();
        manual.autostart = false;
        out.mdevctl_manual.push(format!("/{path}"));
        out.plan.push(
            format!("import:{path}"),
            format!("Set /{path} to start manually"),
            Action::WriteFile {
                path: format!("/{path}"),
                before: Some(text.clone()),
                after: mdevctl::render(&manual),
                mode: 0o644,
            },
        );
    }
    // Every pin, restored as the boot unit will: the restore plan of the pins this import leaves.
    let mut after = f.pins.clone().unwrap_or_default();
    crate::pins::pin(&mut after, out.pins.iter().cloned());
    crate::pins::enable_sriov(&mut after, &out.sriov);
    for g in mixed_size {
        if !after.mixed_size.contains(&g) {
            after.mixed_size.push(g);
        }
    }
    let lanes = super::planner::restore(&(&f.host).into(), &after, vf_timeout_s);
    if !f.runs_programs {
        // Creating vGPUs needs that system's kernel: its restore unit does it when it boots.
        out.plan.notes.push(
            "this root is not the running system: its vgpuctl-restore.service creates the vGPUs \
             when it boots"
                .into(),
        );
        return out;
    }
    out.plan.push(
        "import:restore",
        "Create the pinned vGPUs now, as vgpuctl-restore.service does at boot",
        Action::RestorePins { lanes },
    );
    out
}

/// The GPUs the imported pins (with the pins already there) give vGPUs of several types: those
/// whose driver has mixed-size mode, or has not said (no driver answer); each GPU whose driver
/// says it has none is a note, and restores in equal-size mode (one type is made).
fn imported_mixed_size(f: &Facts, imported: &[SavedVgpu], notes: &mut Vec<String>) -> Vec<String> {
    let mut all = f.pins.clone().unwrap_or_default();
    crate::pins::pin(&mut all, imported.iter().cloned());
    let mut gpus: Vec<&str> = imported.iter().filter_map(|p| p.gpu.as_deref()).collect();
    gpus.sort();
    gpus.dedup();
    let before = all.mixed_size.clone();
    crate::pins::mark_mixed_size(&mut all, gpus.iter().copied());
    let mut out = Vec::new();
    for g in all.mixed_size.iter().filter(|g| !before.contains(g)) {
        let supported = f
            .host
            .gpus
            .iter()
            .find(|x| x.address == *g)
            .and_then(|x| x.mixed_size)
            .is_none_or(|m| m.supported);
        if supported {
            out.push(g.clone());
        } else {
            notes.push(format!(
                "{g}: the imported vGPUs have several types, which needs mixed-size mode, and its \
                 driver reports none (vGPU 17 or later and a GPU with the mode): in equal-size \
                 mode only one type is made"
            ));
        }
    }
    out
}

impl fmt::Display for ImportPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Importing into /etc/vgpuctl/vgpus.toml:")?;
        for p in &self.pins {
            writeln!(f, "  vGPU {} {} on {}", p.uuid, p.type_name, p.parent)?;
        }
        for w in &self.waiting {
            writeln!(
                f,
                "  vGPU {} {} on {} (after SR-IOV on {}: its type named from the VF's listing)",
                w.uuid, w.type_dir, w.parent, w.pf
            )?;
        }
        for s in &self.sriov {
            writeln!(f, "  SR-IOV on {s}")?;
        }
        for p in &self.problems {
            writeln!(f, "  WARNING {p}")?;
        }
        if !self.rc_changes.is_empty() {
            writeln!(f, "Would change /etc/rc.local:")?;
            for c in &self.rc_changes {
                // A line whose VF does not exist yet changes only if the VF then offers its type.
                let pending = if self.waiting.iter().any(|w| w.line == Some(c.line)) {
                    "   (if the VF offers the type once it exists)"
                } else {
                    ""
                };
                writeln!(f, "  line {}: {}", c.line, c.before)?;
                writeln!(f, "       -> {}{pending}", c.after)?;
            }
        }
        write!(f, "{}", self.plan)
    }
}
