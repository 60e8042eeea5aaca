//! The driver step as setup applies it and `vgpuctl driver fetch|install` runs it on its own:
//! validate `[driver]`, fetch (download or copy, verify, extract, --check), install when asked.

use super::{DriverError, FetchOptions};
use crate::exit::Failure;
use crate::facts;
use crate::host::Host;
use crate::profile::DriverConfig;

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
        super::validate(cfg, host, std::time::SystemTime::now()).map_err(Failure::usage_from)?;
    let opts = FetchOptions {
        allow_unverified,
        guest,
        os: f.os.family,
        ..FetchOptions::default()
    };
    let fetched = super::fetch(host, &src, &opts).map_err(failure)?;
    if !install {
        return Ok(fetched.package_abs());
    }
    let inst = super::install(host, &fetched, opts.os, f.secure_boot == Some(true), cfg)
        .map_err(failure)?;
    Ok(format!(
        "installed driver {} ({}); log /{}",
        inst.version,
        fetched.kind.extension(),
        inst.log
    ))
}
