//! `vgpuctl export` -> `vgpuctl setup` on a fresh host -> the same vGPUs: types, counts per GPU
//! and UUIDs.

mod common;
mod integrations_util;

use std::collections::BTreeMap;

use common::*;
use integrations_util::*;

/// GPU address -> sorted `pick(vGPU)` of its vGPUs, from status --json.
fn per_gpu(
    s: &Sim,
    pick: impl Fn(&serde_json::Value) -> (String, String),
) -> BTreeMap<String, Vec<(String, String)>> {
    let j = s.json(&["status", "--json"]);
    let mut m = BTreeMap::new();
    for g in j["gpus"].as_array().unwrap() {
        let mut v: Vec<(String, String)> =
            g["vgpus"].as_array().unwrap().iter().map(&pick).collect();
        v.sort();
        if !v.is_empty() {
            m.insert(g["address"].as_str().unwrap().to_string(), v);
        }
    }
    m
}

/// GPU address -> sorted (uuid or "-", short type) of its vGPUs.
fn state(s: &Sim) -> BTreeMap<String, Vec<(String, String)>> {
    per_gpu(s, |v| {
        (
            v["uuid"].as_str().unwrap_or("-").to_string(),
            v["type"].as_str().unwrap().to_string(),
        )
    })
}

/// Export `from` to a file, check it is a profile setup accepts, replay it on a fresh host.
fn replay(from: &Sim, model: &str) -> (Sim, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exported.toml");
    let r = from.run(&["export", "-o", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# Exported by vgpuctl"), "{text}");
    let to = Sim::new(model);
    let r = to.run(&["setup", "--profile", file.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "setup from the exported profile:\n{text}\n{r:?}");
    (to, text)
}

#[test]
fn mdev_host_made_by_hand_is_captured_and_replayed() {
    let uuid = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    let a = ready_host(
        "a40x8-ready",
        &format!(
            "[host]\nreboot = \"never\"\n\
             [[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\
             [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 3\nuuids = [\"{uuid}\"]\n"
        ),
    );
    // Forget everything vgpuctl recorded: the live vGPUs are now as if made by hand.
    std::fs::remove_file(a.root().join("etc/vgpuctl/profile.toml")).unwrap();
    std::fs::remove_file(a.root().join("etc/vgpuctl/vgpus.toml")).unwrap();
    let before = state(&a);
    assert_eq!(
        before.values().map(Vec::len).sum::<usize>(),
        5,
        "{before:?}"
    );
    assert!(before["0000:e8:00.0"].iter().any(|(u, _)| u == uuid));

    let (b, text) = replay(&a, "a40x8-ready");
    assert_eq!(state(&b), before, "exported profile:\n{text}");
    // The replayed host pins them, so its own restore brings them back after a reboot.
    let rb = b.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(state(&b), before);
    // Exporting the replayed host asks for the same vGPUs again (the pins' parents, which VF
    // holds which UUID, are the placement's choice and may differ).
    let again = b.run(&["export"]);
    assert_eq!(again.code, 0, "{again:?}");
    let requests = |t: &str| t.split("[[vgpus]]").next().unwrap().to_string();
    assert_eq!(requests(&again.stdout), requests(&text));
}

#[test]
fn vendor_vfio_host_replays_with_its_uuids() {
    let a = ready_host(
        "l40s-vfio-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 2\n",
    );
    let before = state(&a);
    assert!(!before.is_empty());
    // The kernel has no UUIDs on this interface: they are vgpuctl's names, kept in the pins.
    assert!(
        before.values().flatten().all(|(u, _)| u != "-"),
        "{before:?}"
    );
    let (b, text) = replay(&a, "l40s-vfio-ready");
    assert_eq!(state(&b), before, "exported profile:\n{text}");
}

/// A fresh host has no driver: the exported profile carries a commented `[driver]` section to
/// fill in, and once filled in (uncommented, the package's path given) setup replays it there
/// (issue 16 item 15).
#[test]
fn the_exported_profile_names_the_driver_section_a_fresh_host_needs() {
    let a = Sim::new("l40s-vfio-ready");
    a.setup_to_end(&repo().join("profiles/l40s.toml"));
    let before = state(&a);
    let r = a.run(&["export"]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = r.stdout;
    assert!(text.contains("\n# [driver]\n"), "{text}");
    assert!(text.contains("this host runs 550.163.02"), "{text}");
    assert!(!text.contains("\n[driver]"), "{text}");
    // Unedited, a fresh host refuses it and says which section is missing.
    let fresh = Sim::new("l40s-vfio");
    let raw = profile_file(&text);
    let r = fresh.run(&[
        "setup",
        "--profile",
        raw.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("[driver]"), "{r:?}");
    // Filled in as the comment says: uncomment the header and the path line.
    let zip = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";
    let filled = text.replace("\n# [driver]\n", "\n[driver]\n").replace(
        "# path = \"/root/NVIDIA-GRID-Linux-KVM-VERSION.zip\"",
        &format!("path = \"{zip}\""),
    );
    let p = profile_file(&filled);
    fresh.setup_to_end(p.path());
    assert_eq!(state(&fresh), before, "profile:\n{filled}");
}

/// GPU address -> sorted (VF, uuid) of its vGPUs: which VF holds which vGPU.
fn placement(s: &Sim) -> BTreeMap<String, Vec<(String, String)>> {
    per_gpu(s, |v| {
        (
            v["parent"].as_str().unwrap_or("?").to_string(),
            v["uuid"].as_str().unwrap_or("-").to_string(),
        )
    })
}

/// On vendor-specific VFIO the VF is the vGPU's identity (a VM's XML names its address): an
/// exported profile puts each vGPU back on the same VF of a fresh host, not on the first free
/// ones (issue 16 item 15). The host's vGPUs sit on VFs the placement would not have chosen.
#[test]
fn vendor_vfio_host_replays_each_vgpu_on_its_own_vf() {
    let a = Sim::new("l40s-vfio-ready");
    let attr = |vf: &str| format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type");
    a.write(
        "etc/rc.local",
        &format!(
            "#!/bin/bash\n/usr/lib/nvidia/sriov-manage -e 0000:41:00.0\nsleep 5\n\
             echo 1153 > {}\necho 1153 > {}\nexit 0\n",
            attr("0000:41:00.7"),
            attr("0000:41:00.6")
        ),
    );
    let r = a.run(&["import"]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = placement(&a);
    let vfs: Vec<&str> = before["0000:41:00.0"]
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(vfs, ["0000:41:00.6", "0000:41:00.7"], "{before:?}");
    let (b, text) = replay(&a, "l40s-vfio-ready");
    assert_eq!(placement(&b), before, "exported profile:\n{text}");
}
