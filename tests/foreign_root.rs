//! A `--root` that is neither `/` nor simulated (a mounted image, a chroot, a copied tree): no
//! program ever runs on this machine for it. Every program vgpuctl could start is faked first in
//! `PATH` (and at the root's own absolute program paths) by a script that records being called.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, profile_file, repo, tree_hash, Run, Sim};

const PROGRAMS: &[&str] = &[
    "systemctl",
    "sriov-manage",
    "update-grub",
    "grub-mkconfig",
    "grubby",
    "proxmox-boot-tool",
    "kernel-install",
    "update-initramfs",
    "dracut",
    "kubectl",
    "apt-get",
    "dnf",
    "modprobe",
    "nvidia-smi",
    "reboot",
];

/// A host tree that vgpuctl sees as a plain foreign root, and recording fakes of its programs.
struct Foreign {
    _sim: Sim,
    root: PathBuf,
    fakes: tempfile::TempDir,
}

impl Foreign {
    /// Laid out by the simulator as `model`, then its marker removed: from then on the tree is
    /// an ordinary directory to vgpuctl (see `sim::detect`).
    fn new(model: &str, prepare: impl FnOnce(&Sim)) -> Foreign {
        let sim = Sim::new(model);
        prepare(&sim);
        let root = sim.root().to_path_buf();
        std::fs::remove_dir_all(root.join(".vgpuctl-sim")).unwrap();
        let fakes = tempfile::tempdir().unwrap();
        let log = fakes.path().join("calls.log");
        let script = format!("#!/bin/sh\necho \"$0 $*\" >> {}\n", log.display());
        let bin_dir = fakes.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        let mut at = vec![root.join("usr/lib/nvidia/sriov-manage")];
        at.extend(PROGRAMS.iter().map(|p| bin_dir.join(p)));
        for p in at {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Foreign {
            _sim: sim,
            root,
            fakes,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let path = format!(
            "{}:{}",
            self.fakes.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let o = Command::new(bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("PATH", path)
            .env_remove("VGPUCTL_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.fakes.path().join("calls.log")).unwrap_or_default()
    }

    fn hash(&self) -> String {
        tree_hash(&self.root)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn a40_profile(reboot: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(repo().join("profiles/a40.toml"))
        .unwrap()
        .replace("reboot = \"prompt\"", &format!("reboot = \"{reboot}\""));
    profile_file(&text)
}

fn p(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().unwrap()
}

fn assert_refused(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 2, "{r:?}");
    let all = r.all();
    assert!(all.contains("not the running system"), "{r:?}");
    assert!(all.contains("Run vgpuctl inside that system"), "{r:?}");
    assert!(all.contains("Nothing was changed"), "{r:?}");
    for n in needles {
        assert!(all.contains(n), "{n}: {r:?}");
    }
}

#[test]
fn setup_on_a_fresh_foreign_root_is_refused_up_front_and_runs_nothing() {
    let f = Foreign::new("a40x8", |_| {});
    let before = f.hash();
    for reboot in ["auto", "never"] {
        let prof = a40_profile(reboot);
        let r = f.run(&["setup", "--profile", p(&prof), "--yes"]);
        assert_refused(&r, &["update-grub", "update-initramfs", "driver installer"]);
        if reboot == "auto" {
            assert!(r.all().contains("systemctl reboot"), "{r:?}");
        }
        assert_eq!(f.calls(), "", "a program ran on this machine");
        assert_eq!(f.hash(), before, "the root changed");
    }
    // The dry run shows the same plan and the same refusal, and changes nothing either.
    let prof = a40_profile("auto");
    let r = f.run(&["setup", "--profile", p(&prof), "--dry-run"]);
    assert_refused(&r, &["update-grub"]);
    assert_eq!(f.calls(), "");
    assert_eq!(f.hash(), before);
}

#[test]
fn setup_needing_sriov_and_vgpus_on_a_foreign_root_is_refused() {
    let f = Foreign::new("a40x8-ready", |_| {});
    let before = f.hash();
    let prof = a40_profile("auto");
    let r = f.run(&["setup", "--profile", p(&prof), "--yes"]);
    assert_refused(&r, &["sriov-manage -e 0000:"]);
    assert_eq!(f.calls(), "", "a program ran on this machine");
    assert_eq!(f.hash(), before, "the root changed");
}

#[test]
fn driver_fetch_install_and_restore_on_a_foreign_root_run_nothing() {
    let f = Foreign::new("a40x8", |_| {});
    let zip = f.path("root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip");
    assert!(zip.exists(), "the simulated host carries the driver zip");
    let before = f.hash();
    let prof = a40_profile("never");
    for verb in ["fetch", "install"] {
        let r = f.run(&["driver", verb, "--profile", p(&prof)]);
        assert_refused(&r, &["--check"]);
    }
    let r = f.run(&["restore"]);
    assert_refused(&r, &["sriov-manage"]);
    assert_eq!(f.calls(), "", "a program ran on this machine");
    assert_eq!(f.hash(), before, "the root changed");
}

#[test]
fn check_reads_a_foreign_root_without_running_its_programs() {
    let f = Foreign::new("a40x8-ready", |_| {});
    let before = f.hash();
    let r = f.run(&["check", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert!(v.is_object(), "{r:?}");
    assert!(r.stdout.contains("A40"), "the root's GPUs are read: {r:?}");
    assert_eq!(f.calls(), "", "a program ran on this machine");
    assert_eq!(f.hash(), before);
}

#[test]
fn units_on_a_foreign_root_are_enabled_by_their_links_only() {
    let wants = "etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service";
    let unit = "etc/systemd/system/vgpuctl-restore.service";
    let prof = a40_profile("never");
    let f = Foreign::new("a40x8-ready", |s| {
        s.setup_to_end(Path::new(p(&prof)));
        std::fs::remove_file(s.root().join(wants)).unwrap();
        std::fs::remove_file(s.root().join(unit)).unwrap();
    });
    let r = f.run(&["setup", "--profile", p(&prof), "--yes"]);
    assert!(!r.all().contains("daemon-reload"), "{r:?}");
    assert_eq!(f.calls(), "", "a program ran on this machine");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_link(f.path(wants)).unwrap(),
        Path::new("/etc/systemd/system/vgpuctl-restore.service")
    );
    assert!(f.path(unit).is_file());
}

#[test]
fn import_on_a_foreign_root_links_its_unit_and_runs_nothing() {
    let u = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    let f = Foreign::new("a40x8-ready", |s| {
        s.write(
            "etc/rc.local",
            &format!(
                "#!/bin/sh -e\n/usr/lib/nvidia/sriov-manage -e 0000:e8:00.0\necho {u} > \
                 /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\nexit 0\n"
            ),
        )
    });
    let r = f.run(&["import"]);
    assert_eq!(f.calls(), "", "a program ran on this machine: {r:?}");
    assert!(
        !r.all().contains("refusing to run"),
        "nothing was even tried: {r:?}"
    );
    assert!(!r.all().contains("daemon-reload"), "{r:?}");
    // SR-IOV is imported; the vGPU on a VF cannot be resolved without enabling SR-IOV there,
    // which needs the running system: reported (exit 1), its line left as it is.
    assert!(
        r.all().contains("run vgpuctl import inside that system"),
        "{r:?}"
    );
    let pins = std::fs::read_to_string(f.path("etc/vgpuctl/vgpus.toml")).unwrap();
    assert!(pins.contains("sriov = [\"0000:e8:00.0\"]"), "{pins}");
    assert!(std::fs::read_to_string(f.path("etc/rc.local"))
        .unwrap()
        .contains(&format!("\necho {u}")));
    assert!(f
        .path("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service")
        .symlink_metadata()
        .is_ok());
    assert!(r.all().contains("creates the vGPUs when it boots"), "{r:?}");
    assert_eq!(r.code, 1, "{r:?}");
}
