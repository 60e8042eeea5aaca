//! Driver tests that need a process of their own: the link's hmac must be absent from stdout,
//! stderr, logs, state and every file under the root (so the real streams are captured), and a
//! TLS server with a test CA must be trusted through SSL_CERT_FILE (read when the client is
//! built, so it is set in the child's environment, not with set_var in a threaded test).
//!
//! The parent runs the server; the child is this same test binary running `child_driver_run`
//! with `VGPUCTL_TEST_CHILD` set, which does what the CLI does and prints like it does.

#[path = "common/makeself.rs"]
mod makeself;

#[path = "common/driver_http.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use support::{Behaviour, DriverKernel, TestCa, TestServer};
use vgpuctl::driver::{self, FetchOptions, Messages, NetOptions, OsFamily, ProgressMode};
use vgpuctl::host::{Host, WriteOpts};
use vgpuctl::profile::DriverConfig;

const VER: &str = "550.163.02";
const HMAC: &str = "c0ffee00d15ea5e5c0ffee00d15ea5e5c0ffee00d15ea5e5c0ffee00d15ea5e5";

/// The child: validate, fetch, install, like `vgpuctl driver install --json` would.
#[test]
fn child_driver_run() {
    let Ok(root) = std::env::var("VGPUCTL_TEST_CHILD") else {
        return; // only meaningful when spawned by a parent test
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(std::io::stderr)
        .try_init();
    let url = std::env::var("VGPUCTL_TEST_URL").unwrap();
    let sha = std::env::var("VGPUCTL_TEST_SHA")
        .ok()
        .filter(|s| !s.is_empty());
    let attempts: u32 = std::env::var("VGPUCTL_TEST_ATTEMPTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let host = Host::new(&root, Arc::new(DriverKernel::default()));
    let cfg = DriverConfig {
        url: Some(url),
        sha256: sha,
        allow_http: true,
        ..Default::default()
    };
    let opts = FetchOptions {
        progress: ProgressMode::Lines,
        messages: Messages::stderr(),
        allow_unverified: true,
        guest: true,
        os: OsFamily::Other,
        net: NetOptions {
            max_attempts: attempts,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(20),
            ..Default::default()
        },
    };
    let result = (|| -> anyhow::Result<()> {
        let src = driver::validate(&cfg, &host, SystemTime::now())?;
        println!("plan: fetch the driver from {}", src.describe());
        println!("debug: {src:?}");
        let fetched = driver::fetch(&host, &src, &opts)?;
        println!("{}", fetched.package_abs());
        let installed = driver::install(&host, &fetched, OsFamily::Other, false, &cfg)?;
        let state = serde_json::json!({ "driver": { "fetched": fetched, "installed": installed, "source": src.describe() } });
        println!("{}", serde_json::to_string_pretty(&state)?);
        host.write_file(
            "var/lib/vgpuctl/state.json",
            serde_json::to_string_pretty(&state)?.as_bytes(),
            WriteOpts::state(),
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => println!("RESULT: ok"),
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("debug: {e:?}");
            let kind = if let Some(d) = e.downcast_ref::<driver::DownloadError>() {
                match d {
                    driver::DownloadError::Tls { .. } => "tls",
                    driver::DownloadError::Forbidden { .. } => "forbidden",
                    driver::DownloadError::ChecksumMismatch { .. } => "checksum",
                    driver::DownloadError::GaveUp { .. } => "gaveup",
                    _ => "download",
                }
            } else {
                "other"
            };
            println!("RESULT: err {kind}");
        }
    }
}

struct ChildOut {
    stdout: String,
    stderr: String,
}

fn run_child(
    root: &Path,
    url: &str,
    sha: Option<&str>,
    extra: &[(&str, &str)],
    no_ca_env: bool,
) -> ChildOut {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_driver_run",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("VGPUCTL_TEST_CHILD", root)
    .env("VGPUCTL_TEST_URL", url)
    .env("VGPUCTL_TEST_SHA", sha.unwrap_or(""))
    .env("RUST_BACKTRACE", "0");
    if no_ca_env {
        c.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    // Shown with --nocapture, for reading what an operator would see.
    eprintln!(
        "----- child stdout -----\n{}----- child stderr -----\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ChildOut {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn zip_bytes(dir: &Path) -> (String, Vec<u8>) {
    let name = vgpuctl_sim::driver_pkg::zip_name(VER);
    let p = dir.join("src").join(&name);
    makeself::driver_zip(&p, VER);
    (name, std::fs::read(p).unwrap())
}

fn portal_query(path: &str) -> String {
    let st = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 30;
    format!("?autho=st={st}~exp={}~acl={path}~hmac={HMAC}", st + 3600)
}

#[test]
fn the_links_hmac_is_absent_from_output_logs_state_and_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let (name, zip) = zip_bytes(dir.path());
    let sha = hex::encode(Sha256::digest(&zip));
    let server = TestServer::start();
    let mut outputs = Vec::new();

    // 1. Cut mid-body with no retry: a partial file and its sidecar stay behind.
    let p1 = format!("/ems/sec/vGPU17.6/{name}");
    server.add(&p1, zip.clone());
    server.behave(
        &p1,
        Behaviour {
            cut_once_after: Some(zip.len() as u64 / 2),
            ..Default::default()
        },
    );
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let url = server.url(&format!("{p1}{}", portal_query(&p1)));
    let o = run_child(
        &root,
        &url,
        Some(&sha),
        &[("VGPUCTL_TEST_ATTEMPTS", "1")],
        false,
    );
    assert!(
        o.stdout.contains("RESULT: err gaveup"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(root
        .join(format!("var/lib/vgpuctl/downloads/{name}.part.meta"))
        .is_file());
    outputs.push(o);

    // 2. Resume, verify, extract, install, record state.
    let o = run_child(&root, &url, Some(&sha), &[], false);
    assert!(
        o.stdout.contains("RESULT: ok"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(o
        .stdout
        .contains("Host_Drivers/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"));
    assert!(
        o.stderr.contains("downloading"),
        "progress lines expected: {}",
        o.stderr
    );
    assert!(root.join("var/log/vgpuctl/driver-install.log").is_file());
    assert!(root.join("var/lib/vgpuctl/state.json").is_file());
    outputs.push(o);

    // 3. A 403 on another file, and 4. a wrong checksum (kept as .bad), unverified run too.
    let p3 = "/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.144.02-550.144.03-553.24.zip";
    server.add(p3, zip.clone());
    server.behave(
        p3,
        Behaviour {
            status: Some((403, format!("denied {HMAC}"))),
            ..Default::default()
        },
    );
    let o = run_child(
        &root,
        &server.url(&format!("{p3}{}", portal_query(p3))),
        Some(&sha),
        &[],
        false,
    );
    assert!(
        o.stdout.contains("RESULT: err forbidden"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    outputs.push(o);
    let p4 = "/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.127.06-550.127.05-553.09.zip";
    server.add(p4, zip.clone());
    let o = run_child(
        &root,
        &server.url(&format!("{p4}{}", portal_query(p4))),
        Some(&"1".repeat(64)),
        &[],
        false,
    );
    assert!(
        o.stdout.contains("RESULT: err checksum"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(root
        .join(
            "var/lib/vgpuctl/downloads/NVIDIA-GRID-Linux-KVM-550.127.06-550.127.05-553.09.zip.bad"
        )
        .is_file());
    outputs.push(o);
    let o = run_child(
        &root,
        &server.url(&format!("{p4}{}", portal_query(p4))),
        None,
        &[],
        false,
    );
    assert!(
        o.stdout.contains("RESULT: ok"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    outputs.push(o);

    // The server did see the token (the test is real) ...
    assert!(server.requests() >= 5);
    // ... and nothing vgpuctl printed or wrote contains it.
    for (i, o) in outputs.iter().enumerate() {
        assert!(
            !o.stdout.contains(HMAC),
            "run {i} stdout leaks the hmac:\n{}",
            o.stdout
        );
        assert!(
            !o.stderr.contains(HMAC),
            "run {i} stderr leaks the hmac:\n{}",
            o.stderr
        );
        assert!(
            !o.stderr.contains("autho="),
            "run {i} stderr leaks the query:\n{}",
            o.stderr
        );
        assert!(
            o.stdout.contains("?<redacted>") || o.stderr.contains("?<redacted>"),
            "run {i}"
        );
    }
    let leaks = support::files_containing(&root, HMAC.as_bytes());
    assert!(
        leaks.is_empty(),
        "files under the root contain the hmac: {leaks:?}"
    );
    let leaks = support::files_containing(&root, b"autho=");
    assert!(
        leaks.is_empty(),
        "files under the root contain the query: {leaks:?}"
    );
}

#[test]
fn tls_with_a_test_ca_is_trusted_through_ssl_cert_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let (name, zip) = zip_bytes(dir.path());
    let sha = hex::encode(Sha256::digest(&zip));
    let ca = TestCa::new();
    let ca_file = dir.path().join("corporate-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let server = TestServer::start_tls(&ca);
    let p = format!("/ems/sec/vGPU17.6/{name}");
    server.add(&p, zip.clone());
    let url = server.url(&format!("{p}{}", portal_query(&p)));
    assert!(url.starts_with("https://127.0.0.1:"));

    // Without the CA the certificate is not trusted: a TLS error, nothing downloaded.
    let root = dir.path().join("root-untrusted");
    std::fs::create_dir_all(&root).unwrap();
    let o = run_child(&root, &url, Some(&sha), &[], true);
    assert!(
        o.stdout.contains("RESULT: err tls"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(o.stderr.contains("SSL_CERT_FILE"), "{}", o.stderr);
    assert!(!o.stderr.contains(HMAC) && !o.stdout.contains(HMAC));
    assert!(!root
        .join(format!("var/lib/vgpuctl/downloads/{name}"))
        .exists());

    // With SSL_CERT_FILE naming the CA, the same link downloads and verifies.
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let o = run_child(
        &root,
        &url,
        Some(&sha),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
        true,
    );
    assert!(
        o.stdout.contains("RESULT: ok"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(
        std::fs::read(root.join(format!("var/lib/vgpuctl/downloads/{name}"))).unwrap(),
        zip
    );
    assert!(!o.stderr.contains(HMAC) && !o.stdout.contains(HMAC));
}
