//! `vgpuctl uninstall`: stop restoring vGPUs at boot. The unit is disabled and removed and the
//! active profile and the pins are kept as backups; vGPUs that exist now, the driver and the kernel command
//! line are left alone (a VM may be using them; `vgpuctl check` still describes the host).

use std::io::IsTerminal;

use crate::exit::{Exit, Failure};
use crate::host::{Host, WriteOpts};
use crate::setup::planner::{BINARY, RESTORE_UNIT, RESUME_UNIT, UNIT_DIR, WANTS_DIR};

pub fn run(host: &Host, yes: bool) -> Result<Exit, Failure> {
    crate::privilege::require_root(host, "uninstall")?;
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
    .collect();
    if targets.is_empty() {
        crate::outln!("Nothing to uninstall.");
        return Ok(Exit::Ok);
    }
    crate::outln!("This removes:");
    for t in &targets {
        crate::outln!("  /{t}");
    }
    crate::outln!("The active profile and the pins are kept as /var/lib/vgpuctl/backups/etc/vgpuctl/{{profile,vgpus}}.toml.uninstalled;");
    crate::outln!("existing vGPUs, the driver and the kernel command line are left as they are.");
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage("pass --yes to uninstall without a terminal"));
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt("Uninstall?")
            .default(false)
            .interact()
            .map_err(|e| Failure::usage(format!("no answer ({e}); nothing was changed")))?;
        if !ok {
            crate::outln!("Nothing was changed.");
            return Ok(Exit::Failed);
        }
    }
    let _lock = crate::setup::lock::acquire(host, "uninstall")?;
    for kept in [crate::active::PATH, crate::pins::PATH] {
        if let Ok(text) = host.read(kept) {
            host.write_file(
                &format!("{}.uninstalled", Host::backup_rel(kept)),
                text.as_bytes(),
                WriteOpts::state(),
            )?;
        }
    }
    for t in &targets {
        host.remove_file(t)?;
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
