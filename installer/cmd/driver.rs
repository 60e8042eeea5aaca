//! `vgpuctl driver fetch|install`: the driver step on its own, with the same code setup uses.

use crate::cli::DriverArgs;
use crate::driver::fetch_and_install;
use crate::exit::{Exit, Failure};
use crate::host::Host;

pub fn run(
    host: &Host,
    args: &DriverArgs,
    install: bool,
    global: &crate::cli::Global,
) -> Result<Exit, Failure> {
    let profile = crate::profile_load::load_profile(&args.profile)?;
    let Some(cfg) = profile.driver.as_ref() else {
        return Err(Failure::usage(format!(
            "{}: no [driver] section: add `path = \"/root/NVIDIA-GRID-Linux-KVM-....zip\"` or a licensed `url`",
            args.profile.display()
        )));
    };
    if !host.reach().runs_programs() {
        return Err(Failure::usage(crate::setup::offline::refusal(
            host,
            &[if install {
                "the driver installer (the .run file's --check and install)"
            } else {
                "the driver package's check (`.run --check`)"
            }],
        )));
    }
    if install {
        crate::privilege::require_root(host, "driver install")?;
        crate::driver::step::refuse_held_nouveau(host)?;
    }
    let _lock = crate::setup::lock::acquire(
        host,
        if install {
            "driver install"
        } else {
            "driver fetch"
        },
    )?;
    if install {
        // Another version than the installed one: the upgrade setup plans, with its refusals.
        let path = crate::opener::real_path(&args.profile);
        let opts = crate::setup::Options {
            dry_run: false,
            yes: true,
            allow_unverified: args.allow_unverified,
            allow_remove: false,
            // setup's --vf-timeout default; the upgrade waits for no VF.
            vf_timeout: std::time::Duration::from_secs(120),
            profile_path: path.clone(),
            source: Default::default(),
            next_command: crate::opener::next_command(
                global,
                &["setup", "--profile", &path, "--yes"],
            ),
        };
        if let Some(exit) = crate::setup::driver_upgrade(host, &profile, &opts)? {
            return Ok(exit);
        }
    }
    let out = fetch_and_install(host, cfg, args.allow_unverified, args.guest, install)?;
    crate::outln!("{out}");
    Ok(Exit::Ok)
}
