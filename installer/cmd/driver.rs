//! `vgpuctl driver fetch|install`: the driver step on its own, with the same code setup uses.

use crate::cli::DriverArgs;
use crate::driver::{self, DriverError, FetchOptions};
use crate::exit::{Exit, Failure};
use crate::facts::{self, HostFacts, OsFamily};
use crate::host::Host;
use crate::profile::DriverConfig;

pub fn os_family(f: &HostFacts) -> driver::OsFamily {
    match f.os.family {
        OsFamily::Debian => driver::OsFamily::Debian,
        OsFamily::Rhel => driver::OsFamily::Rhel,
        OsFamily::Other => driver::OsFamily::Other,
    }
}

/// Bad input in `[driver]` (a field, an expired link, a missing file) is exit 2; the rest is 1.
pub fn failure(e: anyhow::Error) -> Failure {
    if e.downcast_ref::<DriverError>().is_some() {
        Failure::usage_from(e)
    } else {
        Failure::from(e)
    }
}

/// Validate, fetch (download or copy, verify, extract, --check) and, when asked, install.
pub fn fetch_and_install(
    host: &Host,
    cfg: &DriverConfig,
    allow_unverified: bool,
    guest: bool,
    install: bool,
) -> Result<String, Failure> {
    let f = facts::observe(host);
    let src =
        driver::validate(cfg, host, std::time::SystemTime::now()).map_err(Failure::usage_from)?;
    let opts = FetchOptions {
        allow_unverified,
        guest,
        os: os_family(&f),
        ..FetchOptions::default()
    };
    let fetched = driver::fetch(host, &src, &opts).map_err(failure)?;
    if !install {
        return Ok(fetched.package_abs());
    }
    let inst = driver::install(host, &fetched, opts.os, f.secure_boot == Some(true), cfg)
        .map_err(failure)?;
    Ok(format!(
        "installed driver {} ({}); log /{}",
        inst.version,
        fetched.kind.extension(),
        inst.log
    ))
}

pub fn run(host: &Host, args: &DriverArgs, install: bool) -> Result<Exit, Failure> {
    let profile = crate::cmd::setup::load_profile(&args.profile)?;
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
        crate::cmd::require_root(host, "driver install")?;
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
