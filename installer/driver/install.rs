//! Installation through the host runner (argument vectors, never a shell): the `.run` with
//! `--dkms -s` (plus the module-signing options on a Secure Boot host), or the package through
//! apt-get / dnf. Full output goes to the install log; success means the installer exited 0
//! *and* `nvidia-vgpu-mgr.service` exists afterwards.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{DriverError, Fetched, OsFamily, PackageKind, INSTALL_LOG};
use crate::host::{Cmd, Host};
use crate::profile::DriverConfig;

/// Where the installer's units may land.
pub const UNIT_DIRS: [&str; 3] = [
    "lib/systemd/system",
    "usr/lib/systemd/system",
    "etc/systemd/system",
];
pub const VGPU_MGR_UNIT: &str = "nvidia-vgpu-mgr.service";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    pub version: String,
    pub kind: PackageKind,
    pub package: PathBuf,
    /// Root-relative path of the unit that proves the install (`usr/lib/systemd/system/...`).
    pub unit: String,
    /// Root-relative install log.
    pub log: String,
    /// The kernel modules were signed with the profile's key.
    pub signed: bool,
    /// Things to tell the operator (reboot, MOK enrolment for DKMS keys).
    pub notes: Vec<String>,
}

fn abs(rel: &str) -> String {
    format!("/{}", rel.trim_start_matches('/'))
}

/// The install command for this package on this host (pure; also what a plan shows).
pub fn install_command(
    fetched: &Fetched,
    os: OsFamily,
    secure_boot: bool,
    cfg: &DriverConfig,
) -> Result<Cmd, DriverError> {
    let package = abs(&fetched.package.to_string_lossy());
    let cmd = match fetched.kind {
        PackageKind::Run => {
            let mut c = Cmd::new(&package).args(["--dkms", "-s"]);
            if secure_boot {
                match (&cfg.signing_key, &cfg.signing_cert) {
                    (Some(k), Some(c2)) => {
                        c = c
                            .arg(format!("--module-signing-secret-key={}", abs(k)))
                            .arg(format!("--module-signing-public-key={}", abs(c2)));
                    }
                    (None, None) => return Err(DriverError::SecureBootNoKeys),
                    (Some(_), None) => {
                        return Err(DriverError::Field {
                            field: "signing_cert",
                            problem: "signing_key is set but signing_cert is not: give both \
                                      (the private key and its enrolled certificate)"
                                .into(),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(DriverError::Field {
                            field: "signing_key",
                            problem: "signing_cert is set but signing_key is not: give both".into(),
                        })
                    }
                }
            }
            c
        }
        PackageKind::Deb => {
            if os == OsFamily::Rhel {
                return Err(wrong_os("a .deb", "an RHEL-family host"));
            }
            Cmd::new("apt-get")
                .args(["install", "-y"])
                .arg(&package)
                .env("DEBIAN_FRONTEND", "noninteractive")
        }
        PackageKind::Rpm => {
            if os == OsFamily::Debian {
                return Err(wrong_os("an .rpm", "a Debian-family host"));
            }
            Cmd::new("dnf").args(["install", "-y"]).arg(&package)
        }
    };
    Ok(cmd.log_to(INSTALL_LOG))
}

fn wrong_os(what: &str, host: &str) -> DriverError {
    DriverError::Field {
        field: "path",
        problem: format!(
            "{what} cannot be installed on {host}: use the zip (vgpuctl picks the package that \
             fits) or the .run"
        ),
    }
}

/// Install the fetched package. `os` and `secure_boot` come from the host facts.
pub fn install(
    host: &Host,
    fetched: &Fetched,
    os: OsFamily,
    secure_boot: bool,
    cfg: &DriverConfig,
) -> Result<Installed> {
    let cmd = install_command(fetched, os, secure_boot, cfg)?;
    let mut signed = false;
    if secure_boot && fetched.kind == PackageKind::Run {
        for (field, p) in [
            ("signing_key", &cfg.signing_key),
            ("signing_cert", &cfg.signing_cert),
        ] {
            let p = p.as_deref().unwrap_or_default();
            if !host.exists(p) {
                return Err(DriverError::MissingFile {
                    field,
                    path: abs(p),
                    root: host.root().display().to_string(),
                }
                .into());
            }
        }
        signed = true;
    }
    // Until the installer has finished, the files it writes (the manager's unit among them) are
    // not an installed driver: a full disk or a crash half-way leaves a partial install that the
    // next run must redo, not take for done.
    crate::state::mark_driver_install(host, Some(&fetched.version))?;
    let out = host.run(&cmd)?;
    if !out.success() {
        bail!(
            "the driver installer failed (`{}` exited {}); nothing is recorded as installed. \
             Full output: /{INSTALL_LOG}. Last lines:\n{}",
            cmd,
            out.status,
            out.tail(15)
        );
    }
    let Some(unit) = UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{VGPU_MGR_UNIT}"))
        .find(|u| host.exists(u))
    else {
        bail!(
            "`{cmd}` exited 0 but {VGPU_MGR_UNIT} is in none of /lib/systemd/system, \
             /usr/lib/systemd/system, /etc/systemd/system: the vGPU manager is not installed \
             (is this the vgpu-kvm host driver?). Full output: /{INSTALL_LOG}. Last lines:\n{}",
            out.tail(15)
        );
    };
    crate::state::mark_driver_install(host, None)?;
    let mut notes = vec![format!(
        "driver {} installed; reboot to load it",
        fetched.version
    )];
    if secure_boot && fetched.kind != PackageKind::Run {
        notes.push(
            "Secure Boot is on: DKMS signs the modules with its own key (/var/lib/dkms/mok.pub); \
             enrol it with `mokutil --import /var/lib/dkms/mok.pub` if it is not enrolled yet"
                .into(),
        );
    }
    Ok(Installed {
        version: fetched.version.clone(),
        kind: fetched.kind,
        package: fetched.package.clone(),
        unit,
        log: INSTALL_LOG.to_string(),
        signed,
        notes,
    })
}
