//! The download: reqwest (rustls, system CA store so `SSL_CERT_FILE` and corporate CAs work,
//! proxies from the environment), streamed to `<name>.part` through SHA-256 (no second read),
//! resumed with `Range`, retried with bounded exponential backoff, verified, then renamed.
//!
//! Resume and the hash: a SHA-256 state cannot be saved, so a resume in a *new run* hashes the
//! bytes already in `<name>.part` once (one read of the partial, never of the whole file) before
//! it asks for the rest. Retries within one run keep the hasher in memory and read nothing back.
//! The sidecar `<name>.part.meta` remembers the source (redacted url), the validator (ETag /
//! Last-Modified, sent as `If-Range`) and the total size, so a changed file restarts from zero.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::link::{self, PortalToken, SecretUrl};
use super::progress::Transfer;
use super::source::Artifact;
use super::{DriverError, FetchOptions, PackageKind, DOWNLOAD_DIR};
use crate::host::Host;

/// Network behaviour. No overall timeout: a slow transfer that keeps moving is never cut.
#[derive(Clone, Debug)]
pub struct NetOptions {
    pub connect_timeout: Duration,
    /// Longest wait for the response headers or for any read of the body.
    pub idle_timeout: Duration,
    /// Consecutive failed attempts (without progress) before giving up.
    pub max_attempts: u32,
    /// All attempts in one run, progress or not.
    pub max_total_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Total time slept between attempts in one run.
    pub backoff_budget: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_attempts: 6,
            max_total_attempts: 30,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            backoff_budget: Duration::from_secs(300),
        }
    }
}

/// Runtime download failures (exit 1). Messages carry only the redacted url.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "{url}: the server answered 403 Forbidden: the link has expired or is not valid (portal \
         links last about an hour and work only as issued): get a fresh one from {portal}",
        portal = link::PORTAL
    )]
    Forbidden { url: String },
    #[error("{url}: the server answered {status}: no such file there; check the link")]
    NotFound { url: String, status: u16 },
    #[error("{url}: the server answered HTTP {status}{detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url}: the server sent an HTML page ({why}) instead of the driver {expected}: usually a \
         login page, an error page or an expired link; nothing was kept"
    )]
    Html {
        url: String,
        why: String,
        expected: &'static str,
    },
    #[error("{url}: the body is not a {expected} (it starts with {start}); nothing was kept")]
    WrongContent {
        url: String,
        expected: &'static str,
        start: String,
    },
    #[error(
        "{url}: TLS failed ({detail}): the server's certificate is not trusted here; for a \
         corporate or mirror CA, add it to the system CA store or point SSL_CERT_FILE at it \
         (verification is never turned off)"
    )]
    Tls { url: String, detail: String },
    #[error("{url}: cannot resolve the host name ({detail}): check DNS or the proxy settings")]
    Dns { url: String, detail: String },
    #[error(
        "SHA-256 mismatch for {file}: expected {expected}, got {actual}{}; nothing was \
         installed. Check the link and the pinned sha256",
        kept_as.as_ref().map(|k| format!("; the file is kept aside as {k}")).unwrap_or_default()
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
        kept_as: Option<String>,
    },
    #[error(
        "{url}: download failed after {attempts} attempts: {last}; {have} are kept in {part}: \
         run again to resume"
    )]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
        have: String,
        part: String,
    },
}

/// The finished download.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub rel: PathBuf,
    pub sha256: String,
    /// Bytes received over the network in this run.
    pub transferred: u64,
    /// The verified file was already there: no connection was made.
    pub reused: bool,
}

/// What the `.part.meta` sidecar holds. No credential: the url is redacted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PartMeta {
    source: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

/// One attempt's outcome other than success.
enum Failure {
    /// Worth another try (network hiccup, 5xx, cut body).
    Transient(String),
    /// Start again from byte zero right away (server ignored or mangled the Range).
    Restart(String),
    Fatal(anyhow::Error),
}

/// Download `url` into `DOWNLOAD_DIR/<file_name>`, verifying it against `expected`.
#[allow(clippy::too_many_arguments)]
pub fn download(
    host: &Host,
    url: &SecretUrl,
    token: Option<&PortalToken>,
    file_name: &str,
    expected: Option<&str>,
    artifact: Artifact,
    opts: &FetchOptions,
) -> Result<Downloaded> {
    let shown = url.redacted();
    let final_rel = format!("{DOWNLOAD_DIR}/{file_name}");
    let part_rel = format!("{final_rel}.part");
    let meta_rel = format!("{final_rel}.part.meta");
    let bad_rel = format!("{final_rel}.bad");
    host.create_dir_all(DOWNLOAD_DIR)?;
    let final_path = host.checked_path(&final_rel)?;
    let part_path = host.checked_path(&part_rel)?;

    // A verified file from an earlier run: no link needed.
    if let Some(want) = expected {
        if final_path.is_file() {
            let have = super::hash_file(host, &final_rel)?;
            if have == want {
                opts.messages.line(&format!(
                    "/{final_rel}: already downloaded, SHA-256 matches"
                ));
                return Ok(Downloaded {
                    rel: final_rel.into(),
                    sha256: have,
                    transferred: 0,
                    reused: true,
                });
            }
            opts.messages.warn(&format!(
                "/{final_rel} does not match the pinned sha256: moving it aside to /{bad_rel} \
                 and downloading again"
            ));
            std::fs::rename(&final_path, host.checked_path(&bad_rel)?)?;
        }
    }

    // Refuse an expired link before any connection.
    if let Some(t) = token {
        if t.is_expired(SystemTime::now()) {
            return Err(DriverError::LinkExpired {
                url: shown,
                expired_at: link::utc_string(t.expires_at()),
            }
            .into());
        }
    }

    let client = build_client(&opts.net, url)?;
    let mut state = PartState::open(host, &part_rel, &meta_rel, &shown)?;
    let part_shown = format!("/{part_rel}");
    let mut progress = Transfer::new(
        opts.progress,
        &opts.messages,
        &format!("downloading {file_name}"),
        state.meta.total,
    );
    if state.written > 0 {
        progress.note(&format!(
            "resuming {file_name} at {} (hashing the partial file once)",
            indicatif::HumanBytes(state.written)
        ));
    }
    progress.reset(state.written, state.meta.total);

    let mut failures = 0u32;
    let mut attempts = 0u32;
    let mut slept = Duration::ZERO;
    let mut transferred = 0u64;
    let mut last_error;
    loop {
        attempts += 1;
        let before = state.written;
        let outcome = attempt(&client, url, artifact, &mut state, &mut progress);
        transferred += state.written.saturating_sub(before);
        match outcome {
            Ok(()) => break,
            Err(Failure::Fatal(e)) => {
                progress.abandon();
                if state.written == 0 {
                    // Nothing worth resuming (an HTML page, a refusal): leave no litter.
                    let _ = host.remove_file(&part_rel);
                    let _ = host.remove_file(&meta_rel);
                }
                return Err(e);
            }
            Err(Failure::Restart(why)) => {
                progress.note(&format!("{file_name}: {why}; starting over from byte 0"));
                state.restart()?;
                progress.reset(0, None);
                last_error = why;
                if attempts >= opts.net.max_total_attempts {
                    progress.abandon();
                    return Err(state
                        .gave_up(&shown, &part_shown, attempts, last_error)
                        .into());
                }
                continue;
            }
            Err(Failure::Transient(why)) => {
                last_error = why;
            }
        }
        // Progress resets the count of consecutive failures.
        failures = if state.written > before {
            1
        } else {
            failures + 1
        };
        let delay = backoff(&opts.net, failures);
        if failures >= opts.net.max_attempts
            || attempts >= opts.net.max_total_attempts
            || slept + delay > opts.net.backoff_budget
        {
            progress.abandon();
            return Err(state
                .gave_up(&shown, &part_shown, attempts, last_error)
                .into());
        }
        progress.note(&format!(
            "{file_name}: {last_error}; retrying in {:.1} s (attempt {} of at most {})",
            delay.as_secs_f64(),
            attempts + 1,
            opts.net.max_attempts.min(opts.net.max_total_attempts)
        ));
        std::thread::sleep(delay);
        slept += delay;
    }

    let sha256 = state.finish()?;
    progress.finish("downloaded");
    if let Some(want) = expected {
        if want != sha256 {
            std::fs::rename(&part_path, host.checked_path(&bad_rel)?)?;
            let _ = host.remove_file(&meta_rel);
            return Err(DownloadError::ChecksumMismatch {
                file: shown,
                expected: want.to_string(),
                actual: sha256,
                kept_as: Some(format!("/{bad_rel}")),
            }
            .into());
        }
    }
    std::fs::rename(&part_path, &final_path)
        .with_context(|| format!("cannot rename {}", part_path.display()))?;
    let _ = host.remove_file(&meta_rel);
    sync_dir(&final_path);
    Ok(Downloaded {
        rel: final_rel.into(),
        sha256,
        transferred,
        reused: false,
    })
}

fn backoff(net: &NetOptions, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    net.backoff_initial
        .saturating_mul(factor)
        .min(net.backoff_max)
}

fn build_client(net: &NetOptions, url: &SecretUrl) -> Result<reqwest::blocking::Client> {
    let allow_http = url.expose().starts_with("http://");
    // A redirect may not downgrade https to http (and never loops for long).
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if attempt.url().scheme() != "https" && !allow_http {
            attempt.error("redirect from https to plain http refused")
        } else {
            attempt.follow()
        }
    });
    reqwest::blocking::Client::builder()
        .user_agent(concat!("vgpuctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(net.connect_timeout)
        // The blocking client applies this to the wait for the response and to each read of
        // the body separately: an idle timeout, not a cap on the whole transfer.
        .timeout(net.idle_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(policy)
        .build()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot set up the HTTP client: {}",
                url.scrub(&e.without_url().to_string())
            )
        })
}

/// The partial file and the hasher that covers exactly its bytes.
struct PartState {
    path: PathBuf,
    meta_path: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    written: u64,
    meta: PartMeta,
    /// Size from the first response's headers, to detect a short body.
    source: String,
}

const WRITE_BUF: usize = 1 << 20;

impl PartState {
    fn open(host: &Host, part_rel: &str, meta_rel: &str, source: &str) -> Result<PartState> {
        let path = host.checked_path(part_rel)?;
        let meta_path = host.checked_path(meta_rel)?;
        let meta: Option<PartMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut written = 0;
        let mut kept_meta = PartMeta {
            source: source.to_string(),
            ..Default::default()
        };
        match meta {
            Some(m) if m.source == source => {
                // One read of the partial bytes: a hash state cannot be saved across runs.
                written = std::io::copy(
                    &mut (&mut file).take(m.total.unwrap_or(u64::MAX)),
                    &mut HashSink(&mut hasher),
                )
                .with_context(|| format!("cannot read {}", path.display()))?;
                kept_meta = m;
            }
            _ => file.set_len(0)?,
        }
        file.set_len(written)?;
        file.seek(SeekFrom::Start(written))?;
        Ok(PartState {
            path,
            meta_path,
            file: BufWriter::with_capacity(WRITE_BUF, file),
            hasher,
            written,
            meta: kept_meta,
            source: source.to_string(),
        })
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn save_meta(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.meta)?;
        crate::host::files::write_atomic(&self.meta_path, &json, 0o600)
    }

    fn restart(&mut self) -> Result<()> {
        self.flush()?;
        let f = self.file.get_mut();
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.meta = PartMeta {
            source: self.source.clone(),
            ..Default::default()
        };
        Ok(())
    }

    fn finish(&mut self) -> Result<String> {
        // No fsync of the data: a file torn by a power cut is caught when it is reused (its
        // SHA-256 is checked again) and by the `.run`'s own --check; fsyncing 400+ MB would
        // cost seconds on every download for nothing.
        self.flush()?;
        Ok(hex::encode(std::mem::take(&mut self.hasher).finalize()))
    }

    fn gave_up(&mut self, url: &str, part: &str, attempts: u32, last: String) -> DownloadError {
        let _ = self.flush();
        DownloadError::GaveUp {
            url: url.to_string(),
            attempts,
            last,
            have: indicatif::HumanBytes(self.written).to_string(),
            part: part.to_string(),
        }
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sync_dir(path: &std::path::Path) {
    if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Content-Range: bytes <start>-<end>/<total|*>` -> (start, total).
fn content_range(h: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = header_str(h, header::CONTENT_RANGE)?;
    let spec = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = spec.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total))
}

/// `Content-Range: bytes */<total>` (with a 416) -> total.
fn content_range_total(h: &HeaderMap) -> Option<u64> {
    let v = header_str(h, header::CONTENT_RANGE)?;
    v.rsplit_once('/')?.1.trim().parse().ok()
}

fn expected_name(artifact: Artifact) -> &'static str {
    match artifact {
        Artifact::Zip => "zip",
        Artifact::Package(PackageKind::Run) => ".run (shell archive)",
        Artifact::Package(PackageKind::Deb) => ".deb",
        Artifact::Package(PackageKind::Rpm) => ".rpm",
    }
}

/// Is this the start of an HTML page?
pub fn looks_like_html(start: &[u8]) -> bool {
    let s = start.strip_prefix(b"\xef\xbb\xbf").unwrap_or(start);
    let i = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let s = &s[i..];
    let lower: Vec<u8> = s.iter().take(16).map(u8::to_ascii_lowercase).collect();
    [
        &b"<!doctype"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<?xml",
        b"<!--",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// Does the file start with the magic of what we expect?
pub fn has_magic(artifact: Artifact, start: &[u8]) -> bool {
    match artifact {
        Artifact::Zip => start.starts_with(b"PK\x03\x04"),
        Artifact::Package(PackageKind::Run) => start.starts_with(b"#!"),
        Artifact::Package(PackageKind::Deb) => start.starts_with(b"!<arch>\n"),
        Artifact::Package(PackageKind::Rpm) => start.starts_with(&[0xed, 0xab, 0xee, 0xdb]),
    }
}

fn describe_start(start: &[u8]) -> String {
    let head = &start[..start.len().min(8)];
    let printable: String = head
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    format!("{} {:?}", hex::encode(head), printable)
}

fn classify(e: reqwest::Error, url: &SecretUrl) -> Failure {
    let shown = url.redacted();
    // reqwest's messages embed the full URL; drop it, then scrub the chain for good measure.
    let is_timeout = e.is_timeout();
    let is_connect = e.is_connect();
    let e = e.without_url();
    let chain = url.scrub(&error_chain(&e));
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        return Failure::Fatal(
            DownloadError::Tls {
                url: shown,
                detail: chain,
            }
            .into(),
        );
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return Failure::Fatal(
            DownloadError::Dns {
                url: shown,
                detail: chain,
            }
            .into(),
        );
    }
    if lower.contains("redirect") && !is_connect {
        return Failure::Fatal(anyhow::anyhow!("{shown}: {chain}"));
    }
    let kind = if is_timeout {
        "timed out"
    } else if is_connect {
        "cannot connect"
    } else {
        "network error"
    };
    Failure::Transient(format!("{kind} ({chain})"))
}

/// One request: headers, checks, body streamed into the partial file.
fn attempt(
    client: &reqwest::blocking::Client,
    url: &SecretUrl,
    artifact: Artifact,
    state: &mut PartState,
    progress: &mut Transfer,
) -> Result<(), Failure> {
    let shown = url.redacted();
    let offset = state.written;
    let mut req = client.get(url.expose());
    if offset > 0 {
        req = req.header(header::RANGE, format!("bytes={offset}-"));
        // Only resume the same file: If-Range makes a changed file come back whole (200).
        if let Some(v) = state.meta.etag.as_ref().filter(|e| !e.starts_with("W/")) {
            req = req.header(header::IF_RANGE, v);
        } else if let Some(v) = &state.meta.last_modified {
            req = req.header(header::IF_RANGE, v);
        }
    }
    let resp = req.send().map_err(|e| classify(e, url))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_len = resp.content_length();
    let mut total = match status {
        StatusCode::OK => {
            if offset > 0 {
                // The 200 body is the whole file: start over with it, no second request.
                state.restart().map_err(Failure::Fatal)?;
                progress.note(&format!(
                    "{shown}: the server ignored the resume request (200 instead of 206); \
                     starting over from byte 0"
                ));
            }
            content_len
        }
        StatusCode::PARTIAL_CONTENT => match content_range(&headers) {
            Some((start, total)) if start == offset => total.or(content_len.map(|n| n + offset)),
            Some((start, _)) => {
                return Err(Failure::Restart(format!(
                    "the server resumed at byte {start} instead of {offset}"
                )))
            }
            None => {
                return Err(Failure::Restart(
                    "the server sent 206 without a Content-Range".into(),
                ))
            }
        },
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            return match content_range_total(&headers) {
                Some(t) if t == offset => Ok(()),
                _ => Err(Failure::Restart(
                    "the partial file is longer than the server's file".into(),
                )),
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(Failure::Fatal(
                DownloadError::Forbidden { url: shown }.into(),
            ))
        }
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            return Err(Failure::Fatal(
                DownloadError::NotFound {
                    url: shown,
                    status: status.as_u16(),
                }
                .into(),
            ))
        }
        s if s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS
            || s.is_server_error() =>
        {
            return Err(Failure::Transient(format!("the server answered {s}")))
        }
        s => {
            return Err(Failure::Fatal(
                DownloadError::Http {
                    url: shown,
                    status: s.as_u16(),
                    detail: s
                        .canonical_reason()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default(),
                }
                .into(),
            ))
        }
    };
    if let Some(ct) = header_str(&headers, header::CONTENT_TYPE) {
        if ct.to_ascii_lowercase().starts_with("text/html") {
            state.restart().map_err(Failure::Fatal)?;
            let _ = std::fs::remove_file(&state.meta_path);
            return Err(Failure::Fatal(
                DownloadError::Html {
                    url: shown,
                    why: format!("Content-Type {ct}"),
                    expected: expected_name(artifact),
                }
                .into(),
            ));
        }
    }
    if state.written == 0 {
        state.meta.etag = header_str(&headers, header::ETAG);
        state.meta.last_modified = header_str(&headers, header::LAST_MODIFIED);
        state.meta.total = total;
        state.save_meta().map_err(Failure::Fatal)?;
    } else if total.is_none() {
        total = state.meta.total;
    }
    progress.reset(state.written, total);

    let mut body = resp;
    let mut buf = vec![0u8; 256 * 1024];
    // The first bytes of the file decide HTML / wrong content before anything is kept.
    if state.written == 0 {
        let mut head = Vec::with_capacity(64);
        while head.len() < 64 {
            let n = match body.read(&mut buf[..64 - head.len()]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(read_failure(e, url)),
            };
            head.extend_from_slice(&buf[..n]);
        }
        if looks_like_html(&head) || !has_magic(artifact, &head) {
            state.restart().map_err(Failure::Fatal)?;
            let _ = std::fs::remove_file(&state.meta_path);
            let err = if looks_like_html(&head) {
                DownloadError::Html {
                    url: shown,
                    why: "the body starts like a web page".into(),
                    expected: expected_name(artifact),
                }
            } else {
                DownloadError::WrongContent {
                    url: shown,
                    expected: expected_name(artifact),
                    start: describe_start(&head),
                }
            };
            return Err(Failure::Fatal(err.into()));
        }
        state.write(&head).map_err(|e| Failure::Fatal(e.into()))?;
        progress.inc(head.len() as u64);
    }
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                state.flush().map_err(Failure::Fatal)?;
                return Err(read_failure(e, url));
            }
        };
        state.write(&buf[..n]).map_err(|e| {
            Failure::Fatal(anyhow::Error::new(e).context("cannot write the download"))
        })?;
        progress.inc(n as u64);
    }
    state.flush().map_err(Failure::Fatal)?;
    match total {
        Some(t) if state.written < t => Err(Failure::Transient(format!(
            "the connection closed after {} of {} bytes",
            state.written, t
        ))),
        Some(t) if state.written > t => Err(Failure::Restart(format!(
            "the server sent {} bytes, more than the {t} it announced",
            state.written
        ))),
        _ => Ok(()),
    }
}

/// An error and its sources on one line, without repeats (libraries often include the source
/// in their own message).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let t = err
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !t.is_empty() && !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn read_failure(e: std::io::Error, url: &SecretUrl) -> Failure {
    // reqwest wraps its error in the io::Error; its timeout flag and sources say what happened.
    let timed_out = e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout);
    let text = url.scrub(&error_chain(&e));
    if timed_out {
        Failure::Transient(format!("no data for too long ({text})"))
    } else {
        Failure::Transient(format!("the transfer broke off ({text})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_magic_sniffing() {
        assert!(looks_like_html(b"\n  <!DOCTYPE html><html>"));
        assert!(looks_like_html(b"\xef\xbb\xbf<HTML lang=en>"));
        assert!(!looks_like_html(b"PK\x03\x04\x14\x00"));
        assert!(has_magic(Artifact::Zip, b"PK\x03\x04\x14\x00"));
        assert!(!has_magic(Artifact::Zip, b"<!DOCTYPE"));
        assert!(has_magic(
            Artifact::Package(PackageKind::Run),
            b"#!/bin/sh\n"
        ));
        assert!(has_magic(
            Artifact::Package(PackageKind::Deb),
            b"!<arch>\ndebian-binary"
        ));
        assert!(has_magic(
            Artifact::Package(PackageKind::Rpm),
            &[0xed, 0xab, 0xee, 0xdb, 3, 0]
        ));
    }

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-999/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(header::CONTENT_RANGE, "bytes 0-9/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((0, None)));
        h.insert(header::CONTENT_RANGE, "bytes */1000".parse().unwrap());
        assert_eq!(content_range(&h), None);
        assert_eq!(content_range_total(&h), Some(1000));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let n = NetOptions {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            ..Default::default()
        };
        let d: Vec<u64> = (1..=5).map(|f| backoff(&n, f).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 5, 5]);
    }
}
