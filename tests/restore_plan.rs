//! `vgpuctl restore` plans from the pins and applies exactly that plan (issue 13 item 7, issue 14
//! items 5 and 7): its dry run lists per GPU the SR-IOV enable, each vGPU's wait and its sysfs
//! write; vendor-specific VFIO vGPUs are never moved and their type id is found by name; every
//! GPU waits at boot for its driver; import's restore shows the writes it makes.

mod common;
use common::*;

fn profile(ty: &str, count: u32) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"all\"\nvgpu_type = \"{ty}\"\ncount = {count}\n"
    ))
}

fn setup(s: &Sim, ty: &str, count: u32) {
    let p = profile(ty, count);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// Reboot with the restore unit off, so the test runs restore itself.
fn reboot_without_the_unit(s: &Sim) {
    let unit = "etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service";
    if s.exists(unit) {
        std::fs::remove_file(s.root().join(unit)).unwrap();
    }
    let r = s.run(&["sim", "reboot"]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn report(s: &Sim) -> serde_json::Value {
    serde_json::from_str(&s.read("run/vgpuctl/restore.json")).unwrap()
}

fn device<'a>(report: &'a serde_json::Value, uuid: &str) -> &'a serde_json::Value {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uuid"] == uuid)
        .unwrap_or_else(|| panic!("{uuid} in {report}"))
}

/// The pins file's `[[vgpus]]` entries as (uuid, type_id, parent) and the text.
fn pins(s: &Sim) -> Vec<(String, String, String)> {
    let v: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    v["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let f = |k: &str| p[k].as_str().unwrap().to_string();
            (f("uuid"), f("type_id"), f("parent"))
        })
        .collect()
}

fn vendor_type(s: &Sim, vf: &str) -> String {
    s.read(&format!(
        "sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"
    ))
    .trim()
    .to_string()
}

#[test]
fn restore_dry_run_shows_every_write_the_restore_makes() {
    let s = Sim::new("a40x8-ready");
    setup(&s, "A40-1B", 2);
    let pinned = pins(&s);
    assert_eq!(pinned.len(), 16);
    reboot_without_the_unit(&s);
    assert!(s.live_vgpus().is_empty());

    let dry = s.run(&["restore", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("(dry run: nothing was changed)"),
        "{dry:?}"
    );
    assert!(s.live_vgpus().is_empty(), "the dry run creates nothing");
    // Per GPU its SR-IOV, then per vGPU the wait for its own VF and the exact write.
    for pf in pinned.iter().map(|p| p.2.clone()) {
        let pf = format!("{}0.0", &pf[..pf.len() - 3]);
        assert!(
            dry.stdout
                .contains(&format!("run: /usr/lib/nvidia/sriov-manage -e {pf}")),
            "{pf}: {dry:?}"
        );
    }
    let mut writes = Vec::new();
    for (uuid, type_id, parent) in &pinned {
        let wait = format!("wait until {parent} lists NVIDIA A40-1B");
        let write = format!(
            "write \"{uuid}\" to /sys/class/mdev_bus/{parent}/mdev_supported_types/{type_id}/create"
        );
        let (w, c) = (dry.stdout.find(&wait), dry.stdout.find(&write));
        assert!(w.is_some() && c.is_some() && w < c, "{write}: {dry:?}");
        writes.push(write);
    }

    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rep = report(&s);
    assert_eq!(rep["ok"], true, "{rep}");
    // Each write the dry run named made its vGPU where it said.
    for (uuid, _, parent) in &pinned {
        let d = device(&rep, uuid);
        assert_eq!(d["state"], "created", "{d}");
        assert_eq!(d["parent"], parent.as_str(), "{d}");
        assert!(
            s.exists(&format!("sys/class/mdev_bus/{parent}/{uuid}"))
                || s.exists(&format!("sys/bus/mdev/devices/{uuid}")),
            "{uuid}"
        );
    }
    assert_eq!(s.live_vgpus().len(), 16);
    // Run again: everything is present, nothing is planned.
    let again = s.run(&["restore", "--dry-run"]);
    assert!(!again.stdout.contains("write \""), "{again:?}");
    assert_eq!(
        again.stdout.matches("present: vGPU").count(),
        16,
        "{again:?}"
    );
}

/// Issue 14 item 7: a vendor-specific VFIO vGPU's VF is its PCI identity to the VM. When that VF
/// is taken (another pin holds it) or gone, the vGPU fails naming the VF; it is never made on
/// another VF.
#[test]
fn a_vendor_vfio_vgpu_is_never_moved_off_its_vf() {
    let s = Sim::new("l40s-vfio-ready");
    setup(&s, "L40S-12Q", 1);
    let pinned = pins(&s);
    let (u1, id, vf1) = pinned[0].clone();
    let (u2, _, vf2) = pinned[1].clone();
    let gpu2 = format!("{}0.0", &vf2[..vf2.len() - 3]);
    let gone = format!("{}07.7", &vf2[..vf2.len() - 4]);
    let taker = "11111111-2222-4333-8444-555555555555";
    let text = s.read("etc/vgpuctl/vgpus.toml").replace(
        &format!("parent = \"{vf2}\""),
        &format!("parent = \"{gone}\""),
    ) + &format!(
        "\n[[vgpus]]\nuuid = \"{taker}\"\ntype_id = \"{id}\"\ntype_name = \"NVIDIA L40S-12Q\"\n\
         parent = \"{vf1}\"\ngpu = \"{}0.0\"\ninterface = \"vendor-vfio\"\n",
        &vf1[..vf1.len() - 3]
    );
    s.write("etc/vgpuctl/vgpus.toml", &text);
    reboot_without_the_unit(&s);

    let r = s.run(&["restore"]);
    assert_eq!(r.code, 1, "{r:?}");
    let rep = report(&s);
    assert_eq!(device(&rep, &u1)["state"], "created", "{rep}");
    for (uuid, vf) in [(taker, &vf1), (u2.as_str(), &gone)] {
        let d = device(&rep, uuid);
        assert_eq!(d["state"], "failed", "{d}");
        let why = d["reason"].as_str().unwrap();
        assert!(
            why.contains(&format!("the VM expects this vGPU at VF {vf}"))
                && why.contains("never moved"),
            "{d}"
        );
        assert!(r.stderr.contains(why), "{r:?}");
    }
    // No other VF of either GPU was given a type.
    for (gpu, keep) in [
        (format!("{}0.0", &vf1[..vf1.len() - 3]), vf1.clone()),
        (gpu2, String::new()),
    ] {
        for f in 4..8 {
            let vf = format!("{}0.{f}", &gpu[..gpu.len() - 3]);
            if vf != keep {
                assert!(
                    matches!(vendor_type(&s, &vf).as_str(), "" | "0"),
                    "{vf} holds {}",
                    vendor_type(&s, &vf)
                );
            }
        }
    }
}

/// Issue 14 item 7: vendor-VFIO type ids are not stable across driver branches; the type written
/// is the id the VF's live list gives the pinned type's name, not the pinned id.
#[test]
fn a_vendor_vfio_type_id_is_found_by_its_name_on_the_vf() {
    let s = Sim::new("l40s-vfio-ready");
    setup(&s, "L40S-12Q", 1);
    let pinned = pins(&s);
    let (uuid, id, vf) = pinned[0].clone();
    // The pins name an id this driver does not use for that type.
    let text = s.read("etc/vgpuctl/vgpus.toml").replacen(
        &format!("type_id = \"{id}\""),
        "type_id = \"977\"",
        1,
    );
    s.write("etc/vgpuctl/vgpus.toml", &text);
    assert!(pins(&s).iter().any(|p| p.0 == uuid && p.1 == "977"));
    reboot_without_the_unit(&s);
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rep = report(&s);
    assert_eq!(device(&rep, &uuid)["state"], "created", "{rep}");
    assert_eq!(vendor_type(&s, &vf), id, "{r:?}");
    // The stale id made the lane observe and plan again, and it said so.
    assert!(r.stderr.contains("planning again (1 of 3)"), "{r:?}");
}

/// An mdev pin's identity is its UUID: when its VF is gone it is made on another free VF of the
/// same GPU, and the report says where.
#[test]
fn an_mdev_vgpu_whose_vf_is_gone_moves_to_a_free_vf_and_says_so() {
    let s = Sim::new("a40x8-ready");
    setup(&s, "A40-1B", 1);
    let (uuid, _, vf) = pins(&s)[0].clone();
    let gone = format!("{}07.7", &vf[..vf.len() - 4]);
    let text = s.read("etc/vgpuctl/vgpus.toml").replace(
        &format!("parent = \"{vf}\""),
        &format!("parent = \"{gone}\""),
    );
    s.write("etc/vgpuctl/vgpus.toml", &text);
    reboot_without_the_unit(&s);
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    let d = device(&report(&s), &uuid).clone();
    assert_eq!(d["state"], "created", "{d}");
    let why = d["reason"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "saved parent {gone} was gone or taken ({gone} is gone); created on"
        )),
        "{d}"
    );
    assert!(s.live_vgpus().contains_key(&uuid));
}

/// Issue 14 item 5: a pre-Ampere GPU's PF is the parent; at boot udev may bind its driver after
/// the restore starts. Restore waits (bounded) for its driver and type listing.
#[test]
fn a_pf_parent_waits_for_its_driver_at_boot() {
    let s = Sim::new("t4x2-ready");
    setup(&s, "T4-4Q", 2);
    let saved = s.live_vgpus();
    assert_eq!(saved.len(), 4);
    s.run(&["--sim-opt", "driver_delay_ms=1500", "sim", "info"]);
    // The unit runs restore at boot, before udev binds the GPUs.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    let rep = report(&s);
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(s.live_vgpus(), saved);
    // Without the unit, by hand right after the boot: the plan names the wait.
    reboot_without_the_unit(&s);
    let dry = s.run(&["restore", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("wait until 0000:3b:00.0 lists GRID T4-4Q"),
        "{dry:?}"
    );
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.live_vgpus(), saved);
}

/// Issue 13 item 7: import's restore is the same plan: its dry run shows the exact writes the
/// import then makes.
#[test]
fn import_dry_run_shows_the_writes_the_import_makes() {
    let s = Sim::new("a40x8-ready");
    // First SR-IOV alone, so that the VFs exist when the vGPU lines are imported.
    s.write(
        "etc/rc.local",
        "#!/bin/sh -e\n/usr/lib/nvidia/sriov-manage -e 0000:e8:00.0\nexit 0\n",
    );
    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    let u1 = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    let u2 = "3c1e0d52-6f7a-4b8e-9d10-2a3b4c5d6e7f";
    let c = |vf: &str| format!("/sys/class/mdev_bus/{vf}/mdev_supported_types/nvidia-555/create");
    s.write(
        "etc/rc.local",
        &format!(
            "#!/bin/sh -e\necho {u1} > {}\necho {u2} > {}\nexit 0\n",
            c("0000:e8:00.4"),
            c("0000:e8:00.5")
        ),
    );
    let writes = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("- write \""))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let dry = s.run(&["import", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let planned = writes(&dry.stdout);
    for (u, vf) in [(u1, "0000:e8:00.4"), (u2, "0000:e8:00.5")] {
        let w = format!("write \"{u}\" to {}", c(vf));
        assert!(planned.iter().any(|p| p.contains(&w)), "{w}: {dry:?}");
    }
    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(writes(&r.stdout), planned, "{r:?}");
    let live = s.live_vgpus();
    assert!(live.contains_key(u1) && live.contains_key(u2), "{live:?}");
}
