//! `[driver]` validation: one source (url or path), a well-formed sha256, https unless allowed,
//! a portal link that has not expired. Errors name the profile field.

use std::time::SystemTime;

use super::link::{self, PortalToken, SecretUrl};
use super::{DriverError, PackageKind, DOWNLOAD_DIR};
use crate::host::Host;
use crate::profile::DriverConfig;

/// What kind of file the source is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// NVIDIA's licensed zip (`Host_Drivers/`, `Guest_Drivers/`, ...).
    Zip,
    /// A bare host package.
    Package(PackageKind),
}

impl Artifact {
    pub fn from_name(name: &str) -> Option<Artifact> {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.')?.1;
        Some(match ext {
            "zip" => Artifact::Zip,
            "run" => Artifact::Package(PackageKind::Run),
            "deb" => Artifact::Package(PackageKind::Deb),
            "rpm" => Artifact::Package(PackageKind::Rpm),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Download. The url is a credential; `Debug`/`Display` show it redacted.
    Url {
        url: SecretUrl,
        /// The portal token's fields, when the link has one.
        token: Option<PortalToken>,
        plain_http: bool,
    },
    /// A file already inside the host root (root-relative, no leading `/`).
    Path { rel: String },
}

/// A validated `[driver]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverSource {
    pub origin: Origin,
    /// The file's name: the url path's last segment, or the path's file name.
    pub file_name: String,
    pub artifact: Artifact,
    /// Pinned SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// Things the operator must be told (plain http, ...); `fetch` prints them.
    pub warnings: Vec<String>,
}

impl DriverSource {
    /// What to show in a plan: the redacted url or the path.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Url { url, .. } => url.redacted(),
            Origin::Path { rel } => format!("/{rel}"),
        }
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> DriverError {
    DriverError::Field {
        field,
        problem: problem.into(),
    }
}

/// Validate the `[driver]` section. An expired portal link is refused here, before any
/// connection, unless a verified download of the same file is already on disk (then no link is
/// needed; `fetch` re-checks the expiry before it would connect).
pub fn validate(
    cfg: &DriverConfig,
    host: &Host,
    now: SystemTime,
) -> Result<DriverSource, DriverError> {
    let sha256 = match &cfg.sha256 {
        None => None,
        Some(s) => Some(check_sha256(s)?),
    };
    match (&cfg.url, &cfg.path) {
        (Some(_), Some(_)) => Err(field(
            "url",
            "both url and path are set: keep one (url to download, path for a file already on \
             this host)",
        )),
        (None, None) => Err(field(
            "url",
            "neither url nor path is set: give the portal link (url = \"https://...\") or the \
             copied file (path = \"/root/NVIDIA-GRID-Linux-KVM-...zip\")",
        )),
        (Some(url), None) => validate_url(url, cfg, sha256, host, now),
        (None, Some(path)) => validate_path(path, sha256, host),
    }
}

fn check_sha256(s: &str) -> Result<String, DriverError> {
    let t = s.trim().to_ascii_lowercase();
    // Accept the `sha256sum` output format (`<hex>  <file>`) people paste.
    let t = t.split_whitespace().next().unwrap_or("").to_string();
    if t.len() != 64 {
        return Err(field(
            "sha256",
            format!(
                "{} characters where a SHA-256 has 64 hex digits (as printed by sha256sum)",
                t.len()
            ),
        ));
    }
    if let Some(c) = t.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(field(
            "sha256",
            format!("{c:?} is not a hex digit (a SHA-256 is 64 characters 0-9a-f)"),
        ));
    }
    Ok(t)
}

fn validate_url(
    raw: &str,
    cfg: &DriverConfig,
    sha256: Option<String>,
    host: &Host,
    now: SystemTime,
) -> Result<DriverSource, DriverError> {
    let url = SecretUrl::new(raw.trim());
    let shown = url.redacted();
    let mut warnings = Vec::new();
    let parsed = reqwest::Url::parse(url.expose())
        .map_err(|e| field("url", format!("{shown} is not a valid URL ({e})")))?;
    let plain_http = match parsed.scheme() {
        "https" => false,
        "http" if cfg.allow_http => {
            warnings.push(format!(
                "the driver comes over plain http ({shown}, allow_http = true): anyone on the \
                 path can change it{}",
                if sha256.is_some() {
                    "; the pinned sha256 still protects it"
                } else {
                    ", and no sha256 is pinned"
                }
            ));
            true
        }
        "http" => return Err(DriverError::HttpNotAllowed { url: shown }),
        other => {
            return Err(field(
                "url",
                format!("{shown}: scheme {other:?} is not supported (use https)"),
            ))
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(field("url", format!("{shown} has no host")));
    }
    let file_name = link::file_name(url.expose()).ok_or_else(|| {
        field(
            "url",
            format!(
                "{shown} does not end in a file name (expected .../NVIDIA-GRID-Linux-KVM-....zip)"
            ),
        )
    })?;
    let artifact = Artifact::from_name(&file_name).ok_or_else(|| {
        field(
            "url",
            format!("{shown}: the file {file_name} is not a .zip, .run, .deb or .rpm"),
        )
    })?;
    if let Some(problem) = link::token_problem(url.expose()) {
        return Err(field("url", format!("{shown}: {problem}")));
    }
    let token = link::portal_token(url.expose());
    if let Some(t) = &token {
        let cached = sha256.is_some() && host.exists(&format!("{DOWNLOAD_DIR}/{file_name}"));
        if t.is_expired(now) && !cached {
            return Err(DriverError::LinkExpired {
                url: shown,
                expired_at: link::utc_string(t.expires_at()),
            });
        }
    }
    Ok(DriverSource {
        origin: Origin::Url {
            url,
            token,
            plain_http,
        },
        file_name,
        artifact,
        sha256,
        warnings,
    })
}

fn validate_path(
    path: &str,
    sha256: Option<String>,
    host: &Host,
) -> Result<DriverSource, DriverError> {
    let rel = crate::host::clean_rel(path)
        .map_err(|e| field("path", format!("{path}: {e}")))?
        .to_string_lossy()
        .into_owned();
    let file_name = rel.rsplit('/').next().unwrap_or("").to_string();
    let artifact = Artifact::from_name(&file_name).ok_or_else(|| {
        field(
            "path",
            format!("{path}: expected the licensed .zip, or a .run, .deb or .rpm"),
        )
    })?;
    let abs = host.path(&rel);
    if !abs.is_file() {
        return Err(DriverError::MissingFile {
            field: "path",
            path: format!("/{rel}"),
            root: host.root().display().to_string(),
        });
    }
    Ok(DriverSource {
        origin: Origin::Path { rel },
        file_name,
        artifact,
        sha256,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    struct NoKernel;
    impl crate::host::Kernel for NoKernel {
        fn reach(&self, _: &std::path::Path) -> crate::host::Reach {
            crate::host::Reach::Simulated
        }
        fn write_attr(
            &self,
            _: &std::path::Path,
            _: &std::path::Path,
            _: &str,
        ) -> std::io::Result<()> {
            unreachable!()
        }
        fn run(&self, _: &Host, _: &crate::host::Cmd) -> anyhow::Result<crate::host::RunOutput> {
            unreachable!()
        }
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SEED: &str = "https://griddownloads.nvidia.com/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip?autho=st=1750064794~exp=1750068394~acl=/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip~hmac=a5d806ec403b7ddbfe74cd163432eb9a17b0b0eab0eca6ee6c8192ef1a7352b7";

    fn host() -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path(), Arc::new(NoKernel));
        (d, h)
    }

    fn url_cfg(url: &str) -> DriverConfig {
        DriverConfig {
            url: Some(url.into()),
            sha256: Some(SHA.into()),
            ..Default::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn portal_link_before_expiry_is_accepted_and_shown_redacted() {
        let (_d, h) = host();
        let s = validate(&url_cfg(SEED), &h, at(1_750_065_000)).unwrap();
        assert_eq!(s.artifact, Artifact::Zip);
        assert_eq!(
            s.file_name,
            "NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"
        );
        assert!(s.describe().ends_with(".zip?<redacted>"));
        assert!(!format!("{s:?}").contains("hmac"));
    }

    #[test]
    fn expired_link_is_refused_with_its_utc_expiry() {
        let (_d, h) = host();
        let e = validate(&url_cfg(SEED), &h, at(1_750_068_394)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DriverError::LinkExpired { .. }));
        assert!(msg.contains("2025-06-16 10:06:34 UTC"), "{msg}");
        assert!(msg.contains("ui.licensing.nvidia.com/software"), "{msg}");
        assert!(!msg.contains("a5d806ec"), "{msg}");
    }

    #[test]
    fn expired_link_is_fine_when_the_verified_file_is_already_downloaded() {
        let (_d, h) = host();
        h.write_file(
            &format!("{DOWNLOAD_DIR}/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"),
            b"PK",
            crate::host::WriteOpts::state(),
        )
        .unwrap();
        validate(&url_cfg(SEED), &h, at(1_800_000_000)).unwrap();
    }

    #[test]
    fn field_errors_name_the_field() {
        let (_d, h) = host();
        let now = at(1_750_065_000);
        let mut c =
            url_cfg("http://mirror.lan/d/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip");
        assert!(matches!(
            validate(&c, &h, now).unwrap_err(),
            DriverError::HttpNotAllowed { .. }
        ));
        c.allow_http = true;
        let s = validate(&c, &h, now).unwrap();
        assert!(s.warnings[0].contains("plain http"));

        let mut c = url_cfg("https://h/x.zip");
        c.sha256 = Some("abc".into());
        let e = validate(&c, &h, now).unwrap_err().to_string();
        assert!(e.contains("[driver] sha256: 3 characters"), "{e}");
        c.sha256 = Some(format!("{}  NVIDIA.zip", SHA.to_uppercase()));
        assert_eq!(validate(&c, &h, now).unwrap().sha256.as_deref(), Some(SHA));

        let e = validate(&url_cfg("ftp://h/x.zip"), &h, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[driver] url"), "{e}");
        let e = validate(&url_cfg("https://h/download"), &h, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a .zip"), "{e}");
        let e = validate(&DriverConfig::default(), &h, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither url nor path"), "{e}");
        let both = DriverConfig {
            url: Some("https://h/x.zip".into()),
            path: Some("/root/x.zip".into()),
            ..Default::default()
        };
        assert!(validate(&both, &h, now)
            .unwrap_err()
            .to_string()
            .contains("both"));
    }

    #[test]
    fn path_must_exist_under_the_root() {
        let (d, h) = host();
        let c = DriverConfig {
            path: Some("/root/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run".into()),
            ..Default::default()
        };
        let e = validate(&c, &h, SystemTime::now()).unwrap_err();
        assert!(matches!(e, DriverError::MissingFile { .. }), "{e}");
        std::fs::create_dir_all(d.path().join("root")).unwrap();
        std::fs::write(
            d.path()
                .join("root/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"),
            "#!",
        )
        .unwrap();
        let s = validate(&c, &h, SystemTime::now()).unwrap();
        assert_eq!(s.artifact, Artifact::Package(PackageKind::Run));
        assert_eq!(
            s.describe(),
            "/root/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"
        );
        let bad = DriverConfig {
            path: Some("/root/../../etc/passwd.run".into()),
            ..Default::default()
        };
        assert!(validate(&bad, &h, SystemTime::now())
            .unwrap_err()
            .to_string()
            .contains("[driver] path"));
    }
}
