//! The shipped systemd units: systemd's own verifier accepts them, and they say what the boot
//! ordering needs.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

const TARGETS: &[&str] = &[
    "sysinit.target",
    "basic.target",
    "multi-user.target",
    "sockets.target",
    "timers.target",
    "paths.target",
    "slices.target",
    "local-fs.target",
    "swap.target",
    "network.target",
    "network-online.target",
    "shutdown.target",
    "-.slice",
    "system.slice",
];

/// A root with the binary where ExecStart expects it, the units, and the targets they name.
fn root_with(units: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("usr/local/sbin")).unwrap();
    std::fs::copy(bin(), r.join("usr/local/sbin/vgpuctl")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd/system")).unwrap();
    for t in TARGETS {
        let src = Path::new("/usr/lib/systemd/system").join(t);
        if src.exists() {
            std::fs::copy(&src, r.join("usr/lib/systemd/system").join(t)).unwrap();
        }
    }
    for (name, text) in units {
        std::fs::write(r.join("etc/systemd/system").join(name), text).unwrap();
    }
    d
}

fn verify(root: &Path, names: &[&str]) -> (bool, String) {
    let mut c = Command::new("systemd-analyze");
    c.arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.display()));
    for n in names {
        c.arg(root.join("etc/systemd/system").join(n));
    }
    let out = c
        .output()
        .expect("systemd-analyze (apt-get install systemd; scripts/test-deps does)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(repo().join("units").join(name)).unwrap()
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let names = ["vgpuctl-restore.service", "vgpuctl-resume.service"];
    let d = root_with(&names.map(|n| (n, unit(n))));
    let (ok, text) = verify(d.path(), &names);
    assert!(ok, "systemd-analyze verify:\n{text}");
}

#[test]
fn the_verifier_can_fail() {
    let broken = unit("vgpuctl-restore.service")
        .replace("TimeoutStartSec=300", "TimeoutStartSec=soon\nRestartz=1");
    let d = root_with(&[("vgpuctl-restore.service", broken)]);
    let (ok, text) = verify(d.path(), &["vgpuctl-restore.service"]);
    assert!(!ok && text.contains("Restartz"), "{text}");
}

#[test]
fn restore_unit_orders_itself_for_the_boot() {
    let u = unit("vgpuctl-restore.service");
    let has = |l: &str| u.lines().any(|x| x.trim() == l);
    assert!(has("Type=oneshot") && has("RemainAfterExit=yes"));
    assert!(has("ExecStart=/usr/local/sbin/vgpuctl restore"));
    // Either file starts it: older releases kept the pins in the profile copy.
    assert!(has("ConditionPathExists=|/etc/vgpuctl/vgpus.toml"));
    assert!(has("ConditionPathExists=|/etc/vgpuctl/profile.toml"));
    assert!(has("WantedBy=multi-user.target"));
    let after = u.lines().find(|l| l.starts_with("After=")).unwrap();
    for a in ["nvidia-vgpu-mgr.service", "nvidia-vgpud.service"] {
        assert!(after.contains(a), "{after}");
    }
    let before = u.lines().find(|l| l.starts_with("Before=")).unwrap();
    for b in [
        "libvirtd.service",
        "virtqemud.service",
        "libvirt-guests.service",
        "pve-guests.service",
    ] {
        assert!(before.contains(b), "{before}");
    }
    let t: u64 = u
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        t > 120 && t <= 600,
        "bounded, and longer than restore's own 120 s VF wait"
    );
}

/// The restore unit orders only on what it needs, and pulls in what it orders on: an `After=`
/// without a `Wants=` waits for nothing unless another unit starts that one. Never on
/// systemd-udev-settle.service, which systemd-udev-settle.service(8) calls "not recommended";
/// restore waits for each GPU's driver itself, bounded.
#[test]
fn restore_unit_orders_on_what_it_needs_and_pulls_it_in() {
    let u = unit("vgpuctl-restore.service");
    let words = |key: &str| -> Vec<String> {
        u.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect()
    };
    let (after, wants) = (words("After="), words("Wants="));
    assert!(
        !u.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("systemd-udev-settle")),
        "{u}"
    );
    assert!(
        wants.iter().any(|w| w == "nvidia-vgpu-mgr.service"),
        "{wants:?}"
    );
    assert!(
        after.iter().any(|a| a == "systemd-modules-load.service"),
        "{after:?}"
    );
    // Started by the boot whatever we say (sysinit.target), or optional (older drivers only).
    let started_anyway = ["systemd-modules-load.service", "nvidia-vgpud.service"];
    for a in &after {
        assert!(
            wants.contains(a) || started_anyway.contains(&a.as_str()),
            "After={a} is neither pulled in (Wants=) nor started by the boot anyway"
        );
    }
}
