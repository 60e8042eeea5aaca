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

fn vendor_attr(vf: &str) -> String {
    format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")
}

/// The pinned vGPUs (parent, type name, type id, interface) in vgpus.toml.
fn pinned_vendor(s: &Sim) -> Vec<(String, String, String, String)> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    let mut v: Vec<(String, String, String, String)> = t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (f("parent"), f("type_name"), f("type_id"), f("interface"))
        })
        .collect();
    v.sort();
    v
}

/// Issue 14 item 9: an L40S host on kernel 6.8 (vendor-specific VFIO) whose rc.local enables
/// SR-IOV and writes type ids to the VFs' `nvidia/current_vgpu_type`, in the three ways such
/// lines are written. The ids are resolved by name on the host and pinned with both; the dry run
/// lists what the import pins; only the imported lines leave rc.local; restore brings them back.
#[test]
fn vendor_vfio_lines_are_imported_by_name() {
    let s = Sim::new("l40s-vfio-ready");
    let (a, b, c) = ("0000:41:00.4", "0000:41:00.5", "0000:41:00.6");
    let rc = format!(
        "#!/bin/bash\n\
         # vGPUs for the VDI pool (L40S-12Q = id 1153 on this driver)\n\
         /usr/lib/nvidia/sriov-manage -e 0000:41:00.0\n\
         sleep 5\n\
         echo 1153 > {}\n\
         echo 1153 | tee {} > /dev/null\n\
         sudo sh -c 'echo 1153 > {}' && logger -t vgpu ready\n\
         exit 0\n",
        vendor_attr(a),
        vendor_attr(b),
        vendor_attr(c)
    );
    s.write("etc/rc.local", &rc);
    let dry = s.run(&["import", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(s.read("etc/rc.local"), rc, "dry run changes nothing");
    let listed = listed_vgpus(&dry.stdout);
    let parents: Vec<&str> = listed.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(parents.len(), 3, "{dry:?}");
    for p in [a, b, c] {
        assert!(parents.contains(&p), "{dry:?}");
    }

    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (_, later) = r
        .stdout
        .split_once("[1/1] Enable SR-IOV")
        .unwrap_or_else(|| panic!("one SR-IOV step first: {r:?}"));
    assert_eq!(
        listed_vgpus(later),
        listed,
        "the dry run named these: {r:?}"
    );
    let want: Vec<(String, String, String, String)> = [a, b, c]
        .iter()
        .map(|vf| {
            (
                vf.to_string(),
                "NVIDIA L40S-12Q".to_string(),
                "1153".to_string(),
                "vendor-vfio".to_string(),
            )
        })
        .collect();
    assert_eq!(pinned_vendor(&s), want);
    for vf in [a, b, c] {
        assert_eq!(s.read(&vendor_attr(vf)[1..]).trim(), "1153", "{r:?}");
    }
    let after = s.read("etc/rc.local");
    let expect = format!(
        "#!/bin/bash\n\
         # vGPUs for the VDI pool (L40S-12Q = id 1153 on this driver)\n\
         # vgpuctl: /usr/lib/nvidia/sriov-manage -e 0000:41:00.0\n\
         sleep 5\n\
         # vgpuctl: echo 1153 > {}\n\
         # vgpuctl: echo 1153 | tee {} > /dev/null\n\
         grep -qvx 0 {} && logger -t vgpu ready\n\
         exit 0\n",
        vendor_attr(a),
        vendor_attr(b),
        vendor_attr(c)
    );
    assert_eq!(after, expect, "{r:?}");
    sh_n(&s.root().join("etc/rc.local"));

    // Nothing left to import; a second run changes nothing and reports nothing.
    let again = s.run(&["import", "--dry-run"]);
    assert!(!again.stdout.contains("WARNING"), "{again:?}");
    assert_eq!(s.read("etc/rc.local"), expect);

    // After a reboot, restore brings them back on the same VFs.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    for vf in [a, b, c] {
        assert_eq!(s.read(&vendor_attr(vf)[1..]).trim(), "1153", "{rb:?}");
    }
}

/// An id that names no type this VF lists (it came from another driver branch) is reported by
/// the dry run and the import alike, and its line is left as it is.
#[test]
fn a_vendor_vfio_id_unknown_here_is_reported_and_left() {
    let s = Sim::new("l40s-vfio-ready");
    let r = s.run(&[
        "setup",
        "--profile",
        profile_file("[[gpus]]\nselect = \"0000:41:00.0\"\nvgpu_type = \"L40S-12Q\"\ncount = 1\n")
            .path()
            .to_str()
            .unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let vf = "0000:41:00.7";
    let rc = format!("#!/bin/sh\necho 1999 > {}\nexit 0\n", vendor_attr(vf));
    s.write("etc/rc.local", &rc);
    for args in [&["import", "--dry-run"][..], &["import"][..]] {
        let out = s.run(args);
        assert!(
            out.stdout.contains("/etc/rc.local:2:")
                && out
                    .stdout
                    .contains("type id 1999 is not in 0000:41:00.7's creatable_vgpu_types")
                && out.stdout.contains("NVIDIA L40S-12Q"),
            "{out:?}"
        );
        assert_eq!(s.read("etc/rc.local"), rc, "{out:?}");
        assert_eq!(s.read(&vendor_attr(vf)[1..]).trim(), "0");
    }
}

/// The usual case: rc.local ran at this boot, so its VFs already hold the types its lines write.
/// The import pins them (the name read from a VF of the same GPU that still lists the id, as a
/// holding VF lists none) and writes nothing to those VFs again; a line whose VF holds another
/// type than it writes is reported and left.
#[test]
fn vendor_vfio_lines_that_already_ran_are_pinned_without_writing_again() {
    let s = Sim::new("l40s-vfio-ready");
    let (a, b, c) = ("0000:41:00.4", "0000:41:00.5", "0000:41:00.6");
    // What rc.local did at boot, through the simulated kernel.
    let host = vgpuctl_sim::open(s.root(), "l40s-vfio-ready", &[]).unwrap();
    let out = host
        .run(&vgpuctl_sim::Cmd::new("/usr/lib/nvidia/sriov-manage").args(["-e", "0000:41:00.0"]))
        .unwrap();
    assert!(out.success(), "{out:?}");
    for vf in [a, b, c] {
        let attr = &vendor_attr(vf)[1..];
        let mut tries = 0;
        // The VF's type listing may appear a moment after sriov-manage returns.
        while host.write_attr(attr, "1153").is_err() {
            tries += 1;
            assert!(tries < 200, "{vf} never took a type");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    drop(host);
    let rc = format!(
        "#!/bin/sh\n\
         /usr/lib/nvidia/sriov-manage -e 0000:41:00.0\n\
         echo 1153 > {}\n\
         echo 1153 > {}\n\
         echo 1147 > {}\n\
         exit 0\n",
        vendor_attr(a),
        vendor_attr(b),
        vendor_attr(c)
    );
    s.write("etc/rc.local", &rc);
    let dry = s.run(&["import", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains(&format!(
            "VF {c} holds type id 1153 now, and the line writes 1147"
        )),
        "{dry:?}"
    );
    let r = s.run(&["import"]);
    assert_eq!(r.code, 1, "the .6 line is reported: {r:?}");
    assert_eq!(listed_vgpus(&r.stdout), listed_vgpus(&dry.stdout), "{r:?}");
    let want: Vec<(String, String, String, String)> = [a, b]
        .iter()
        .map(|vf| {
            (
                vf.to_string(),
                "NVIDIA L40S-12Q".to_string(),
                "1153".to_string(),
                "vendor-vfio".to_string(),
            )
        })
        .collect();
    assert_eq!(pinned_vendor(&s), want, "{r:?}");
    assert!(
        !r.stdout.contains("failed") || r.stdout.contains("0 failed"),
        "{r:?}"
    );
    let after = s.read("etc/rc.local");
    assert!(after.contains(&format!("# vgpuctl: echo 1153 > {}", vendor_attr(a))));
    assert!(
        after.contains(&format!("\necho 1147 > {}\n", vendor_attr(c))),
        "{after}"
    );
}
