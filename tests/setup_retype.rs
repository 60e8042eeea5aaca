//! Issue 17 item 3: a profile that changes a GPU's vGPU type removes the pinned vGPUs of the old
//! type, each named in the plan, under the consent a lowered count needs (`--allow-remove`
//! unattended), then creates and pins the new ones; a vGPU a VM uses is never touched; on a
//! mixed-size GPU only the type that changed is removed.

mod common;
use common::*;

fn one_type(gpu: &str, ty: &str, count: u32) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"{gpu}\"\nvgpu_type = \"{ty}\"\ncount = {count}\n"
    ))
}

/// (uuid, parent, type name) of every pin.
fn pins(s: &Sim) -> Vec<(String, String, String)> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    let mut out: Vec<_> = t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = |k: &str| v[k].as_str().unwrap().to_string();
            (f("uuid"), f("parent"), f("type_name"))
        })
        .collect();
    out.sort();
    out
}

fn setup_with(s: &Sim, p: &tempfile::NamedTempFile, extra: &[&str]) -> Run {
    let mut args = vec!["setup", "--profile", p.path().to_str().unwrap(), "--yes"];
    args.extend_from_slice(extra);
    s.run(&args)
}

fn dry_run(s: &Sim, p: &tempfile::NamedTempFile) -> Run {
    s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ])
}

/// Make pinned vGPU (`uuid` on VF `parent`) in use: a process (QEMU) holds its VFIO group open.
/// A vendor-VFIO vGPU is the VF itself, in the VF's group; an mdev device has an IOMMU group of
/// its own on a real kernel (`/sys/bus/mdev/devices/UUID/iommu_group`), which the simulator
/// does not lay out, so the test links one (group 900, unused by the simulated host).
fn hold_open(s: &Sim, uuid: &str, parent: &str) {
    let mdev = s.root().join(format!("sys/bus/mdev/devices/{uuid}"));
    let dev = if mdev.is_dir() {
        std::os::unix::fs::symlink(
            "../../../../kernel/iommu_groups/900",
            mdev.join("iommu_group"),
        )
        .unwrap();
        mdev
    } else {
        s.root().join(format!("sys/bus/pci/devices/{parent}"))
    };
    let group = std::fs::read_link(dev.join("iommu_group")).unwrap();
    let g = group.file_name().unwrap().to_str().unwrap().to_string();
    let dir = s.root().join("proc/4242/fd");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(format!("/dev/vfio/{g}"), dir.join("17")).unwrap();
}

/// From 2 x OLD to 4 x NEW on one GPU: refused unattended without --allow-remove (nothing
/// changed), the dry run names each removal, and with consent the pins hold only new UUIDs of
/// the new type, live; a second run has nothing to do.
fn change_type(model: &str, gpu: &str, old: &str, new: &str) {
    let s = Sim::new(model);
    let r = setup_with(&s, &one_type(gpu, old, 2), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = pins(&s);
    assert_eq!(before.len(), 2, "{before:?}");

    let p = one_type(gpu, new, 4);
    let dry = dry_run(&s, &p);
    assert_eq!(dry.code, 0, "{dry:?}");
    for (uuid, parent, _) in &before {
        let named = dry
            .stdout
            .lines()
            .any(|l| l.contains("remove and unpin") && l.contains(uuid) && l.contains(parent));
        assert!(named, "the dry run names the removal of {uuid}: {dry:?}");
    }
    assert!(dry.stdout.contains(&format!("4 x {new}")), "{dry:?}");

    let hash = s.hash();
    let r = setup_with(&s, &p, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--allow-remove"), "{r:?}");
    assert!(before.iter().all(|(u, _, _)| r.stderr.contains(u)), "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");

    let r = setup_with(&s, &p, &["--allow-remove"]);
    assert_eq!(r.code, 0, "{r:?}");
    let after = pins(&s);
    assert_eq!(after.len(), 4, "{after:?}");
    for (uuid, _, ty) in &after {
        assert!(ty.ends_with(new), "{after:?}");
        assert!(
            !before.iter().any(|(u, _, _)| u == uuid),
            "a new UUID: {after:?}"
        );
    }
    let live = s.live_vgpus();
    assert_eq!(live.len(), 4, "{live:?}");
    assert!(live.values().all(|t| t.ends_with(new)), "{live:?}");
    let again = setup_with(&s, &p, &[]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

#[test]
fn a40_mdev_changes_from_24q_to_12q() {
    change_type("a40x8-ready", "0000:67:00.0", "A40-24Q", "A40-12Q");
}

#[test]
fn l40s_vendor_vfio_changes_from_24q_to_12q() {
    change_type("l40s-vfio-ready", "0000:41:00.0", "L40S-24Q", "L40S-12Q");
}

/// A vGPU a VM uses is never removed for a change of type: refused with exit 2 naming it and
/// why, even with --allow-remove, and nothing on the host changes.
#[test]
fn a_vgpu_in_use_blocks_the_change_of_type() {
    for (model, gpu, old, new) in [
        ("a40x8-ready", "0000:67:00.0", "A40-24Q", "A40-12Q"),
        ("l40s-vfio-ready", "0000:41:00.0", "L40S-24Q", "L40S-12Q"),
    ] {
        let s = Sim::new(model);
        let r = setup_with(&s, &one_type(gpu, old, 2), &[]);
        assert_eq!(r.code, 0, "{r:?}");
        let before = pins(&s);
        hold_open(&s, &before[1].0, &before[1].1);
        let hash = s.hash();
        let r = setup_with(&s, &one_type(gpu, new, 4), &["--allow-remove"]);
        assert_eq!(r.code, 2, "{model}: {r:?}");
        assert!(r.stderr.contains("a VM is using"), "{r:?}");
        assert!(
            r.stderr.contains(&before[1].0),
            "names the vGPU in use: {r:?}"
        );
        assert_eq!(s.hash(), hash, "{model}: nothing changed");
        assert_eq!(pins(&s), before);
    }
}

/// On a mixed-size GPU only the entry whose type changed is redone: the vGPU of the type still
/// asked keeps its UUID and parent.
#[test]
fn on_a_mixed_size_gpu_only_the_changed_type_is_redone() {
    let s = Sim::new("a40x8-ready");
    let gpu = "0000:67:00.0";
    let mixed = |second: &str| {
        profile_file(&format!(
            "[[gpus]]\nselect = \"{gpu}\"\nvgpu_type = \"A40-12Q\"\ncount = 1\n\n\
             [[gpus]]\nselect = \"{gpu}\"\nvgpu_type = \"{second}\"\ncount = 2\n"
        ))
    };
    let r = setup_with(&s, &mixed("A40-6Q"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = pins(&s);
    let kept: Vec<_> = before
        .iter()
        .filter(|p| p.2.ends_with("A40-12Q"))
        .cloned()
        .collect();
    assert_eq!((before.len(), kept.len()), (3, 1), "{before:?}");

    let p = mixed("A40-4Q");
    let dry = dry_run(&s, &p);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        !dry.stdout.contains(&kept[0].0),
        "the kept one is not touched: {dry:?}"
    );
    let r = setup_with(&s, &p, &["--allow-remove"]);
    assert_eq!(r.code, 0, "{r:?}");
    let after = pins(&s);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.contains(&kept[0]), "{after:?}");
    let fours = after.iter().filter(|p| p.2.ends_with("A40-4Q")).count();
    assert_eq!(fours, 2, "{after:?}");
}
