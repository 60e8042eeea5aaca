//! The driver download against a real HTTP server on 127.0.0.1: full download, cut and resume,
//! a server that ignores Range, 403, 404, wrong checksum, HTML, truncated zip, zip without
//! Host_Drivers/, expired link refused without a connection.

#[path = "common/makeself.rs"]
mod makeself;

#[path = "common/driver_http.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use support::{Behaviour, DriverKernel, TestServer};
use vgpuctl::driver::{
    self, DownloadError, DriverError, ExtractError, FetchOptions, Messages, NetOptions,
    ProgressMode,
};
use vgpuctl::host::Host;
use vgpuctl::profile::DriverConfig;

const VER: &str = "550.163.02";
const HMAC: &str = "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ff";

struct Env {
    _dir: tempfile::TempDir,
    host: Host,
    kernel: Arc<DriverKernel>,
    server: TestServer,
    zip: Vec<u8>,
    zip_name: String,
}

fn env() -> Env {
    env_with(DriverKernel::default())
}

fn env_with(kernel: DriverKernel) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let zip_name = vgpuctl_sim::driver_pkg::zip_name(VER);
    let zip_path = dir.path().join("src").join(&zip_name);
    makeself::driver_zip(&zip_path, VER);
    let zip = std::fs::read(&zip_path).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let kernel = Arc::new(kernel);
    let host = Host::new(&root, kernel.clone());
    let server = TestServer::start();
    server.add(&format!("/ems/sec/vGPU17.6/{zip_name}"), zip.clone());
    Env {
        _dir: dir,
        host,
        kernel,
        server,
        zip,
        zip_name,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Env {
    fn path(&self) -> String {
        format!("/ems/sec/vGPU17.6/{}", self.zip_name)
    }
    /// A portal-style link valid for the next hour.
    fn link(&self) -> String {
        let st = unix_now() - 60;
        self.link_with(st, st + 3600)
    }
    fn link_with(&self, st: u64, exp: u64) -> String {
        let p = self.path();
        self.server
            .url(&format!("{p}?autho=st={st}~exp={exp}~acl={p}~hmac={HMAC}"))
    }
    fn cfg(&self, url: String, sha: Option<String>) -> DriverConfig {
        DriverConfig {
            url: Some(url),
            sha256: sha,
            allow_http: true,
            ..Default::default()
        }
    }
    fn sha(&self) -> String {
        hex::encode(Sha256::digest(&self.zip))
    }
    fn fetch(&self, cfg: &DriverConfig, opts: &FetchOptions) -> anyhow::Result<driver::Fetched> {
        let src = driver::validate(cfg, &self.host, SystemTime::now())?;
        driver::fetch(&self.host, &src, opts)
    }
    fn exists(&self, rel: &str) -> bool {
        self.host.exists(rel)
    }
    fn dl(&self, suffix: &str) -> String {
        format!("var/lib/vgpuctl/downloads/{}{suffix}", self.zip_name)
    }
}

fn opts() -> (FetchOptions, Arc<std::sync::Mutex<Vec<u8>>>) {
    let (messages, buf) = Messages::buffer();
    (
        FetchOptions {
            progress: ProgressMode::Lines,
            messages,
            net: NetOptions {
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                max_attempts: 4,
                max_total_attempts: 10,
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                backoff_budget: Duration::from_secs(2),
            },
            ..Default::default()
        },
        buf,
    )
}

fn text(buf: &Arc<std::sync::Mutex<Vec<u8>>>) -> String {
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}

#[test]
fn full_download_verifies_extracts_and_checks_the_run() {
    let e = env();
    let (o, buf) = opts();
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f.version, VER);
    assert_eq!(f.kind, driver::PackageKind::Run);
    assert!(f.verified);
    assert_eq!(f.sha256, e.sha());
    assert_eq!(
        f.package.to_str().unwrap(),
        format!(
            "var/lib/vgpuctl/downloads/{}/Host_Drivers/NVIDIA-Linux-x86_64-{VER}-vgpu-kvm.run",
            e.zip_name.trim_end_matches(".zip")
        )
    );
    let pkg = e.host.path(f.package.to_str().unwrap());
    assert_eq!(
        std::fs::metadata(&pkg).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read(e.host.path(&e.dl(""))).unwrap(), e.zip);
    assert!(!e.exists(&e.dl(".part")) && !e.exists(&e.dl(".part.meta")));
    // Exactly one transfer of the file, and the .run's own --check ran.
    assert_eq!(e.server.served(), e.zip.len() as u64);
    assert_eq!(
        e.kernel.commands(),
        vec![format!("/{} --check", f.package.display())]
    );
    assert!(f.guest_dir.is_none());
    let out = text(&buf);
    assert!(out.contains("downloading NVIDIA-GRID-Linux-KVM"), "{out}");
    assert!(out.contains("driver 550.163.02: host package"), "{out}");

    // A second run reuses the verified file: no request at all.
    let before = e.server.requests();
    let f2 = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f2.package, f.package);
    assert_eq!(e.server.requests(), before);
}

#[test]
fn guest_drivers_are_extracted_on_request() {
    let e = env();
    let (mut o, _buf) = opts();
    o.guest = true;
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    let g = f.guest_dir.unwrap();
    let guest_run = e.host.path(&format!(
        "{}/NVIDIA-Linux-x86_64-550.163.01-grid.run",
        g.display()
    ));
    assert!(guest_run.is_file());
    assert_eq!(
        std::fs::metadata(guest_run).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn cut_mid_body_then_a_new_run_resumes_with_only_the_rest() {
    let e = env();
    let cut = e.zip.len() as u64 * 2 / 5;
    e.server.behave(
        &e.path(),
        Behaviour {
            cut_once_after: Some(cut),
            ..Default::default()
        },
    );
    let (mut o, _) = opts();
    o.net.max_attempts = 1; // the first run gives up at the cut, like a killed process
    let err = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap_err();
    let gave_up = err.downcast_ref::<DownloadError>();
    assert!(
        matches!(gave_up, Some(DownloadError::GaveUp { .. })),
        "{err:#}"
    );
    assert!(err.to_string().contains("run again to resume"), "{err:#}");
    assert_eq!(
        std::fs::metadata(e.host.path(&e.dl(".part")))
            .unwrap()
            .len(),
        cut
    );
    assert_eq!(e.server.served(), cut);

    let (o, buf) = opts();
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f.sha256, e.sha());
    // The second run asked for the rest only, and the server sent exactly the file once.
    assert_eq!(
        e.server.ranges().last().unwrap().as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(e.server.served(), e.zip.len() as u64);
    assert!(
        text(&buf).contains("asking the server for the rest"),
        "{}",
        text(&buf)
    );
}

#[test]
fn cut_mid_body_is_retried_and_resumed_within_one_run() {
    let e = env();
    let cut = e.zip.len() as u64 / 3;
    e.server.behave(
        &e.path(),
        Behaviour {
            cut_once_after: Some(cut),
            ..Default::default()
        },
    );
    let (o, buf) = opts();
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f.sha256, e.sha());
    assert_eq!(e.server.served(), e.zip.len() as u64);
    assert_eq!(e.server.ranges(), vec![None, Some(format!("bytes={cut}-"))]);
    assert!(text(&buf).contains("retrying"), "{}", text(&buf));
}

#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let e = env();
    let at = e.zip.len() as u64 / 4;
    e.server.behave(
        &e.path(),
        Behaviour {
            stall_once_after: Some(at),
            ..Default::default()
        },
    );
    let (mut o, buf) = opts();
    // The server stalls for 3 s; 1 s of silence is enough to give up on that response.
    o.net.idle_timeout = Duration::from_secs(1);
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f.sha256, e.sha());
    assert_eq!(e.server.ranges()[..2], [None, Some(format!("bytes={at}-"))]);
    assert_eq!(e.server.served(), e.zip.len() as u64);
    let out = text(&buf);
    assert!(
        out.contains("no data for too long") || out.contains("timed out"),
        "{out}"
    );
}

#[test]
fn a_server_ignoring_range_restarts_cleanly_from_zero() {
    let e = env();
    let cut = e.zip.len() as u64 / 2;
    e.server.behave(
        &e.path(),
        Behaviour {
            cut_once_after: Some(cut),
            ..Default::default()
        },
    );
    let (mut o, _) = opts();
    o.net.max_attempts = 1;
    e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap_err();
    e.server.behave(
        &e.path(),
        Behaviour {
            ignore_range: true,
            ..Default::default()
        },
    );
    let (o, buf) = opts();
    let f = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap();
    assert_eq!(f.sha256, e.sha());
    assert_eq!(std::fs::read(e.host.path(&e.dl(""))).unwrap(), e.zip);
    assert_eq!(e.server.served(), cut + e.zip.len() as u64);
    assert!(
        text(&buf).contains("ignored the resume request"),
        "{}",
        text(&buf)
    );
}

#[test]
fn forbidden_means_expired_or_invalid_link() {
    let e = env();
    e.server.behave(
        &e.path(),
        Behaviour {
            status: Some((403, "Access Denied".into())),
            ..Default::default()
        },
    );
    let (o, _) = opts();
    let err = e.fetch(&e.cfg(e.link(), Some(e.sha())), &o).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DownloadError>(),
            Some(DownloadError::Forbidden { .. })
        ),
        "{err:#}"
    );
    let msg = format!("{err:#}");
    assert!(
        msg.contains("403") && msg.contains("ui.licensing.nvidia.com"),
        "{msg}"
    );
    assert!(!msg.contains(HMAC), "{msg}");
    assert_eq!(e.server.requests(), 1, "a 403 is not retried");
    assert!(e.kernel.commands().is_empty());
}

#[test]
fn not_found_is_reported_without_retries() {
    let e = env();
    let (o, _) = opts();
    let url = e.server.url(
        "/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-1.zip?autho=exp=4000000000~hmac=ab12ab12ab12ab12",
    );
    let err = e.fetch(&e.cfg(url, Some(e.sha())), &o).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DownloadError>(),
            Some(DownloadError::NotFound { status: 404, .. })
        ),
        "{err:#}"
    );
    assert!(!format!("{err:#}").contains("ab12ab12ab12ab12"));
    assert_eq!(e.server.requests(), 1);
}

#[test]
fn wrong_checksum_keeps_the_file_aside_and_installs_nothing() {
    let e = env();
    let (o, _) = opts();
    let wrong = "0".repeat(64);
    let err = e
        .fetch(&e.cfg(e.link(), Some(wrong.clone())), &o)
        .unwrap_err();
    match err.downcast_ref::<DownloadError>() {
        Some(DownloadError::ChecksumMismatch {
            expected,
            actual,
            kept_as,
            ..
        }) => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &e.sha());
            assert_eq!(
                kept_as.as_deref(),
                Some(format!("/{}", e.dl(".bad")).as_str())
            );
        }
        other => panic!("{other:?} {err:#}"),
    }
    assert_eq!(std::fs::read(e.host.path(&e.dl(".bad"))).unwrap(), e.zip);
    assert!(!e.exists(&e.dl("")) && !e.exists(&e.dl(".part")));
    assert!(!e.exists(&format!(
        "var/lib/vgpuctl/downloads/{}",
        e.zip_name.trim_end_matches(".zip")
    )));
    assert!(
        e.kernel.commands().is_empty(),
        "nothing may run: {:?}",
        e.kernel.commands()
    );
}

#[test]
fn an_html_page_is_refused_by_content_type_and_by_its_first_bytes() {
    let page = "<!DOCTYPE html>\n<html><head><title>NVIDIA Licensing Portal - Sign In</title></head><body>Session expired</body></html>\n";
    for ctype in ["text/html; charset=utf-8", "application/zip"] {
        let e = env();
        e.server.add(&e.path(), page.as_bytes().to_vec());
        e.server.behave(
            &e.path(),
            Behaviour {
                content_type: Some(ctype.into()),
                ..Default::default()
            },
        );
        let (mut o, _) = opts();
        o.allow_unverified = true;
        let err = e.fetch(&e.cfg(e.link(), None), &o).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<DownloadError>(),
                Some(DownloadError::Html { .. })
            ),
            "{ctype}: {err:#}"
        );
        assert!(err.to_string().contains("HTML page"), "{err}");
        assert!(
            !e.exists(&e.dl("")) && !e.exists(&e.dl(".part")) && !e.exists(&e.dl(".part.meta"))
        );
    }
}

#[test]
fn a_truncated_zip_is_a_clear_error() {
    let e = env();
    let cut = e.zip[..e.zip.len() * 2 / 3].to_vec();
    e.server.add(&e.path(), cut.clone());
    let (o, _) = opts();
    let sha = hex::encode(Sha256::digest(&cut));
    let err = e.fetch(&e.cfg(e.link(), Some(sha)), &o).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ExtractError>(),
            Some(ExtractError::Damaged { .. })
        ),
        "{err:#}"
    );
    assert!(err.to_string().contains("truncated or damaged"), "{err}");
    assert!(e.kernel.commands().is_empty());
}

#[test]
fn a_zip_without_host_drivers_is_a_clear_error() {
    let e = env();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o2 = zip::write::SimpleFileOptions::default();
    w.start_file("Guest_Drivers/NVIDIA-Linux-x86_64-550.163.01-grid.run", o2)
        .unwrap();
    std::io::Write::write_all(&mut w, b"#!/bin/sh\n").unwrap();
    w.start_file("README.txt", o2).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    e.server.add(&e.path(), bytes.clone());
    let (o, _) = opts();
    let err = e
        .fetch(
            &e.cfg(e.link(), Some(hex::encode(Sha256::digest(&bytes)))),
            &o,
        )
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ExtractError>(),
            Some(ExtractError::NoHostDrivers { .. })
        ),
        "{err:#}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no Host_Drivers/") && msg.contains("Guest_Drivers/, README.txt"),
        "{msg}"
    );
}

#[test]
fn an_expired_link_is_refused_before_any_connection() {
    let e = env();
    let st = unix_now() - 7200;
    let url = e.link_with(st, st + 3600);
    let err = driver::validate(
        &e.cfg(url.clone(), Some(e.sha())),
        &e.host,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, DriverError::LinkExpired { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("expired at") && msg.contains(" UTC") && msg.contains("licensing portal"),
        "{msg}"
    );
    assert!(!msg.contains(HMAC));

    // Validated while still valid, fetched after it expired: fetch re-checks before connecting.
    let then = UNIX_EPOCH + Duration::from_secs(st + 10);
    let src = driver::validate(&e.cfg(url, Some(e.sha())), &e.host, then).unwrap();
    let (o, _) = opts();
    let err = driver::fetch(&e.host, &src, &o).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DriverError>(),
            Some(DriverError::LinkExpired { .. })
        ),
        "{err:#}"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(e.server.connections(), 0, "no connection may be made");
}

#[test]
fn a_url_without_sha256_needs_allow_unverified_and_prints_the_hash() {
    let e = env();
    let (o, _) = opts();
    let err = e.fetch(&e.cfg(e.link(), None), &o).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DriverError>(),
            Some(DriverError::Unverified { .. })
        ),
        "{err:#}"
    );
    assert_eq!(e.server.connections(), 0);
    let (mut o, buf) = opts();
    o.allow_unverified = true;
    let f = e.fetch(&e.cfg(e.link(), None), &o).unwrap();
    assert!(!f.verified);
    let out = text(&buf);
    assert!(
        out.contains("WARNING") && out.contains("WITHOUT a pinned sha256"),
        "{out}"
    );
    assert!(out.contains(&format!("sha256 = \"{}\"", e.sha())), "{out}");
}

#[test]
fn plain_http_needs_allow_http() {
    let e = env();
    let mut cfg = e.cfg(e.link(), Some(e.sha()));
    cfg.allow_http = false;
    let err = driver::validate(&cfg, &e.host, SystemTime::now()).unwrap_err();
    assert!(matches!(err, DriverError::HttpNotAllowed { .. }), "{err}");
}

#[test]
fn a_multi_chunk_body_cut_twice_resumes_to_the_exact_bytes() {
    let e = env();
    // 3 MiB + a bit: many chunks, cuts that fall mid-chunk.
    let mut body = b"#!/bin/sh\n".to_vec();
    let mut x = 0x9e3779b9u32;
    while body.len() < 3 * 1024 * 1024 + 12345 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.extend_from_slice(&x.to_le_bytes());
    }
    let path = "/mirror/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run";
    e.server.add(path, body.clone());
    e.server.behave(
        path,
        Behaviour {
            cut_once_after: Some(1_000_003),
            ..Default::default()
        },
    );
    let url = vgpuctl::driver::SecretUrl::new(e.server.url(path));
    let sha = hex::encode(Sha256::digest(&body));
    let (mut o, _) = opts();
    o.net.max_attempts = 1;
    let run = |o: &FetchOptions| {
        driver::download::download(
            &e.host,
            &url,
            None,
            "NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run",
            Some(&sha),
            driver::Artifact::Package(driver::PackageKind::Run),
            o,
        )
    };
    run(&o).unwrap_err();
    e.server.behave(
        path,
        Behaviour {
            cut_once_after: Some(1_500_001),
            ..Default::default()
        },
    );
    run(&o).unwrap_err();
    let (o, _) = opts();
    let d = run(&o).unwrap();
    assert_eq!(d.sha256, sha);
    assert_eq!(d.transferred, body.len() as u64 - 2_500_004);
    assert_eq!(e.server.served(), body.len() as u64);
    assert_eq!(
        e.server.ranges(),
        vec![
            None,
            Some("bytes=1000003-".into()),
            Some("bytes=2500004-".into())
        ]
    );
    let got = std::fs::read(
        e.host
            .path("var/lib/vgpuctl/downloads/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"),
    )
    .unwrap();
    assert!(got == body);
}
