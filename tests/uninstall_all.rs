//! Issue 17 item 4: `vgpuctl uninstall --all` undoes setup: the vGPUs no VM uses, SR-IOV, the
//! boot configuration and modprobe.d from their first backups (or removed when setup created
//! them), the driver vgpuctl installed; a plan shown first, consent needed. Afterwards the root
//! matches the tree before the first setup, apart from the paths named in [`EXCLUDED`].

mod common;
use common::*;

use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Left out of the comparison, each for its reason.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "var/log",
        "logs: the driver installer's and vgpuctl's, kept for the operator",
    ),
    (
        "var/lib/vgpuctl/backups",
        "backups: the first versions setup replaced, and the profile and pins uninstall keeps",
    ),
    (
        "var/lib/vgpuctl/lock",
        "the lock file uninstall itself holds while it runs (a lock must outlive its holder)",
    ),
    (".vgpuctl-sim", "the simulator's own state"),
    (
        "sys",
        "the running kernel's devices: the driver leaves memory only at the next boot (its files \
         are gone), so the GPUs are still bound to it",
    ),
    ("proc", "the running kernel's state, as for /sys"),
    (
        "boot/initrd.img-*",
        "rebuilt from the restored modprobe.d; the simulated image carries the time it was built",
    ),
    (
        "usr/local",
        "made by setup for /usr/local/sbin/vgpuctl (the binary is removed): every real host has \
         it, the simulated root does not, and uninstall leaves directories alone",
    ),
];

/// Directories whose entry alone is left out (what is inside them is compared).
const EXCLUDED_DIR_ENTRIES: &[&str] = &["var/lib/vgpuctl"];

/// Like `common::tree_hash`, without the excluded paths; also the list of paths hashed, so a
/// mismatch can be shown.
fn hash_without_exclusions(root: &Path) -> (String, Vec<String>) {
    // An entry is a path and what is under it; a trailing `*` matches any rest of the name.
    fn excluded(rel: &str) -> bool {
        EXCLUDED.iter().any(|(e, _)| match e.strip_suffix('*') {
            Some(prefix) => rel.starts_with(prefix),
            None => rel == *e || rel.starts_with(&format!("{e}/")),
        })
    }
    fn walk(dir: &Path, root: &Path, h: &mut Sha256, seen: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if excluded(&rel) {
                continue;
            }
            let md = p.symlink_metadata().unwrap();
            if !(md.is_dir() && EXCLUDED_DIR_ENTRIES.contains(&rel.as_str())) {
                h.update(rel.as_bytes());
                h.update(md.permissions().mode().to_le_bytes());
                seen.push(rel.clone());
            }
            if md.file_type().is_symlink() {
                h.update(std::fs::read_link(&p).unwrap().display().to_string());
            } else if md.is_dir() {
                walk(&p, root, h, seen);
            } else {
                h.update(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut h = Sha256::new();
    let mut seen = Vec::new();
    walk(root, root, &mut h, &mut seen);
    (hex::encode(h.finalize()), seen)
}

fn a40_profile() -> std::path::PathBuf {
    repo().join("profiles").join("a40.toml")
}

#[test]
fn uninstall_all_returns_the_root_to_its_tree_before_the_first_setup() {
    let s = Sim::new("a40x8");
    let (before, before_paths) = hash_without_exclusions(s.root());
    let runs = s.setup_to_end(&a40_profile());
    assert_eq!(runs.last().unwrap().code, 0);
    assert_eq!(s.live_vgpus().len(), 16);

    // Consent: without --yes and without a terminal, nothing changes.
    let hash = s.hash();
    let r = s.run(&["uninstall", "--all"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");
    // The plan is shown first, naming each part.
    for part in [
        "Remove 16 vGPU(s) no VM uses",
        "Disable SR-IOV on A40 0000:e8:00.0",
        "Restore /etc/default/grub from its first backup",
        "Remove /etc/modprobe.d/vgpuctl-blacklist-nouveau.conf",
        "update-grub",
        "update-initramfs -u",
        "Remove the NVIDIA vGPU host driver vgpuctl installed",
    ] {
        assert!(r.stdout.contains(part), "{part}: {r:?}");
    }

    let pinned = s.read("etc/vgpuctl/vgpus.toml");
    let r = s.run(&["uninstall", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        s.read("var/lib/vgpuctl/backups/etc/vgpuctl/vgpus.toml.uninstalled"),
        pinned,
        "the pins are kept as they were before the undo"
    );
    let (after, after_paths) = hash_without_exclusions(s.root());
    let (added, gone) = difference(&before_paths, &after_paths);
    assert_eq!(after, before, "added {added:?}, gone {gone:?}: {r:?}");
    assert!(s.live_vgpus().is_empty());
}

/// A driver setup installed from a package (the zip's `.deb` on Ubuntu, its `.rpm` on Rocky) is
/// removed with the package manager, by the package's name: the tree is back as before too.
#[test]
fn uninstall_all_removes_a_driver_installed_from_a_package() {
    for (model, profile, file, removal) in [
        (
            "a40x8",
            "a40.toml",
            "nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
            "apt-get remove -y nvidia-vgpu-ubuntu-550",
        ),
        (
            "rhel-a10",
            "rhel-a10.toml",
            "NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm",
            "dnf remove -y NVIDIA-vGPU-rhel",
        ),
    ] {
        let s = Sim::new(model);
        add_host_package(
            &s.root()
                .join("root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"),
            file,
        );
        let (before, before_paths) = hash_without_exclusions(s.root());
        let runs = s.setup_to_end(&repo().join("profiles").join(profile));
        assert_eq!(runs.last().unwrap().code, 0);
        assert!(
            runs.iter()
                .any(|r| r.all().contains(&format!("Host_Drivers/{file} ("))),
            "{model}: setup installed the package: {runs:?}"
        );
        assert!(!s.exists("usr/bin/nvidia-uninstall"), "{model}");
        let r = s.run(&["uninstall", "--all"]);
        assert!(
            r.stdout
                .contains("Remove the NVIDIA vGPU host driver vgpuctl installed")
                && r.stdout.contains(removal),
            "{model}: {r:?}"
        );
        let r = s.run(&["uninstall", "--all", "--yes"]);
        assert_eq!(r.code, 0, "{model}: {r:?}");
        assert!(!s.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
        let (after, after_paths) = hash_without_exclusions(s.root());
        let (added, gone) = difference(&before_paths, &after_paths);
        assert!(
            added.is_empty() && gone.is_empty(),
            "{model}: added {added:?}, gone {gone:?}: {r:?}"
        );
        // On the BLS host the boot entries keep the IOMMU arguments grubby added (not undone,
        // the plan says so), so only the Debian host's contents are compared.
        if model == "a40x8" {
            assert_eq!(after, before, "{model}: {r:?}");
        } else {
            assert!(r.stdout.contains("added with grubby stay"), "{r:?}");
        }
    }
}

/// The same on vendor-specific VFIO (an L40S on an AMD host): the vGPUs are the VFs' types.
#[test]
fn uninstall_all_on_vendor_vfio_returns_the_tree_too() {
    let s = Sim::new("l40s-vfio");
    let (before, before_paths) = hash_without_exclusions(s.root());
    let runs = s.setup_to_end(&repo().join("profiles").join("l40s.toml"));
    assert_eq!(runs.last().unwrap().code, 0);
    assert!(!s.live_vgpus().is_empty());
    let r = s.run(&["uninstall", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (after, after_paths) = hash_without_exclusions(s.root());
    let (added, gone) = difference(&before_paths, &after_paths);
    assert_eq!(after, before, "added {added:?}, gone {gone:?}: {r:?}");
}

/// The paths `after` has that `before` lacks, and those it lost.
fn difference<'a, T: PartialEq>(before: &'a [T], after: &'a [T]) -> (Vec<&'a T>, Vec<&'a T>) {
    (
        after.iter().filter(|p| !before.contains(p)).collect(),
        before.iter().filter(|p| !after.contains(p)).collect(),
    )
}

/// Make the mdev vGPU `uuid` in use: QEMU holds its VFIO group open. A real kernel gives each mdev
/// device an IOMMU group of its own (`iommu_group` under the device); the simulator does not lay
/// it out, so the test links one (group 900, unused by the simulated host).
fn hold_mdev(s: &Sim, uuid: &str) {
    let dev = s.root().join(format!("sys/bus/mdev/devices/{uuid}"));
    std::os::unix::fs::symlink(
        "../../../../kernel/iommu_groups/900",
        dev.join("iommu_group"),
    )
    .unwrap();
    let fds = s.root().join("proc/4242/fd");
    std::fs::create_dir_all(&fds).unwrap();
    std::os::unix::fs::symlink("/dev/vfio/900", fds.join("17")).unwrap();
}

#[test]
fn a_vgpu_in_use_and_the_sriov_of_its_gpu_are_left_alone() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file(
        "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\n\
         [[gpus]]\nselect = \"0000:68:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n",
    );
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let live = s.live_vgpus();
    let on = |vf: &str| {
        let j = s.json(&["status", "--json"]);
        j["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
            .find(|v| v["parent"].as_str() == Some(vf))
            .and_then(|v| v["uuid"].as_str().map(str::to_string))
    };
    let held = on("0000:67:00.4").expect("a vGPU on 0000:67:00.4");
    hold_mdev(&s, &held);

    let r = s.run(&["uninstall", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("{held} (")), "{r:?}");
    assert!(r.stdout.contains("in use by a VM: left alone"), "{r:?}");
    let after = s.live_vgpus();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [&held],
        "{live:?} -> {after:?}"
    );
    let numvfs = |pf: &str| {
        s.read(&format!("sys/bus/pci/devices/{pf}/sriov_numvfs"))
            .trim()
            .to_string()
    };
    assert_ne!(
        numvfs("0000:67:00.0"),
        "0",
        "the held vGPU's GPU keeps SR-IOV"
    );
    assert_eq!(numvfs("0000:68:00.0"), "0", "the other GPU's SR-IOV is off");
}

/// On an offline root (`--root` without the simulator: another system's disk) no program runs
/// and no device answers: a plan needing them is refused, naming the steps, nothing changed.
#[test]
fn an_offline_root_is_refused_before_any_change() {
    let s = Sim::new("a40x8-ready");
    let p =
        profile_file("[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The same tree as another system's disk: without the simulator's state.
    let disk = tempfile::tempdir().unwrap();
    copy_tree(s.root(), disk.path());
    std::fs::remove_dir_all(disk.path().join(".vgpuctl-sim")).unwrap();
    let hash = tree_hash(disk.path());
    let out = std::process::Command::new(bin())
        .arg("--root")
        .arg(disk.path())
        .args(["uninstall", "--all", "--yes"])
        .env_remove("VGPUCTL_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs the running system"), "{stderr}");
    assert!(
        stderr.contains("Disable SR-IOV on A40 0000:67:00.0"),
        "{stderr}"
    );
    assert_eq!(tree_hash(disk.path()), hash, "nothing changed");
}

/// Copy a tree: directories, files (with their modes) and symlinks as they are.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let md = src.symlink_metadata().unwrap();
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if md.is_dir() {
            std::fs::create_dir(&dst).unwrap();
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
