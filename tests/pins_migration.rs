//! Issue 13 item 4: pins live in /etc/vgpuctl/vgpus.toml. A host set up by the release before
//! keeps working: the first mutating run moves its pins out of /etc/vgpuctl/profile.toml.
//!
//! How the old host is made (honestly): the vgpuctl-owned files under `tests/fixtures/
//! pins-migration/` are the bytes the previous release (3945af4) wrote on a simulated A40 host
//! (setup with fixed UUIDs, then an rc.local import; see the README there). The rest of the host
//! (the simulated kernel's vGPUs, the installed binary, the enabled unit) is made here by the
//! same steps run with this binary, since the simulator did not change; then the vgpuctl files
//! are replaced by the old ones and vgpus.toml removed, which leaves exactly the old layout.

mod common;
use common::*;

const FIX: &str = "tests/fixtures/pins-migration";
const UUIDS: [&str; 3] = [
    "6a1f0c3e-2b4d-4e8f-9a01-b2c3d4e5f601",
    "6a1f0c3e-2b4d-4e8f-9a01-b2c3d4e5f602",
    "6a1f0c3e-2b4d-4e8f-9a01-b2c3d4e5f603",
];
const RC_LOCAL: &str = "#!/bin/sh -e\n\
/usr/lib/nvidia/sriov-manage -e 0000:67:00.0\n\
/usr/lib/nvidia/sriov-manage -e 0000:68:00.0\n\
echo 6a1f0c3e-2b4d-4e8f-9a01-b2c3d4e5f603 > /sys/class/mdev_bus/0000:67:00.4/mdev_supported_types/nvidia-566/create\n\
exit 0\n";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo().join(FIX).join(name)).unwrap()
}

fn profile() -> tempfile::NamedTempFile {
    profile_file(&fixture("setup-profile.toml"))
}

/// A simulated host in the previous release's layout, with its vGPUs live.
fn old_host(p: &tempfile::NamedTempFile) -> Sim {
    let s = Sim::new("a40x8-ready");
    s.write(
        "etc/yunion/host.conf",
        "region: r0\nnvidia_vgpu_pfs:\n- 00:00.0\n",
    );
    s.setup_to_end(p.path());
    s.write("etc/rc.local", RC_LOCAL);
    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The previous release's own files.
    std::fs::remove_file(s.root().join("etc/vgpuctl/vgpus.toml")).unwrap();
    s.write("etc/vgpuctl/profile.toml", &fixture("profile.toml"));
    s.write("var/lib/vgpuctl/state.toml", &fixture("state.toml"));
    s.write(
        "etc/systemd/system/vgpuctl-restore.service",
        &fixture("vgpuctl-restore.service"),
    );
    s
}

fn drift(s: &Sim) -> Vec<serde_json::Value> {
    s.json(&["status", "--json"])["drift"]
        .as_array()
        .unwrap()
        .clone()
}

fn pinned(s: &Sim) -> Vec<String> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["uuid"].as_str().unwrap().to_string())
        .collect()
}

/// The layout after the move: every pin (and the SR-IOV PFs) in vgpus.toml, once; the profile
/// copy keeps the operator's request and no pins.
fn assert_moved(s: &Sim) {
    let mut pins = pinned(s);
    pins.sort();
    assert_eq!(pins, UUIDS, "{}", s.read("etc/vgpuctl/vgpus.toml"));
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    let sriov: Vec<&str> = t["sriov"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(sriov, ["0000:67:00.0", "0000:68:00.0"]);
    let v = &t["vgpus"].as_array().unwrap()[0];
    for k in ["uuid", "gpu", "parent", "type_name", "type_id", "interface"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    let copy: toml::Value = toml::from_str(&s.read("etc/vgpuctl/profile.toml")).unwrap();
    assert!(
        copy.get("vgpus").is_none() && copy.get("sriov").is_none(),
        "{copy}"
    );
    assert_eq!(copy["gpus"][0]["select"].as_str(), Some("0000:e8:00.0"));
    assert!(copy.get("cloudpods").is_some(), "{copy}");
}

fn assert_all_live(s: &Sim) {
    let live = s.live_vgpus();
    for u in UUIDS {
        assert!(live.contains_key(u), "{u} not back: {live:?}");
    }
}

#[test]
fn old_host_restore_then_setup_moves_the_pins() {
    let p = profile();
    let s = old_host(&p);
    // Read-only commands read the old location and write nothing.
    let before = s.hash();
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
    let e = s.run(&["export"]);
    assert_eq!(e.code, 0, "{e:?}");
    assert!(UUIDS.iter().all(|u| e.stdout.contains(u)), "{e:?}");
    assert!(
        e.stdout.contains("[[vgpus]]"),
        "export keeps the profile format: {e:?}"
    );
    assert_eq!(s.hash(), before, "status/export changed the host");

    // The boot: the old unit (conditioned on profile.toml) runs the new binary's restore.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_moved(&s);
    assert_all_live(&s);
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
    let conf = s.read("etc/yunion/host.conf");
    for pf in ["- 67:00.4", "- e8:00.4", "- e8:00.5"] {
        assert!(conf.contains(pf), "{conf}");
    }

    // Then setup with the same profile: it completes, and the next one has nothing to do.
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_moved(&s);
    assert_all_live(&s);
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
    let again = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        again
            .stdout
            .contains("Nothing to do: the host already matches the profile."),
        "{again:?}"
    );
    // And the unit is now conditioned on either file.
    let unit = s.read("etc/systemd/system/vgpuctl-restore.service");
    assert!(
        unit.contains("ConditionPathExists=|/etc/vgpuctl/vgpus.toml"),
        "{unit}"
    );
    // Later boots restore from vgpus.toml.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_all_live(&s);
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
}

#[test]
fn old_host_setup_first_moves_the_pins() {
    let p = profile();
    let s = old_host(&p);
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    // Put the old layout back after that boot, to run setup first on it.
    std::fs::remove_file(s.root().join("etc/vgpuctl/vgpus.toml")).unwrap();
    s.write("etc/vgpuctl/profile.toml", &fixture("profile.toml"));
    let before = s.hash();
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("/etc/vgpuctl/vgpus.toml"), "{dry:?}");
    assert_eq!(s.hash(), before, "a dry run changed the host");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_moved(&s);
    assert_all_live(&s);
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
    let again = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

/// Killed between the two writes of the move: vgpus.toml is written, the profile copy still holds
/// the pins. The next run neither doubles nor loses one; it only strips the copy.
#[test]
fn move_interrupted_after_vgpus_toml_is_finished_next_run() {
    let p = profile();
    let s = old_host(&p);
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    let moved = s.read("etc/vgpuctl/vgpus.toml");
    s.write("etc/vgpuctl/profile.toml", &fixture("profile.toml"));
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(
        s.read("etc/vgpuctl/vgpus.toml"),
        moved,
        "vgpus.toml was rewritten"
    );
    assert_moved(&s);
    assert_all_live(&s);
    assert_eq!(drift(&s), Vec::<serde_json::Value>::new());
}

/// import on an old host moves its pins too, then adds the imported ones.
#[test]
fn old_host_import_moves_the_pins() {
    let p = profile();
    let s = old_host(&p);
    s.write("etc/rc.local", RC_LOCAL);
    let r = s.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_moved(&s);
    assert_all_live(&s);
}
