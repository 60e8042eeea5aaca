//! `vgpuctl uninstall`: stop restoring vGPUs at boot. The unit is disabled and removed and the
//! active profile and the pins are kept as backups; vGPUs that exist now, the driver and the kernel command
//! line are left alone (a VM may be using them; `vgpuctl check` still describes the host).
//! `uninstall --all` first undoes setup as well, from a plan shown before anything changes
//! ([`crate::setup::teardown`]).

use std::io::IsTerminal;

use crate::exit::{Exit, Failure};
use crate::host::files::BACKUP_DIR;
use crate::host::{Host, WriteOpts};
use crate::setup::paths::NOUVEAU_CONF;
use crate::setup::planner::{BINARY, RESTORE_UNIT, RESUME_UNIT, UNIT_DIR, WANTS_DIR};
use crate::setup::teardown;

pub fn run(host: &Host, yes: bool, all: bool) -> Result<Exit, Failure> {
    crate::privilege::require_root(host, "uninstall")?;
    let teardown = if all {
        let f = crate::setup::observe::observe(host)?;
        Some(teardown::plan(&f, &found(host, &f)))
    } else {
        None
    };
    let mut own: Vec<String> = vec![
        crate::state::PATH.to_string(),
        crate::driver::DOWNLOAD_DIR.to_string(),
    ];
    own.retain(|p| all && host.exists(p));
    let targets: Vec<String> = [
        format!("{WANTS_DIR}/{RESTORE_UNIT}"),
        format!("{WANTS_DIR}/{RESUME_UNIT}"),
        format!("{UNIT_DIR}/{RESTORE_UNIT}"),
        format!("{UNIT_DIR}/{RESUME_UNIT}"),
        crate::active::PATH.to_string(),
        crate::pins::PATH.to_string(),
        crate::setup::RESUME_PROFILE.to_string(),
        BINARY.trim_start_matches('/').to_string(),
    ]
    .into_iter()
    .filter(|p| host.exists(p))
    .chain(own)
    .collect();
    let undo = teardown.as_ref().filter(|p| !p.is_empty());
    if targets.is_empty() && undo.is_none() {
        crate::outln!("Nothing to uninstall.");
        return Ok(Exit::Ok);
    }
    if let Some(plan) = undo {
        crate::outln!("First, undo setup:");
        crate::out!("{plan}");
        refuse_offline(host, plan)?;
    }
    if !targets.is_empty() {
        crate::outln!("This removes:");
        for t in &targets {
            crate::outln!("  /{t}");
        }
    }
    crate::outln!("The active profile and the pins are kept as /var/lib/vgpuctl/backups/etc/vgpuctl/{{profile,vgpus}}.toml.uninstalled;");
    if teardown.is_some() {
        crate::outln!(
            "the first backups stay under /var/lib/vgpuctl/backups, the logs under /var/log."
        );
    } else {
        crate::outln!(
            "existing vGPUs, the driver and the kernel command line are left as they are."
        );
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage("pass --yes to uninstall without a terminal"));
        }
        // Esc and Ctrl-C cancel here as at every other prompt: "Cancelled: nothing was
        // changed.", exit 130, the cursor shown again.
        crate::interrupt::cancel_on_ctrl_c();
        let ok = crate::wizard::prompt::confirm("Uninstall?", false)?;
        crate::interrupt::changes_begin();
        if !ok {
            crate::outln!("Nothing was changed.");
            return Ok(Exit::Failed);
        }
    }
    let _lock = crate::setup::lock::acquire(host, "uninstall")?;
    // Kept before the undo, which unpins each vGPU it removes: the copy says what was pinned.
    for kept in [crate::active::PATH, crate::pins::PATH] {
        if let Ok(text) = host.read(kept) {
            host.write_file(
                &format!("{}.uninstalled", Host::backup_rel(kept)),
                text.as_bytes(),
                WriteOpts::state(),
            )?;
        }
    }
    if let Some(plan) = undo {
        undo_setup(host, plan)?;
    }
    for t in &targets {
        if t == crate::driver::DOWNLOAD_DIR {
            // The fetched and extracted driver packages: vgpuctl's own cache.
            let dir = host.checked_path(t).map_err(anyhow::Error::from)?;
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Failure::failed(format!("cannot remove {}: {e}", dir.display())))?;
            continue;
        }
        host.remove_file(t)?;
    }
    if all && host.list("etc/vgpuctl").is_empty() {
        // vgpuctl's own directory, empty now (setup made it).
        let _ = std::fs::remove_dir(host.path("etc/vgpuctl"));
    }
    // Offline roots are handled like `systemctl --root`: only the links change, no reload.
    if host.reach().runs_programs() {
        let out = host.run(&crate::host::Cmd::new("systemctl").arg("daemon-reload"))?;
        if !out.success() {
            eprintln!("systemctl daemon-reload: {}", out.tail(3));
        }
    }
    crate::outln!("Uninstalled: nothing will be restored at the next boot.");
    Ok(Exit::Ok)
}

/// An offline root (`--root` of another system) runs no program and has no live devices: a plan
/// that needs them is refused before any change, naming the steps.
fn refuse_offline(host: &Host, plan: &crate::setup::plan::Plan) -> Result<(), Failure> {
    use crate::setup::plan::Action;
    if host.reach().runs_programs() {
        return Ok(());
    }
    let live: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Run(_) | Action::RemoveVgpus { .. }))
        .map(|s| s.title.as_str())
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "uninstall --all on {} needs the running system for: {}. Nothing was changed; run it on \
         that host",
        host.root().display(),
        live.join("; ")
    )))
}

/// Run the undo plan, as setup runs its plans: step by step, each told; a failure stops it.
fn undo_setup(host: &Host, plan: &crate::setup::plan::Plan) -> Result<(), Failure> {
    let profile = crate::profile::Profile::default();
    let ctx = crate::setup::apply::Ctx {
        host,
        profile: &profile,
        vf_timeout: std::time::Duration::from_secs(60),
        allow_unverified: false,
    };
    let (failures, stale) = crate::setup::apply::execute(&ctx, plan, &mut |_, _| Ok(()))?;
    if let Some(why) = stale {
        return Err(Failure::failed(format!(
            "uninstall stopped: the host changed since the plan ({why}); run it again"
        )));
    }
    if !failures.is_empty() {
        return Err(Failure::failed(format!(
            "uninstall stopped: {}; nothing after that step was changed. Fix it and run it again",
            failures.join("; ")
        )));
    }
    Ok(())
}

/// What the undo plan needs besides the setup facts: the first backups (not the copies
/// `uninstall` keeps, `*.uninstalled`), the files setup creates that have no backup, and the
/// driver's uninstaller.
fn found(host: &Host, f: &crate::setup::observe::Facts) -> teardown::Found {
    let mut backups = Vec::new();
    let mut stack = vec![BACKUP_DIR.to_string()];
    while let Some(dir) = stack.pop() {
        for name in host.list(&dir) {
            let rel = format!("{dir}/{name}");
            if host.is_dir(&rel) {
                stack.push(rel);
                continue;
            }
            if name.ends_with(".uninstalled") {
                continue;
            }
            let Ok(original) = host.read_bytes(&rel) else {
                continue;
            };
            let path = rel[BACKUP_DIR.len()..].to_string();
            backups.push(teardown::Backup {
                current: host.read_bytes(&path).ok(),
                path,
                original,
            });
        }
    }
    backups.sort_by(|a, b| a.path.cmp(&b.path));
    let created = [NOUVEAU_CONF, crate::edit::registry_dwords::OWN_FILE]
        .iter()
        .filter(|p| host.exists(p) && !host.exists(&Host::backup_rel(p)))
        .map(|p| p.to_string())
        .collect();
    teardown::Found {
        backups,
        created,
        // Of the packages kept (an upgrade keeps the old zip's beside the new), the installed one.
        driver_uninstall: f.driver_uninstall.clone(),
    }
}
