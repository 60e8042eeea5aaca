//! Persistent vfio-pci bindings (recorded-behaviour.md §7): a GPU given to vfio-pci by the kernel
//! command line, modprobe.d, a driverctl override or a udev rule goes back to vfio-pci at every
//! boot, whatever a runtime unbind did. `check` reports each source with its fix; setup
//! neutralises it (with a backup) before its reboot, and after the reboot the GPU is on nvidia.

mod common;
use common::*;

fn driver(s: &Sim, pf: &str) -> String {
    std::fs::read_link(s.root().join(format!("sys/bus/pci/devices/{pf}/driver")))
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A host whose admin persisted the binding `kind`, booted with it.
fn bound(model: &str, kind: &str, pfs: &[&str]) -> Sim {
    let s = Sim::new(model);
    let r = s.run(&["--sim-opt", &format!("vfio_persist={kind}"), "sim", "info"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = s.run(&["sim", "reboot"]);
    assert_eq!(r.code, 0, "{r:?}");
    for pf in pfs {
        assert_eq!(driver(&s, pf), "vfio-pci", "{kind}: {pf}");
    }
    s
}

/// check names the source; setup fixes it; after the reboot the GPUs are on nvidia and hold
/// their vGPUs; check is quiet about it.
fn released(model: &str, prof: &str, kind: &str, file: &str, pfs: &[&str], vgpus: usize) -> Sim {
    let s = bound(model, kind, pfs);
    let c = s.run(&["check"]);
    assert!(
        c.stdout.contains(file) && c.stdout.contains("to vfio-pci at every boot"),
        "{kind}: {c:?}"
    );
    assert!(
        c.stdout.contains("`vgpuctl setup`"),
        "a fix is named: {c:?}"
    );
    let prof = repo().join("profiles").join(prof);
    let runs = s.setup_to_end(&prof);
    assert_eq!(runs.last().unwrap().code, 0, "{kind}: {runs:?}");
    assert!(
        runs[0].stdout.contains(file),
        "the plan shows the edit: {:?}",
        runs[0]
    );
    // The edit kept a backup of what the admin wrote.
    let backup = format!("var/lib/vgpuctl/backups{file}");
    assert!(s.exists(&backup), "{kind}: no backup {backup}");
    for pf in pfs {
        assert_eq!(driver(&s, pf), "nvidia", "{kind}: {pf}");
    }
    assert_eq!(s.live_vgpus().len(), vgpus, "{kind}");
    // Another boot keeps them on nvidia: the source is gone, not only unbound.
    let r = s.run(&["sim", "reboot"]);
    assert_eq!(r.code, 0, "{r:?}");
    for pf in pfs {
        assert_eq!(driver(&s, pf), "nvidia", "{kind} after another boot: {pf}");
    }
    assert_eq!(s.live_vgpus().len(), vgpus, "{kind}: restored at boot");
    let c = s.run(&["check"]);
    // The binding's own finding is gone (on Proxmox, check's line on who does what at boot
    // says "at every boot" too).
    assert!(
        !c.stdout.contains("to vfio-pci at every boot"),
        "{kind}: {c:?}"
    );
    s
}

const T4: &[&str] = &["0000:3b:00.0", "0000:af:00.0"];

#[test]
fn modprobe_options_and_softdep() {
    let s = released(
        "t4x2",
        "t4.toml",
        "modprobe",
        "/etc/modprobe.d/vfio.conf",
        T4,
        8,
    );
    let conf = s.read("etc/modprobe.d/vfio.conf");
    assert!(conf.contains("#options vfio-pci ids=10de:1eb8"), "{conf}");
    assert!(conf.contains("#softdep nvidia pre: vfio-pci"), "{conf}");
}

#[test]
fn driverctl_override() {
    let s = released(
        "t4x2",
        "t4.toml",
        "driverctl",
        "/etc/driverctl.d/pci-0000:3b:00.0",
        T4,
        8,
    );
    assert_eq!(s.read("etc/driverctl.d/pci-0000:af:00.0"), "");
}

#[test]
fn udev_rule_setting_driver_override() {
    let s = released(
        "t4x2",
        "t4.toml",
        "udev",
        "/etc/udev/rules.d/99-vfio.rules",
        T4,
        8,
    );
    let rules = s.read("etc/udev/rules.d/99-vfio.rules");
    assert!(rules.contains("#ACTION==\"add\""), "{rules}");
}

#[test]
fn kernel_command_line_grub() {
    let s = released("t4x2", "t4.toml", "cmdline", "/etc/default/grub", T4, 8);
    assert!(!s.read("etc/default/grub").contains("vfio-pci.ids"));
    assert!(!s.read("proc/cmdline").contains("vfio-pci.ids"));
}

#[test]
fn kernel_command_line_proxmox() {
    let s = released(
        "proxmox-l4",
        "proxmox-l4.toml",
        "cmdline",
        "/etc/kernel/cmdline",
        &["0000:01:00.0"],
        2,
    );
    let kc = s.read("etc/kernel/cmdline");
    assert!(
        kc.starts_with("root=ZFS=") && !kc.contains("vfio-pci.ids"),
        "{kc}"
    );
}

#[test]
fn kernel_command_line_grubby() {
    let s = bound("rhel-a10", "cmdline", &["0000:17:00.0"]);
    let prof = repo().join("profiles").join("rhel-a10.toml");
    let runs = s.setup_to_end(&prof);
    assert!(
        runs[0]
            .stdout
            .contains("--remove-args=vfio-pci.ids=10de:2236"),
        "{:?}",
        runs[0]
    );
    assert_eq!(driver(&s, "0000:17:00.0"), "nvidia");
    assert!(!s.read("proc/cmdline").contains("vfio-pci.ids"));
}

/// Ids of other devices on the same line stay: only the GPUs being set up are released.
#[test]
fn other_devices_ids_are_kept() {
    let s = bound("t4x2", "modprobe", T4);
    s.write(
        "etc/modprobe.d/vfio.conf",
        "options vfio-pci ids=10de:1eb8,1000:0097 disable_vga=1\n",
    );
    let prof = repo().join("profiles").join("t4.toml");
    let runs = s.setup_to_end(&prof);
    assert_eq!(runs.last().unwrap().code, 0);
    let conf = s.read("etc/modprobe.d/vfio.conf");
    assert!(
        conf.contains("\noptions vfio-pci ids=1000:0097 disable_vga=1\n"),
        "{conf}"
    );
    assert_eq!(driver(&s, "0000:3b:00.0"), "nvidia");
}

/// With the NVIDIA driver loaded, the GPUs go back to it at once (the override cleared, unbound,
/// probed) and the fixed source keeps them there at the next boot: no reboot needed.
#[test]
fn a_ready_host_gets_its_gpus_back_without_a_reboot() {
    for kind in ["udev", "driverctl", "modprobe", "cmdline"] {
        let s = bound("t4x2-ready", kind, T4);
        let prof = repo().join("profiles").join("t4.toml");
        let r = s.run(&["setup", "--profile", prof.to_str().unwrap(), "--yes"]);
        assert_eq!(r.code, 0, "{kind}: {r:?}");
        for pf in T4 {
            assert_eq!(driver(&s, pf), "nvidia", "{kind}: {pf}");
        }
        assert_eq!(s.live_vgpus().len(), 8, "{kind}");
        let rb = s.run(&["sim", "reboot"]);
        assert_eq!(rb.code, 0, "{rb:?}");
        for pf in T4 {
            assert_eq!(driver(&s, pf), "nvidia", "{kind} after the boot: {pf}");
        }
        assert_eq!(s.live_vgpus().len(), 8, "{kind}: restored at boot");
    }
}

/// A run killed at any point of releasing the kernel command line (the GRUB defaults' write,
/// update-grub, the rebinding): the next run finishes it, and the boot after gives the GPUs to
/// nvidia with their vGPUs.
#[test]
fn a_run_killed_while_releasing_the_command_line_is_finished_by_the_next() {
    let prof = repo().join("profiles").join("t4.toml");
    let setup = ["setup", "--profile", prof.to_str().unwrap(), "--yes"];
    for n in 1..=24 {
        let s = bound("t4x2-ready", "cmdline", T4);
        let killed = s
            .cmd()
            .env("VGPUCTL_FAULT_KILL_AT", n.to_string())
            .args(setup)
            .output()
            .unwrap();
        assert!(killed.status.code() != Some(2), "kill at {n}: {killed:?}");
        let r = s.run(&setup);
        assert_eq!(r.code, 0, "after a kill at {n}: {r:?}");
        let rb = s.run(&["sim", "reboot"]);
        assert_eq!(rb.code, 0, "{rb:?}");
        assert!(
            !s.read("proc/cmdline").contains("vfio-pci.ids"),
            "kill at {n}: {}",
            s.read("proc/cmdline")
        );
        for pf in T4 {
            assert_eq!(driver(&s, pf), "nvidia", "kill at {n}: {pf}");
        }
        assert_eq!(
            s.live_vgpus().len(),
            8,
            "kill at {n}: restored at boot: {}",
            s.read("run/vgpuctl/restore.json")
        );
    }
}
