//! Issue 12 item 14: a disk that fills during the driver install. The simulated root lives on a
//! real small tmpfs, so the installer really gets ENOSPC part-way (after it wrote the manager's
//! unit). The partial install must not count as installed: once space is freed, setup redoes the
//! install and converges. Needs `mount` (root, as on this machine and CI); skipped with a reason
//! otherwise.

mod common;
use common::*;

use std::process::Command;

const ZIP: &str = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
    fn resize(&self, bytes: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount size={bytes}");
    }
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_full_during_the_driver_install_is_redone_once_space_is_freed() {
    let dir = tempfile::Builder::new()
        .prefix("vgpuctl-enospc-")
        .tempdir()
        .unwrap();
    let Some(fs) = Tmpfs::mount(dir.path(), "256m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    };
    let s = Sim {
        dir,
        model: "a40x8".into(),
    };
    assert_eq!(s.run(&["sim", "info"]).code, 0);
    let p = profile_file(&format!(
        "[host]\nreboot = \"never\"\n[driver]\npath = \"{ZIP}\"\n\
         [[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n"
    ));
    let pstr = p.path().to_str().unwrap();
    // Fetch (download, verify, extract) with room to spare, then leave about 2 MiB: the
    // installer's ~6 MiB of files cannot all fit.
    let r = s.run(&["driver", "fetch", "--profile", pstr]);
    assert_eq!(r.code, 0, "{r:?}");
    fs.resize(fs.used() + 2 * 1024 * 1024);

    let r = s.run(&["setup", "--profile", pstr, "--yes"]);
    assert_eq!(r.code, 1, "the install fails on the full disk: {r:?}");
    assert!(r.all().contains("No space left on device"), "{r:?}");
    assert!(
        s.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"),
        "the partial install left the manager's unit (what used to count as installed)"
    );
    assert!(s
        .read("var/lib/vgpuctl/state.toml")
        .contains("driver_install_started"));

    // Space freed: the next run redoes the install and converges.
    fs.resize(256 * 1024 * 1024);
    let mut last = None;
    for _ in 0..4 {
        let r = s.run(&["setup", "--profile", pstr, "--yes"]);
        match r.code {
            0 => {
                last = Some(r);
                break;
            }
            3 => assert_eq!(s.run(&["sim", "reboot"]).code, 0),
            _ => panic!("setup after freeing space: {r:?}"),
        }
        last = Some(r);
    }
    let r = last.unwrap();
    assert_eq!(r.code, 0, "converged: {r:?}");
    assert!(
        s.exists("lib/modules")
            && std::fs::read_dir(s.root().join("lib/modules"))
                .unwrap()
                .flatten()
                .any(|k| k.path().join("updates/dkms/nvidia-sim.complete").exists()),
        "the install was redone to its end"
    );
    assert!(!s
        .read("var/lib/vgpuctl/state.toml")
        .contains("driver_install_started"));
    assert_eq!(s.live_vgpus().len(), 8);
    drop(fs);
    drop(s);
}
