//! Entry points for `scripts/bench-download` (ignored in normal test runs): the same download and
//! extraction code `vgpuctl driver fetch` uses, driven by environment variables, timing only the
//! work itself. Run by the script in release mode; never asserts a time.

use std::sync::Arc;
use std::time::Instant;

use vgpuctl::driver::{self, FetchOptions, Messages, ProgressMode};
use vgpuctl::host::{Host, RealKernel};

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn opts() -> FetchOptions {
    FetchOptions {
        // VGPUCTL_BENCH_PROGRESS=auto shows the bar on a terminal (for a look in tmux).
        progress: match var("VGPUCTL_BENCH_PROGRESS").as_deref() {
            Some("auto") => ProgressMode::Auto,
            _ => ProgressMode::Lines,
        },
        messages: Messages::stderr(),
        ..Default::default()
    }
}

/// VGPUCTL_BENCH_URL, VGPUCTL_BENCH_ROOT, VGPUCTL_BENCH_SHA: download, verify, print seconds.
#[test]
#[ignore = "run by scripts/bench-download"]
fn bench_download() {
    let (Some(url), Some(root)) = (var("VGPUCTL_BENCH_URL"), var("VGPUCTL_BENCH_ROOT")) else {
        return;
    };
    let host = Host::new(&root, Arc::new(RealKernel));
    let cfg = vgpuctl::profile::DriverConfig {
        url: Some(url),
        sha256: var("VGPUCTL_BENCH_SHA"),
        allow_http: true,
        ..Default::default()
    };
    let src = driver::validate(&cfg, &host, std::time::SystemTime::now()).unwrap();
    let driver::Origin::Url { url, token, .. } = &src.origin else {
        panic!("a url source")
    };
    let t = Instant::now();
    let d = driver::download::download(
        &host,
        url,
        token.as_ref(),
        &src.file_name,
        src.sha256.as_deref(),
        src.artifact,
        &opts(),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "BENCH download_seconds={secs:.3} bytes={} sha256={}",
        d.transferred, d.sha256
    );
}

/// VGPUCTL_BENCH_ROOT, VGPUCTL_BENCH_ZIP (root-relative): extract the host package, print seconds.
#[test]
#[ignore = "run by scripts/bench-download"]
fn bench_extract() {
    let (Some(root), Some(zip)) = (var("VGPUCTL_BENCH_ROOT"), var("VGPUCTL_BENCH_ZIP")) else {
        return;
    };
    let host = Host::new(&root, Arc::new(RealKernel));
    let t = Instant::now();
    let e = driver::extract::extract(&host, std::path::Path::new(&zip), &opts()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(host.path(e.package.to_str().unwrap()))
        .unwrap()
        .len();
    println!("BENCH extract_seconds={secs:.3} bytes={size}");
}

/// SHA-256 speed of this machine (context for the download figures).
#[test]
#[ignore = "run by scripts/bench-download"]
fn bench_sha256() {
    use sha2::Digest;
    let data = vec![0x5au8; 256 << 20];
    let t = Instant::now();
    let mut h = sha2::Sha256::new();
    for c in data.chunks(256 * 1024) {
        h.update(c);
    }
    let _ = h.finalize();
    let secs = t.elapsed().as_secs_f64();
    println!("BENCH sha256_mib_per_s={:.0}", 256.0 / secs);
}
