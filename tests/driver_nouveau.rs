//! nouveau before the driver install (recorded-behaviour.md §7): NVIDIA's installer refuses while
//! nouveau drives a GPU, so setup blacklists it, rebuilds the initramfs and installs after the
//! reboot, or unloads it first when nothing holds it; `vgpuctl driver install` refuses with the fix
//! (exit 2) or unloads it.

mod common;
use common::*;

fn profile(name: &str) -> std::path::PathBuf {
    repo().join("profiles").join(name)
}

const MGR_UNIT: &str = "usr/lib/systemd/system/nvidia-vgpu-mgr.service";

/// The fresh l40s-vfio host: nouveau drives the four GPUs and holds the console (use count 1).
#[test]
fn held_nouveau_goes_at_a_reboot_and_the_driver_is_installed_after_it() {
    let s = Sim::new("l40s-vfio");
    let p = profile("l40s.toml");
    let p = p.to_str().unwrap();
    let dry = s.run(&["setup", "--profile", p, "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let out = &dry.stdout;
    assert!(out.contains("Blacklist nouveau"), "{out}");
    assert!(out.contains("Rebuild the initramfs"), "{out}");
    assert!(out.contains("cannot be unloaded: its framebuffer"), "{out}");
    assert!(
        !out.contains("fetch and verify the host driver"),
        "no install before the reboot: {out}"
    );
    let after = out.split("After the reboot").nth(1).unwrap_or_default();
    assert!(
        after.contains("install the NVIDIA vGPU host driver"),
        "{out}"
    );

    let first = s.run(&["setup", "--profile", p, "--yes"]);
    assert_eq!(first.code, 3, "{first:?}");
    assert!(
        !s.exists(MGR_UNIT),
        "installed while nouveau drove the GPUs"
    );
    assert!(!s.read("var/log/nvidia-installer.log").contains("Nouveau"));
    assert!(s
        .read("etc/modprobe.d/vgpuctl-blacklist-nouveau.conf")
        .contains("options nouveau modeset=0"));
    let runs = s.setup_to_end(&profile("l40s.toml"));
    assert_eq!(runs.last().unwrap().code, 0, "{runs:?}");
    assert!(s.exists(MGR_UNIT));
    assert!(!s.read("proc/modules").contains("nouveau "));
    assert_eq!(s.live_vgpus().len(), 8);
}

/// With the console elsewhere (`nouveau_fbcon=0`: a headless server) nouveau's use count is 0:
/// setup unloads it and installs before the one reboot the IOMMU needs.
#[test]
fn unused_nouveau_is_unloaded_and_the_driver_installed_before_the_reboot() {
    let s = Sim::new("l40s-vfio");
    assert_eq!(
        s.run(&["--sim-opt", "nouveau_fbcon=0", "sim", "info"]).code,
        0
    );
    let p = profile("l40s.toml");
    let p = p.to_str().unwrap();
    let dry = s.run(&["setup", "--profile", p, "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let out = &dry.stdout;
    let unload = out.find("modprobe -r nouveau").expect(out);
    let install = out.find("fetch and verify the host driver").expect(out);
    assert!(unload < install, "{out}");
    let first = s.run(&["setup", "--profile", p, "--yes"]);
    assert_eq!(first.code, 3, "{first:?}");
    assert!(s.exists(MGR_UNIT), "{first:?}");
    let runs = s.setup_to_end(&profile("l40s.toml"));
    assert_eq!(runs.len(), 2, "one more run after the one reboot: {runs:?}");
    assert_eq!(s.live_vgpus().len(), 8);
}

#[test]
fn driver_install_refuses_while_nouveau_is_held_and_unloads_it_when_free() {
    let s = Sim::new("l40s-vfio");
    let p = profile("l40s.toml");
    let p = p.to_str().unwrap();
    let before = s.hash();
    let r = s.run(&["driver", "install", "--profile", p]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nouveau drives 0000:"), "{r:?}");
    assert!(r.stderr.contains("blacklist nouveau"), "{r:?}");
    assert!(r.stderr.contains("Nothing was changed"), "{r:?}");
    assert_eq!(s.hash(), before, "the refusal changed files");

    assert_eq!(
        s.run(&["--sim-opt", "nouveau_fbcon=0", "sim", "info"]).code,
        0
    );
    let r = s.run(&["driver", "install", "--profile", p]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("unloaded it"), "{r:?}");
    assert!(s.exists(MGR_UNIT));
}
