//! NVIDIA-style `.run` archives built by the real `makeself` (Debian package `makeself`,
//! installed by scripts/test-deps), so the driver tests meet the format NVIDIA ships rather
//! than only the simulator's own: the simulated payload, NVIDIA's label
//! ("NVIDIA Accelerated Graphics Driver for Linux-x86_64 <version>") and `./nvidia-installer`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use vgpuctl_sim::driver_pkg::{self, RunKind};

/// Build `dest` with `makeself --sha256` (so it carries a CRC, an MD5 and a SHA-256).
pub fn run(dest: &Path, version: &str, kind: RunKind) {
    let work = tempfile::tempdir().unwrap();
    let target = format!("NVIDIA-Linux-x86_64-{version}-{}", kind.suffix());
    let src = work.path().join(&target);
    for (rel, mode, data) in driver_pkg::payload_files(version, kind) {
        let p = src.join(&rel);
        if rel.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if let Some(d) = dest.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let o = Command::new("makeself")
        .args(["--sha256", "--nox11", "--quiet"])
        .arg(&src)
        .arg(dest)
        .arg(format!(
            "NVIDIA Accelerated Graphics Driver for Linux-x86_64 {version}"
        ))
        .arg("./nvidia-installer")
        .output()
        .expect("the real makeself must be installed: run scripts/test-deps");
    assert!(o.status.success(), "makeself failed: {o:?}");
}

/// The bytes of such an archive.
pub fn run_bytes(version: &str, kind: RunKind) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.run");
    run(&p, version, kind);
    std::fs::read(p).unwrap()
}

/// The licensed-zip layout with host and guest `.run` files built by makeself.
pub fn driver_zip(dest: &Path, host_ver: &str) {
    let host = run_bytes(host_ver, RunKind::HostVgpuKvm);
    let guest = run_bytes(&driver_pkg::guest_version(host_ver), RunKind::GuestGrid);
    driver_pkg::build_driver_zip_with(dest, host_ver, &host, &guest).unwrap();
}
