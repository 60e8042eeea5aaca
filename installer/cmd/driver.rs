//! `vgpuctl driver fetch|install`: the driver step on its own, with the same code setup uses.

use crate::cli::DriverArgs;
use crate::driver::fetch_and_install;
use crate::exit::{Exit, Failure};
use crate::host::Host;

pub fn run(host: &Host, args: &DriverArgs, install: bool) -> Result<Exit, Failure> {
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
    let out = fetch_and_install(host, cfg, args.allow_unverified, args.guest, install)?;
    crate::outln!("{out}");
    Ok(Exit::Ok)
}
