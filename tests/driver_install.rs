//! Driver install through the runner: argument vectors, Secure Boot keys, failure output,
//! the vGPU manager unit as proof, bare `.run`/`.deb` sources given by path.

#[path = "common/makeself.rs"]
mod makeself;

#[path = "common/driver_http.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use support::DriverKernel;
use vgpuctl::driver::{
    self, DriverError, FetchOptions, Messages, OsFamily, PackageKind, ProgressMode,
};
use vgpuctl::host::{Host, WriteOpts};
use vgpuctl::profile::DriverConfig;

const VER: &str = "550.163.02";
const RUN: &str = "root/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run";

fn host_with(kernel: DriverKernel) -> (tempfile::TempDir, Host, Arc<DriverKernel>) {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(kernel);
    let host = Host::new(dir.path(), k.clone());
    makeself::run(
        &host.path(RUN),
        VER,
        vgpuctl_sim::driver_pkg::RunKind::HostVgpuKvm,
    );
    (dir, host, k)
}

fn quiet() -> FetchOptions {
    FetchOptions {
        progress: ProgressMode::Quiet,
        messages: Messages::buffer().0,
        ..Default::default()
    }
}

fn path_cfg(path: &str) -> DriverConfig {
    DriverConfig {
        path: Some(format!("/{path}")),
        ..Default::default()
    }
}

fn fetch(host: &Host, cfg: &DriverConfig) -> driver::Fetched {
    let src = driver::validate(cfg, host, SystemTime::now()).unwrap();
    driver::fetch(host, &src, &quiet()).unwrap()
}

#[test]
fn a_bare_run_is_checked_then_installed_with_dkms_silent() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let cfg = path_cfg(RUN);
    let f = fetch(&host, &cfg);
    assert_eq!((f.kind, f.version.as_str()), (PackageKind::Run, VER));
    assert_eq!(f.package, PathBuf::from(RUN));
    assert!(!f.verified);
    let i = driver::install(&host, &f, OsFamily::Debian, false, &cfg).unwrap();
    assert_eq!(i.unit, "usr/lib/systemd/system/nvidia-vgpu-mgr.service");
    assert!(!i.signed);
    assert_eq!(
        k.commands(),
        vec![format!("/{RUN} --check"), format!("/{RUN} --dkms -s")]
    );
    let log = host.read("var/log/vgpuctl/driver-install.log").unwrap();
    // The real makeself archive's own words (its --check ran).
    assert!(
        log.contains("Verifying archive integrity... All good."),
        "{log}"
    );
    assert!(
        log.contains("--dkms -s") && log.contains("[exit status 0]"),
        "{log}"
    );
}

#[test]
fn a_damaged_run_fails_its_own_check_before_anything_is_installed() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let p = host.path(RUN);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 200] ^= 0x55;
    std::fs::write(&p, bytes).unwrap();
    let src = driver::validate(&path_cfg(RUN), &host, SystemTime::now()).unwrap();
    let err = driver::fetch(&host, &src, &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed its own integrity check"), "{err}");
    assert!(
        err.contains("SHA256"),
        "the archive's own words are shown: {err}"
    );
    assert_eq!(k.commands().len(), 1);
}

#[test]
fn secure_boot_without_keys_stops_before_installing() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let cfg = path_cfg(RUN);
    let f = fetch(&host, &cfg);
    let err = driver::install(&host, &f, OsFamily::Debian, true, &cfg).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DriverError>(),
            Some(DriverError::SecureBootNoKeys)
        ),
        "{err}"
    );
    assert!(err.to_string().contains("mokutil --import"), "{err}");
    assert_eq!(
        k.commands().len(),
        1,
        "only --check ran: {:?}",
        k.commands()
    );
}

#[test]
fn secure_boot_with_keys_passes_the_module_signing_options() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let mut cfg = path_cfg(RUN);
    cfg.signing_key = Some("/root/mok/MOK.priv".into());
    cfg.signing_cert = Some("/root/mok/MOK.der".into());
    let f = fetch(&host, &cfg);
    // Keys named but missing: a field error naming the key, nothing run.
    let err = driver::install(&host, &f, OsFamily::Rhel, true, &cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("signing_key: /root/mok/MOK.priv does not exist"),
        "{err}"
    );
    host.write_file("root/mok/MOK.priv", b"key", WriteOpts::secret())
        .unwrap();
    host.write_file("root/mok/MOK.der", b"cert", WriteOpts::state())
        .unwrap();
    let i = driver::install(&host, &f, OsFamily::Rhel, true, &cfg).unwrap();
    assert!(i.signed);
    assert_eq!(
        k.commands().last().unwrap(),
        &format!(
            "/{RUN} --dkms -s --module-signing-secret-key=/root/mok/MOK.priv \
             --module-signing-public-key=/root/mok/MOK.der"
        )
    );
}

#[test]
fn a_failing_installer_shows_its_last_lines_and_is_not_done() {
    let (_d, host, _k) = host_with(DriverKernel {
        install_fails: Some(1),
        ..Default::default()
    });
    let cfg = path_cfg(RUN);
    let f = fetch(&host, &cfg);
    let err = driver::install(&host, &f, OsFamily::Debian, false, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exited 1") && err.contains("Bad return status for module build"),
        "{err}"
    );
    assert!(err.contains("/var/log/vgpuctl/driver-install.log"), "{err}");
    let log = host.read("var/log/vgpuctl/driver-install.log").unwrap();
    assert!(
        log.contains("Installation has failed") && log.contains("[exit status 1]"),
        "{log}"
    );
    assert!(!host.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
}

#[test]
fn success_without_the_vgpu_manager_unit_is_a_failure() {
    let (_d, host, _k) = host_with(DriverKernel {
        no_unit: true,
        ..Default::default()
    });
    let cfg = path_cfg(RUN);
    let f = fetch(&host, &cfg);
    let err = driver::install(&host, &f, OsFamily::Other, false, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nvidia-vgpu-mgr.service is in none of"),
        "{err}"
    );
    // A unit in /etc/systemd/system counts.
    host.write_file(
        "etc/systemd/system/nvidia-vgpu-mgr.service",
        b"[Unit]\n",
        WriteOpts::state(),
    )
    .unwrap();
    let i = driver::install(&host, &f, OsFamily::Other, false, &cfg).unwrap();
    assert_eq!(i.unit, "etc/systemd/system/nvidia-vgpu-mgr.service");
}

#[test]
fn a_deb_goes_through_apt_and_an_rpm_through_dnf() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let deb = "root/nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb";
    host.write_file(deb, b"!<arch>\ndebian-binary   ", WriteOpts::state())
        .unwrap();
    let cfg = path_cfg(deb);
    let f = fetch(&host, &cfg);
    assert_eq!((f.kind, f.version.as_str()), (PackageKind::Deb, VER));
    driver::install(&host, &f, OsFamily::Debian, false, &cfg).unwrap();
    assert_eq!(k.commands(), vec![format!("apt-get install -y /{deb}")]);
    let cmd = driver::install_command(&f, OsFamily::Debian, false, &cfg).unwrap();
    assert_eq!(
        cmd.env,
        vec![("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string())]
    );
    // The wrong family is refused before anything runs.
    let err = driver::install(&host, &f, OsFamily::Rhel, false, &cfg).unwrap_err();
    assert!(err.downcast_ref::<DriverError>().is_some(), "{err}");

    let rpm = "root/NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm";
    host.write_file(rpm, &[0xed, 0xab, 0xee, 0xdb], WriteOpts::state())
        .unwrap();
    let cfg = path_cfg(rpm);
    let f = fetch(&host, &cfg);
    driver::install(&host, &f, OsFamily::Rhel, false, &cfg).unwrap();
    assert_eq!(
        k.commands().last().unwrap(),
        &format!("dnf install -y /{rpm}")
    );
}

#[test]
fn a_zip_given_by_path_is_verified_against_its_pin() {
    let (_d, host, _k) = host_with(DriverKernel::default());
    let zip = "root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";
    makeself::driver_zip(&host.path(zip), VER);
    let mut cfg = path_cfg(zip);
    cfg.sha256 = Some("ab".repeat(32));
    let src = driver::validate(&cfg, &host, SystemTime::now()).unwrap();
    let err = driver::fetch(&host, &src, &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SHA-256 mismatch for /root/NVIDIA-GRID"),
        "{err}"
    );
    assert!(host.exists(zip), "an operator's own file is never moved");
    cfg.sha256 = Some(driver::hash_file(&host, zip).unwrap());
    let f = fetch(&host, &cfg);
    assert!(f.verified);
    assert_eq!(f.kind, PackageKind::Run);
}

#[test]
fn on_debian_the_zips_deb_is_picked_with_its_mode_and_installed_with_apt() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let zip = "root/NVIDIA-GRID-Ubuntu-KVM-550.163.02-550.163.01-553.74.zip";
    let mut w = zip::ZipWriter::new(std::fs::File::create(host.path(zip)).unwrap());
    let exe = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    let doc = zip::write::SimpleFileOptions::default().unix_permissions(0o640);
    w.start_file(
        format!("Host_Drivers/{}", vgpuctl_sim::driver_pkg::run_name(VER)),
        exe,
    )
    .unwrap();
    std::io::Write::write_all(&mut w, &std::fs::read(host.path(RUN)).unwrap()).unwrap();
    w.start_file(
        "Host_Drivers/nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
        doc,
    )
    .unwrap();
    std::io::Write::write_all(
        &mut w,
        b"!<arch>\ndebian-binary   1750000000  0     0     100644  4         `\n2.0\n",
    )
    .unwrap();
    w.finish().unwrap();

    let cfg = path_cfg(zip);
    let src = driver::validate(&cfg, &host, SystemTime::now()).unwrap();
    let mut o = quiet();
    o.os = OsFamily::Debian;
    let f = driver::fetch(&host, &src, &o).unwrap();
    assert_eq!(f.kind, PackageKind::Deb);
    assert_eq!(f.version, VER);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(host.path(f.package.to_str().unwrap()))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
    driver::install(&host, &f, OsFamily::Debian, false, &cfg).unwrap();
    assert_eq!(
        k.commands(),
        vec![format!("apt-get install -y {}", f.package_abs())]
    );
    // Elsewhere the same zip gives the .run.
    let f = driver::fetch(&host, &src, &quiet()).unwrap();
    assert_eq!(f.kind, PackageKind::Run);
}

/// A `.run` built by the real makeself and renamed: its version comes from its makeself label;
/// a name that says another version than the label is refused before anything runs.
#[test]
fn a_renamed_run_is_known_by_its_makeself_label_and_a_lying_name_is_refused() {
    let (_d, host, k) = host_with(DriverKernel::default());
    let renamed = "root/driver.run";
    std::fs::copy(host.path(RUN), host.path(renamed)).unwrap();
    let f = fetch(&host, &path_cfg(renamed));
    assert_eq!((f.kind, f.version.as_str()), (PackageKind::Run, VER));

    let lying = "root/NVIDIA-Linux-x86_64-535.247.02-vgpu-kvm.run";
    std::fs::copy(host.path(RUN), host.path(lying)).unwrap();
    let before = k.commands().len();
    let src = driver::validate(&path_cfg(lying), &host, SystemTime::now()).unwrap();
    let err = driver::fetch(&host, &src, &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("says driver 535.247.02 but the archive's label says 550.163.02"),
        "{err}"
    );
    assert_eq!(k.commands().len(), before, "nothing ran");
}
