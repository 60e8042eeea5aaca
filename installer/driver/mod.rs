//! The GRID host driver: where it comes from, download, verification, extraction, install.
//!
//! `validate` turns the profile's `[driver]` section into a [`DriverSource`] (pure checks plus
//! "does the file exist"), [`fetch`] downloads (when the source is a link), verifies the SHA-256
//! computed while streaming, and extracts the host package that fits this host, and [`install`]
//! runs the package's installer through the host runner. Everything the operator sees about a
//! link goes through [`link::redact_url`]: the query of a portal link is a credential.

pub mod download;
pub mod extract;
pub mod install;
pub mod link;
pub mod makeself;
pub mod nouveau;
pub mod progress;
pub mod source;
pub mod step;

use std::path::PathBuf;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::host::{Cmd, Host};

pub use download::{DownloadError, NetOptions};
pub use extract::{version_from_name, ExtractError};
pub use install::{install, install_command, Installed};
pub use link::{redact_url, SecretUrl};
pub use progress::{Messages, ProgressMode};
pub use source::{validate, Artifact, DriverSource, Origin};
pub use step::fetch_and_install;

/// Where downloads and extracted packages live, under the host root.
pub const DOWNLOAD_DIR: &str = "var/lib/vgpuctl/downloads";
/// Full output of the driver's own programs (`--check`, the installer, apt/dnf).
pub const INSTALL_LOG: &str = "var/log/vgpuctl/driver-install.log";

/// Which package format fits this host: the family facts observe (`/etc/os-release`).
pub use crate::facts::OsFamily;

/// The host package that was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Run,
    Deb,
    Rpm,
}

impl PackageKind {
    pub fn extension(self) -> &'static str {
        match self {
            PackageKind::Run => "run",
            PackageKind::Deb => "deb",
            PackageKind::Rpm => "rpm",
        }
    }
}

/// Bad input: the CLI exits 2 on these (runtime failures are other errors, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("profile [driver] {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error(
        "the driver link {url} expired at {expired_at}; portal links are valid for about an \
         hour: get a fresh one from the NVIDIA licensing portal ({portal}) and put it in \
         [driver] url (a partial download resumes with the new link)",
        portal = link::PORTAL
    )]
    LinkExpired { url: String, expired_at: String },
    #[error(
        "profile [driver] url: {url} is plain http: use https, or set allow_http = true for an \
         internal mirror you trust (and pin sha256)"
    )]
    HttpNotAllowed { url: String },
    #[error(
        "profile [driver] {field}: {path} does not exist under the host root {root}: copy the \
         file there or fix the path"
    )]
    MissingFile {
        field: &'static str,
        path: String,
        root: String,
    },
    #[error(
        "profile [driver] has a url but no sha256: a download cannot be verified. Pin the \
         file's SHA-256 (sha256 = \"...\"), or run with --allow-unverified once to download it \
         and print its hash"
    )]
    Unverified { url: String },
    #[error(
        "Secure Boot is on and the profile gives no module signing key: the kernel would refuse \
         the unsigned nvidia modules. Create a key pair (openssl req -new -x509 -newkey rsa:2048 \
         -nodes -days 36500 -subj /CN=vgpuctl-module-signing/ -keyout mok.key -outform DER -out \
         mok.der), enrol it with `mokutil --import mok.der` and confirm at the next boot's \
         MOK manager, then set [driver] signing_key and signing_cert"
    )]
    SecureBootNoKeys,
}

/// How `fetch` behaves and reports.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Accept a url without a pinned sha256 (warned; the computed hash is printed).
    pub allow_unverified: bool,
    /// Also extract `Guest_Drivers/` for copying into VMs.
    pub guest: bool,
    /// Which host package to extract from the zip.
    pub os: OsFamily,
    pub progress: ProgressMode,
    /// Where progress lines and warnings go (stderr unless a test captures them).
    pub messages: Messages,
    pub net: NetOptions,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            allow_unverified: false,
            guest: false,
            os: OsFamily::Other,
            progress: ProgressMode::Auto,
            messages: Messages::stderr(),
            net: NetOptions::default(),
        }
    }
}

/// What `fetch` produced. Paths are root-relative (no leading `/`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fetched {
    /// The downloaded or given file (zip or bare package).
    pub archive: PathBuf,
    /// SHA-256 of `archive` (hex, lowercase).
    pub sha256: String,
    /// Whether `sha256` matched a pinned value (false: computed only, `--allow-unverified` or a
    /// path without sha256).
    pub verified: bool,
    /// The host package to install.
    pub package: PathBuf,
    pub kind: PackageKind,
    /// Driver version from the package's file name (`550.163.02`).
    pub version: String,
    /// `Guest_Drivers/` extracted for VMs (`--guest`).
    pub guest_dir: Option<PathBuf>,
}

impl Fetched {
    /// The package path as the host sees it (`/var/lib/vgpuctl/downloads/...`).
    pub fn package_abs(&self) -> String {
        format!("/{}", self.package.display())
    }
}

/// Download (for a url) into `<root>/var/lib/vgpuctl/downloads/`, verify, and extract the host
/// package that fits this host; a `.run` is checked with its own `--check` before use.
pub fn fetch(host: &Host, src: &DriverSource, opts: &FetchOptions) -> Result<Fetched> {
    let msgs = &opts.messages;
    for w in &src.warnings {
        msgs.warn(w);
    }
    let (archive, sha256, verified) = match &src.origin {
        Origin::Url { url, token, .. } => {
            if src.sha256.is_none() {
                if !opts.allow_unverified {
                    return Err(DriverError::Unverified {
                        url: url.redacted(),
                    }
                    .into());
                }
                msgs.warn(&format!(
                    "downloading {url} WITHOUT a pinned sha256 (--allow-unverified): nothing \
                     proves this file is NVIDIA's driver. Check it, then pin the hash printed \
                     below in the profile"
                ));
            }
            let d = download::download(
                host,
                url,
                token.as_ref(),
                &src.file_name,
                src.sha256.as_deref(),
                src.artifact,
                opts,
            )?;
            (d.rel, d.sha256, src.sha256.is_some())
        }
        Origin::Path { rel } => {
            let sha = hash_file(host, rel)?;
            if let Some(want) = &src.sha256 {
                if *want != sha {
                    return Err(DownloadError::ChecksumMismatch {
                        file: format!("/{rel}"),
                        expected: want.clone(),
                        actual: sha,
                        kept_as: None,
                    }
                    .into());
                }
            }
            (PathBuf::from(rel), sha, src.sha256.is_some())
        }
    };
    if !verified {
        msgs.line(&format!(
            "SHA-256 of /{}: {sha256}\n  pin it in the profile: [driver] sha256 = \"{sha256}\"",
            archive.display()
        ));
    }

    let (package, kind, guest_dir) = match src.artifact {
        Artifact::Zip => {
            let e = extract::extract(host, &archive, opts)?;
            (e.package, e.kind, e.guest_dir)
        }
        Artifact::Package(kind) => (archive.clone(), kind, None),
    };
    let file_name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A `.run` says its version in its makeself label too: a renamed file is still known, and a
    // name that says another version than the archive is refused.
    let labelled = (kind == PackageKind::Run)
        .then(|| makeself::label(host, &package))
        .flatten()
        .and_then(|l| makeself::version_of_label(&l));
    let version = match (version_from_name(&file_name), labelled) {
        (Some(n), Some(l)) if n != l => anyhow::bail!(
            "/{}: the file name says driver {n} but the archive's label says {l}: rename it \
             or fetch the right file",
            package.display()
        ),
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => anyhow::bail!(
            "cannot tell the driver version from the package name {file_name} (nor from a \
             makeself label inside it)"
        ),
    };
    if kind == PackageKind::Run {
        check_run(host, &package)?;
    }
    msgs.line(&format!(
        "driver {version}: host package /{} ({})",
        package.display(),
        kind.extension()
    ));
    Ok(Fetched {
        archive,
        sha256,
        verified,
        package,
        kind,
        version,
        guest_dir,
    })
}

/// Run the `.run`'s own integrity check (makeself `--check`: embedded checksums).
pub fn check_run(host: &Host, package: &std::path::Path) -> Result<()> {
    let cmd = Cmd::new(format!("/{}", package.display()))
        .arg("--check")
        .log_to(INSTALL_LOG);
    let out = host.run(&cmd)?;
    if !out.success() {
        anyhow::bail!(
            "/{} failed its own integrity check (`--check`, exit {}): the file is damaged; \
             delete it and fetch again. Last lines:\n{}",
            package.display(),
            out.status,
            out.tail(10)
        );
    }
    Ok(())
}

/// SHA-256 of a root-relative file (one read).
pub fn hash_file(host: &Host, rel: &str) -> Result<String> {
    let path = host.checked_path(rel)?;
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut HashWriter(&mut h))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
