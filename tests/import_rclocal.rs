//! `vgpuctl import` on a simulated host: rc.local keeps running what it did, minus the commands
//! the restore unit took over; every changed line is shown; the result is valid shell.

mod common;
use common::*;

const U1: &str = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
const U2: &str = "3c1e0d52-6f7a-4b8e-9d10-2a3b4c5d6e7f";
const MISSING: &str = "0b6e1a4c-33c8-4c5f-9a65-0d8f3c1c1a11";

fn create(parent: &str, ty: &str) -> String {
    format!("/sys/class/mdev_bus/{parent}/mdev_supported_types/{ty}/create")
}

fn sh_n(path: &std::path::Path) {
    let out = std::process::Command::new("/bin/sh")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn glued_commands_survive_import() {
    let s = Sim::new("a40x8-ready");
    let c1 = create("0000:e8:00.4", "nvidia-555");
    let c2 = create("0000:e8:00.5", "nvidia-555");
    let missing = create("0000:e8:01.0", "nvidia-999");
    let rc = format!(
        "#!/bin/sh -e\n\
         /usr/lib/nvidia/sriov-manage -e ALL; mount /data\n\
         modprobe vfio_pci; echo {U1} > {c1}\n\
         echo {U2} > {c2} && start-my-vms.sh\n\
         echo {MISSING} > {missing}; logger kept\n\
         if true; then\n  echo {MISSING} > {c1}\nfi\n\
         exit 0\n"
    );
    s.write("etc/rc.local", &rc);
    let dry = s.run(&["import", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(s.read("etc/rc.local"), rc, "dry run changes nothing");
    assert!(
        dry.stdout.contains("Would change /etc/rc.local:")
            && dry
                .stdout
                .contains("line 2: /usr/lib/nvidia/sriov-manage -e ALL; mount /data")
            && dry.stdout.contains("-> mount /data"),
        "{dry:?}"
    );
    assert!(
        dry.stdout.contains("/etc/rc.local:7: not imported") && dry.stdout.contains("inside an if"),
        "{dry:?}"
    );

    let r = s.run(&["import"]);
    // The nvidia-999 line cannot be imported: reported, exit 1.
    assert_eq!(r.code, 1, "{r:?}");
    let after = s.read("etc/rc.local");
    let want = format!(
        "#!/bin/sh -e\n\
         mount /data\n\
         modprobe vfio_pci;\n\
         [ -e /sys/bus/mdev/devices/{U2} ] && start-my-vms.sh\n\
         echo {MISSING} > {missing}; logger kept\n\
         if true; then\n  echo {MISSING} > {c1}\nfi\n\
         exit 0\n"
    );
    assert_eq!(after, want, "{r:?}");
    sh_n(&s.root().join("etc/rc.local"));
    for (n, before, after) in [
        (
            3,
            format!("modprobe vfio_pci; echo {U1} > {c1}"),
            "modprobe vfio_pci;".to_string(),
        ),
        (
            4,
            format!("echo {U2} > {c2} && start-my-vms.sh"),
            format!("[ -e /sys/bus/mdev/devices/{U2} ] && start-my-vms.sh"),
        ),
    ] {
        assert!(
            r.stdout
                .contains(&format!("line {n}: {before}\n       -> {after}\n")),
            "{r:?}"
        );
    }
    assert!(
        r.stdout.contains("Changed 3 line(s) of /etc/rc.local"),
        "{r:?}"
    );
    let live = s.live_vgpus();
    assert!(live.contains_key(U1) && live.contains_key(U2), "{live:?}");
    // The unit runs before rc.local, so the tests left in it see the vGPUs.
    let unit = s.read("etc/systemd/system/vgpuctl-restore.service");
    assert!(
        unit.lines()
            .any(|l| l.starts_with("Before=") && l.contains("rc-local.service")),
        "{unit}"
    );
    // Importing again changes nothing more in rc.local.
    let again = s.run(&["import"]);
    assert_eq!(s.read("etc/rc.local"), want, "{again:?}");
}

/// The vGPU items (UUID, parent) a run of import lists under "Importing into ...".
fn listed_vgpus(stdout: &str) -> std::collections::BTreeSet<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  vGPU "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let on = words.iter().position(|w| *w == "on").unwrap();
            (words[0].to_string(), words[on + 1].to_string())
        })
        .collect()
}

/// The seed's rc.local (sriov-manage -e, then echo UUID > .../create on VFs that exist only once
/// SR-IOV is on): the dry run shows the SR-IOV step and every vGPU the real run then creates and
/// pins, as the phase after the wait for the VFs; nothing is reported missing.
#[test]
fn dry_run_and_import_agree_on_a_seed_style_rc_local() {
    let s = Sim::new("a40x8-ready");
    let c1 = create("0000:e8:00.4", "nvidia-555");
    let c2 = create("0000:e8:00.5", "nvidia-555");
    let rc = format!(
        "#!/bin/sh -e\n\
         /usr/lib/nvidia/sriov-manage -e 0000:e8:00.0\n\
         echo {U1} > {c1}\n\
         echo {U2} > {c2}\n\
         exit 0\n"
    );
    s.write("etc/rc.local", &rc);
    let dry = s.run(&["import", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(s.read("etc/rc.local"), rc, "dry run changes nothing");
    assert!(!dry.stdout.contains("does not exist"), "{dry:?}");
    assert!(
        dry.stdout.contains("Enable SR-IOV on") && dry.stdout.contains("0000:e8:00.0"),
        "the dry run shows the SR-IOV step: {dry:?}"
    );
    assert!(
        dry.stdout.contains("After the VFs of 0000:e8:00.0"),
        "{dry:?}"
    );
    let want: std::collections::BTreeSet<(String, String)> = [
        (U1.to_string(), "0000:e8:00.4".to_string()),
        (U2.to_string(), "0000:e8:00.5".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(listed_vgpus(&dry.stdout), want, "{dry:?}");

    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The real run shows the same first plan, then the phase it planned after the wait.
    let (first, later) = r
        .stdout
        .split_once("[1/1] Enable SR-IOV")
        .unwrap_or_else(|| panic!("one SR-IOV step first: {r:?}"));
    assert_eq!(listed_vgpus(first), want, "{r:?}");
    assert_eq!(listed_vgpus(later), want, "{r:?}");
    let dry_steps: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.contains(". Enable SR-IOV"))
        .collect();
    let real_steps: Vec<&str> = first
        .lines()
        .filter(|l| l.contains(". Enable SR-IOV"))
        .collect();
    assert_eq!(dry_steps, real_steps, "{r:?}");
    let live = s.live_vgpus();
    let profile = s.read("etc/vgpuctl/vgpus.toml");
    for (u, _) in &want {
        assert_eq!(
            live.get(u).map(String::as_str),
            Some("NVIDIA A40-1B"),
            "{live:?}"
        );
        assert!(profile.contains(u.as_str()), "{profile}");
    }
    assert_eq!(live.len(), want.len(), "{live:?}");
    assert!(
        r.stdout.contains("Changed 3 line(s) of /etc/rc.local"),
        "{r:?}"
    );
}
