//! The driver step as setup applies it and `vgpuctl driver fetch|install` runs it on its own:
//! validate `[driver]`, fetch (download or copy, verify, extract, --check), install when asked.

use super::nouveau::Verdict;
use super::{DriverError, FetchOptions};
use crate::exit::Failure;
use crate::facts;
use crate::host::{Cmd, Host};
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
    if install {
        clear_nouveau(host, &f)?;
    }
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

/// Refuse (exit 2, with the fix) when nouveau drives a GPU and cannot be unloaded; read-only, so
/// `vgpuctl driver install` can ask before it takes the lock.
pub fn refuse_held_nouveau(host: &Host) -> Result<(), Failure> {
    let f = facts::observe(host);
    match super::nouveau::NouveauUse::observe(host, &f).judge() {
        Verdict::Reboot(why) => Err(nouveau_refusal(&why)),
        _ => Ok(()),
    }
}

/// Get nouveau out of the installer's way before anything else is done: unload it when nothing
/// holds it, else refuse (exit 2) with the fix. See [`super::nouveau`].
fn clear_nouveau(host: &Host, f: &facts::HostFacts) -> Result<(), Failure> {
    match super::nouveau::NouveauUse::observe(host, f).judge() {
        Verdict::Clear => Ok(()),
        Verdict::Unload if host.reach().runs_programs() => {
            let cmd = Cmd::new("modprobe").arg("-r").arg("nouveau");
            let out = host.run(&cmd).map_err(Failure::from)?;
            if !out.success() {
                return Err(nouveau_refusal(&format!(
                    "`{cmd}` failed: {}",
                    out.tail(3).trim()
                )));
            }
            crate::outln!("nouveau drove the GPU but nothing held it: unloaded it (`{cmd}`)");
            Ok(())
        }
        Verdict::Unload => Err(nouveau_refusal("nouveau drives a GPU on this host root")),
        Verdict::Reboot(why) => Err(nouveau_refusal(&why)),
    }
}

/// Exit 2: the host is not ready for the install (as bad input is), with the fix.
fn nouveau_refusal(why: &str) -> Failure {
    Failure::usage(format!(
        "{why}. NVIDIA's installer refuses to run while nouveau drives a GPU (\"The Nouveau kernel \
         driver is currently in use by your system\"). Fix: `vgpuctl setup` blacklists it, \
         rebuilds the initramfs and stops at a reboot; by hand: write `blacklist nouveau` and \
         `options nouveau modeset=0` to /etc/modprobe.d/blacklist-nouveau.conf, run \
         `update-initramfs -u` (Debian/Ubuntu) or `dracut -f` (RHEL family), reboot, then run \
         this again. Nothing was changed."
    ))
}
