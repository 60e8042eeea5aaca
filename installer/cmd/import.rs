//! `vgpuctl import`: move hand-made persistence (rc.local echo lines, sriov-manage lines, mdevctl
//! definitions) into the active profile and the restore unit, so nothing is created twice.

use std::time::Duration;

use crate::exit::{Exit, Failure};
use crate::facts::gpus::PCI_DEVICES;
use crate::facts::vgpus::mdev_types_dir;
use crate::host::{Host, WriteOpts};
use crate::import::{mdevctl, rc_rewrite, rclocal};
use crate::profile::{Profile, SavedVgpu};
use crate::setup::{apply, plan::Action, plan::Step, planner};

pub const RC_LOCAL: &str = "etc/rc.local";
pub const MDEVCTL_DIR: &str = "etc/mdevctl.d";

/// One vGPU found in rc.local or mdevctl, before it is resolved on this host.
struct Found {
    origin: String,
    uuid: String,
    parent: String,
    type_dir: String,
    /// Index into the rc.local items, for the line to rewrite once imported.
    rc_item: Option<usize>,
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

pub fn run(host: &Host, dry_run: bool, vf_timeout: Duration) -> Result<Exit, Failure> {
    if !dry_run {
        crate::privilege::require_root(host, "import")?;
    }
    let _lock = if dry_run {
        None
    } else {
        Some(crate::setup::lock::acquire(host, "import")?)
    };
    let rc_text = host.read(RC_LOCAL).ok();
    let items = rc_text.as_deref().map(rclocal::parse).unwrap_or_default();
    let mut found: Vec<Found> = Vec::new();
    let mut sriov: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut sriov_items: Vec<usize> = Vec::new();
    for (idx, it) in items.iter().enumerate() {
        match &it.item {
            rclocal::RcItem::Vgpu {
                uuid,
                parent,
                type_dir,
            } => found.push(Found {
                origin: format!("/etc/rc.local:{}", it.line),
                uuid: uuid.clone(),
                parent: parent.clone(),
                type_dir: type_dir.clone(),
                rc_item: Some(idx),
            }),
            rclocal::RcItem::SriovEnable { target } => {
                sriov_items.push(idx);
                match target {
                    rclocal::SriovTarget::Gpu(a) => sriov.push(a.to_string()),
                    rclocal::SriovTarget::All => {
                        let f = crate::facts::observe(host);
                        sriov.extend(
                            f.gpus
                                .iter()
                                .filter(|g| g.sriov_capable())
                                .map(|g| g.address.clone()),
                        );
                    }
                }
            }
            rclocal::RcItem::Skipped { reason } => {
                problems.push(format!("/etc/rc.local:{}: not imported: {reason}", it.line))
            }
        }
    }
    // mdevctl definitions: /etc/mdevctl.d/<parent>/<uuid>.
    let mut mdevctl_defs = Vec::new();
    for parent in host.list(MDEVCTL_DIR) {
        for uuid in host.list(&format!("{MDEVCTL_DIR}/{parent}")) {
            let path = format!("{MDEVCTL_DIR}/{parent}/{uuid}");
            let Ok(text) = host.read(&path) else { continue };
            match mdevctl::parse(&parent, &uuid, &text) {
                Ok(def) => {
                    found.push(Found {
                        origin: format!("/{path}"),
                        uuid: def.uuid.clone(),
                        parent: def.parent.clone(),
                        type_dir: def.mdev_type.clone(),
                        rc_item: None,
                    });
                    mdevctl_defs.push(def);
                }
                Err(e) => problems.push(format!("not imported: {e}")),
            }
        }
    }
    sriov.sort();
    sriov.dedup();
    if found.is_empty() && sriov.is_empty() {
        crate::outln!("Nothing to import: no vGPU or sriov-manage lines in /etc/rc.local and no /etc/mdevctl.d definitions.");
        for p in &problems {
            crate::outln!("  {p}");
        }
        return Ok(if problems.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }

    // Type directories of VFs exist only once SR-IOV is on: enable it on the PFs involved.
    let mut pfs: Vec<String> = sriov.clone();
    for f in &found {
        if !host.exists(&format!("{PCI_DEVICES}/{}", f.parent))
            && !host.exists(&format!("sys/class/mdev_bus/{}", f.parent))
        {
            if let Some(pf) = pf_guess(&f.parent) {
                if host.exists(&format!("{PCI_DEVICES}/{pf}")) && !pfs.contains(&pf) {
                    pfs.push(pf);
                }
            }
        }
    }
    if !dry_run && !pfs.is_empty() && !host.reach().runs_programs() {
        problems.push(format!(
            "SR-IOV on {}: not enabled from here ({} is not the running system), so the types \
             of its VFs cannot be read; run vgpuctl import inside that system",
            pfs.join(", "),
            host.root().display()
        ));
    } else if !dry_run {
        for pf in &pfs {
            if let Err(e) = crate::vgpu::sriov::enable(host, pf, vf_timeout) {
                problems.push(format!("SR-IOV on {pf}: {e:#}"));
            }
        }
    }

    // Resolve each vGPU's type by its directory on this host; report what does not exist.
    let mut pins: Vec<SavedVgpu> = Vec::new();
    let mut imported_items: Vec<usize> = sriov_items.clone();
    for f in &found {
        let dir = mdev_types_dir(host, &f.parent).map(|d| format!("{d}/{}", f.type_dir));
        let name = dir
            .as_ref()
            .and_then(|d| host.read_trim(&format!("{d}/name")));
        let Some(type_name) = name else {
            let offers = mdev_types_dir(host, &f.parent)
                .map(|d| host.list(&d).join(", "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no mdev types at all".into());
            problems.push(format!(
                "{}: {} -> /sys/class/mdev_bus/{}/mdev_supported_types/{} does not exist on this host ({} offers: {offers}); not imported, line left as it is",
                f.origin, f.uuid, f.parent, f.type_dir, f.parent
            ));
            continue;
        };
        let gpu = host
            .link_name(&format!("{PCI_DEVICES}/{}/physfn", f.parent))
            .or_else(|| {
                let vendor = host.read_trim(&format!("{PCI_DEVICES}/{}/vendor", f.parent));
                (vendor.as_deref() == Some("0x10de")).then(|| f.parent.clone())
            });
        if pins.iter().any(|p| p.uuid == f.uuid) {
            problems.push(format!(
                "{}: UUID {} appears twice; imported once",
                f.origin, f.uuid
            ));
        } else {
            pins.push(SavedVgpu {
                uuid: f.uuid.clone(),
                type_id: f.type_dir.clone(),
                type_name,
                parent: f.parent.clone(),
                gpu,
                interface: "mdev".into(),
            });
        }
        if let Some(i) = f.rc_item {
            imported_items.push(i);
        }
    }

    // rc.local without the imported commands; the rest of their lines keeps running.
    imported_items.sort();
    imported_items.dedup();
    let imported: Vec<&rclocal::RcLine> = imported_items.iter().map(|&i| &items[i]).collect();
    let rc_new = match &rc_text {
        Some(text) => Some(
            rc_rewrite::rewrite(text, &imported)
                .map_err(|e| Failure::failed(format!("/etc/rc.local: {e}; nothing was changed")))?,
        ),
        None => None,
    };

    crate::outln!("Importing into /etc/vgpuctl/vgpus.toml:");
    for p in &pins {
        crate::outln!("  vGPU {} {} on {}", p.uuid, p.type_name, p.parent);
    }
    for s in &sriov {
        crate::outln!("  SR-IOV on {s}");
    }
    for p in &problems {
        crate::outln!("  WARNING {p}");
    }
    if let Some((_, changes)) = rc_new.as_ref().filter(|(_, c)| !c.is_empty()) {
        crate::outln!(
            "{} /etc/rc.local:",
            if dry_run { "Would change" } else { "Changing" }
        );
        for c in changes {
            crate::outln!("  line {}: {}", c.line, c.before);
            crate::outln!("       -> {}", c.after);
        }
    }
    if dry_run {
        crate::outln!("(dry run: nothing was changed)");
        return Ok(Exit::Ok);
    }

    // Pins, unit, rc.local lines commented out, mdevctl definitions set to manual.
    crate::pins::migrate(host)?;
    let mut saved = crate::pins::load(host)?.unwrap_or_default();
    crate::pins::pin(&mut saved, pins.iter().cloned());
    crate::pins::enable_sriov(&mut saved, &sriov);
    crate::pins::save(host, &saved)?;
    let active = crate::active::load(host)?.unwrap_or_else(Profile::default);
    let ctx = apply::Ctx {
        host,
        profile: &active,
        vf_timeout,
        allow_unverified: false,
    };
    let mut steps = vec![Action::CopyBinary {
        to: planner::BINARY.into(),
    }];
    let unit_rel = format!("{}/{}", planner::UNIT_DIR, planner::RESTORE_UNIT);
    if host.read(&unit_rel).ok().as_deref() != Some(planner::RESTORE_UNIT_TEXT) {
        steps.push(Action::WriteFile {
            path: format!("/{unit_rel}"),
            before: None,
            after: planner::RESTORE_UNIT_TEXT.into(),
            mode: 0o644,
        });
        if host.reach().runs_programs() {
            steps.push(Action::Run(
                crate::host::Cmd::new("systemctl").arg("daemon-reload"),
            ));
        }
    }
    steps.push(Action::EnableUnit {
        unit: planner::RESTORE_UNIT.into(),
    });
    for action in steps {
        let step = Step {
            id: "import".into(),
            title: String::new(),
            action,
        };
        apply::apply(&ctx, &step)?;
    }
    if let Some((new, changes)) = &rc_new {
        if !changes.is_empty() {
            let mode = host
                .path(RC_LOCAL)
                .metadata()
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o755);
            host.write_file(RC_LOCAL, new.as_bytes(), WriteOpts { mode, backup: true })?;
            crate::outln!(
                "Changed {} line(s) of /etc/rc.local as shown (backup under /var/lib/vgpuctl/backups/).",
                changes.len()
            );
        }
    }
    for mut def in mdevctl_defs {
        if def.autostart {
            def.autostart = false;
            let rel = format!("{MDEVCTL_DIR}/{}/{}", def.parent, def.uuid);
            host.write_file(&rel, mdevctl::render(&def).as_bytes(), WriteOpts::default())?;
            crate::outln!(
                "Set /{rel} to start manually: vgpuctl-restore.service creates it at boot."
            );
        }
    }
    crate::outln!("Enabled vgpuctl-restore.service.");
    if !host.reach().runs_programs() {
        // Creating the vGPUs needs that system's kernel: its restore unit does it when it boots.
        crate::outln!("{} is not the running system: its vgpuctl-restore.service creates the vGPUs when it boots.", host.root().display());
        return Ok(if problems.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    // Bring the host to the pinned state now, exactly as the boot unit will.
    let report = crate::vgpu::restore::restore(host, &saved, vf_timeout)?;
    crate::outln!("{}", report.summary());
    if !problems.is_empty() || !report.ok {
        for d in report.devices.iter().filter(|d| !d.reason.is_empty()) {
            crate::outln!("  {} {:?}: {}", d.uuid, d.state, d.reason);
        }
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}
