//! The driver step on simulated hosts (the simulator's kernel plays `--check`, the install and
//! Secure Boot): the zip an operator copied to /root, and the same zip over HTTP.

#[path = "../installer/simulator.rs"]
mod simulator;
#[path = "common/driver_http.rs"]
mod support;

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use vgpuctl::driver::{
    self, DriverError, FetchOptions, Messages, OsFamily, PackageKind, ProgressMode,
};
use vgpuctl::profile::DriverConfig;
use vgpuctl_sim::driver_pkg;

fn quiet(os: OsFamily) -> FetchOptions {
    FetchOptions {
        progress: ProgressMode::Quiet,
        messages: Messages::buffer().0,
        os,
        ..Default::default()
    }
}

fn zip_rel() -> String {
    format!("root/{}", driver_pkg::zip_name(vgpuctl_sim::DRIVER_VERSION))
}

#[test]
fn the_copied_zip_is_fetched_checked_and_installed_on_the_a40_host() {
    let dir = tempfile::tempdir().unwrap();
    let host = simulator::open(&dir.path().join("a40"), "a40x8", &[]).unwrap();
    assert!(
        host.exists(&zip_rel()),
        "the sim puts the seed's zip in /root"
    );
    let cfg = DriverConfig {
        path: Some(format!("/{}", zip_rel())),
        sha256: Some(driver::hash_file(&host, &zip_rel()).unwrap()),
        ..Default::default()
    };
    let src = driver::validate(&cfg, &host, SystemTime::now()).unwrap();
    let f = driver::fetch(&host, &src, &quiet(OsFamily::Debian)).unwrap();
    assert_eq!(
        (f.kind, f.version.as_str()),
        (PackageKind::Run, "550.163.02")
    );
    assert!(f.verified);
    assert!(!host.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
    let i = driver::install(&host, &f, OsFamily::Debian, false, &cfg).unwrap();
    // Merged /usr: /lib is /usr/lib on Ubuntu 22.04, either name proves it.
    assert!(
        i.unit
            .ends_with("lib/systemd/system/nvidia-vgpu-mgr.service"),
        "{}",
        i.unit
    );
    let log = host.read("var/log/vgpuctl/driver-install.log").unwrap();
    assert!(
        log.contains("--check") && log.contains("--dkms -s"),
        "{log}"
    );
    assert!(log.contains("is now complete"), "{log}");
}

#[test]
fn secure_boot_on_the_sim_needs_keys_and_signs_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = simulator::open(
        &dir.path().join("sb"),
        "a40x8",
        &["secure_boot=1".to_string()],
    )
    .unwrap();
    let mut cfg = DriverConfig {
        path: Some(format!("/{}", zip_rel())),
        ..Default::default()
    };
    let src = driver::validate(&cfg, &host, SystemTime::now()).unwrap();
    let f = driver::fetch(&host, &src, &quiet(OsFamily::Debian)).unwrap();
    let err = driver::install(&host, &f, OsFamily::Debian, true, &cfg).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<DriverError>(),
        Some(DriverError::SecureBootNoKeys)
    ));
    // Had we run it unsigned, the sim's installer would fail like the real one; with keys it
    // signs and installs.
    host.write_file(
        "root/mok/MOK.priv",
        b"k",
        vgpuctl::host::WriteOpts::secret(),
    )
    .unwrap();
    host.write_file("root/mok/MOK.der", b"c", vgpuctl::host::WriteOpts::state())
        .unwrap();
    cfg.signing_key = Some("/root/mok/MOK.priv".into());
    cfg.signing_cert = Some("/root/mok/MOK.der".into());
    let i = driver::install(&host, &f, OsFamily::Debian, true, &cfg).unwrap();
    assert!(i.signed);
}

#[test]
fn the_zip_over_http_installs_on_the_rhel_host() {
    let dir = tempfile::tempdir().unwrap();
    // nouveau drives the A10 on a fresh host and NVIDIA's installer refuses that: a headless
    // host (the console elsewhere) lets it be unloaded first (tests/driver_nouveau.rs).
    let host = simulator::open(
        &dir.path().join("rhel"),
        "rhel-a10",
        &["nouveau_fbcon=0".to_string()],
    )
    .unwrap();
    let rm = host
        .run(&vgpuctl::host::Cmd::new("modprobe").args(["-r", "nouveau"]))
        .unwrap();
    assert!(rm.success(), "{}", rm.tail(3));
    let zip = std::fs::read(host.path(&zip_rel())).unwrap();
    let server = support::TestServer::start();
    let p = format!(
        "/ems/sec/vGPU17.6/{}",
        driver_pkg::zip_name(vgpuctl_sim::DRIVER_VERSION)
    );
    server.add(&p, zip.clone());
    let cfg = DriverConfig {
        url: Some(server.url(&p)),
        sha256: Some(hex::encode(Sha256::digest(&zip))),
        allow_http: true,
        ..Default::default()
    };
    let src = driver::validate(&cfg, &host, SystemTime::now()).unwrap();
    let f = driver::fetch(&host, &src, &quiet(OsFamily::Rhel)).unwrap();
    assert_eq!(
        f.kind,
        PackageKind::Run,
        "the zip has no .rpm: the .run fits"
    );
    driver::install(&host, &f, OsFamily::Rhel, false, &cfg).unwrap();
    assert!(host.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
}
