//! `vgpuctl check` on every simulated model and its -ready twin, and on odd roots.

mod common;
use common::*;

fn verdict(model: &str) -> (Run, serde_json::Value) {
    let s = Sim::new(model);
    let before = s.hash();
    let human = s.run(&["check"]);
    let json = s.json(&["check", "--json"]);
    assert_eq!(s.hash(), before, "check changed the root of {model}");
    (human, json)
}

fn finding<'a>(j: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

#[test]
fn supported_models_are_ready_fresh_and_ready() {
    for model in ["a40x8", "t4x2", "l40s-vfio", "rhel-a10", "proxmox-l4"] {
        for m in [model.to_string(), format!("{model}-ready")] {
            let (human, j) = verdict(&m);
            assert_eq!(human.code, 0, "{m}: {human:?}");
            assert_eq!(j["ready"], true, "{m}: {j}");
            let gpus = j["gpus"].as_array().unwrap();
            assert!(!gpus.is_empty(), "{m}");
            for g in gpus {
                assert_eq!(g["vgpu_supported"], true, "{m}: {g}");
                for k in ["address", "model", "device_id"] {
                    assert!(g[k].is_string(), "{m}: {k} in {g}");
                }
            }
            for f in j["findings"].as_array().unwrap() {
                for k in ["id", "severity", "message", "fix"] {
                    assert!(f[k].is_string(), "{m}: {k} in {f}");
                }
            }
            assert!(human.stdout.contains("Verdict: ready"), "{m}: {human:?}");
        }
    }
}

#[test]
fn a40x8_matches_the_seed_and_says_what_setup_will_do() {
    let (_, j) = verdict("a40x8");
    let gpus = j["gpus"].as_array().unwrap();
    let addrs: Vec<&str> = gpus
        .iter()
        .map(|g| g["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        [
            "0000:67:00.0",
            "0000:68:00.0",
            "0000:6a:00.0",
            "0000:6b:00.0",
            "0000:e5:00.0",
            "0000:e6:00.0",
            "0000:e7:00.0",
            "0000:e8:00.0"
        ]
    );
    assert!(gpus
        .iter()
        .all(|g| g["model"] == "A40" && g["device_id"] == "10de:2235"));
    // Fresh: IOMMU off on the command line, nouveau, no driver, GPUs on vfio-pci (as the seed).
    assert_eq!(finding(&j, "iommu.cmdline").unwrap()["severity"], "warn");
    assert!(finding(&j, "iommu.cmdline").unwrap()["fix"]
        .as_str()
        .unwrap()
        .contains("GRUB"));
    assert_eq!(finding(&j, "driver").unwrap()["severity"], "warn");
    assert!(finding(&j, "vfio.0000:e8:00.0").is_some());

    let (_, r) = verdict("a40x8-ready");
    assert_eq!(finding(&r, "driver").unwrap()["severity"], "ok");
    assert_eq!(finding(&r, "iommu.active").unwrap()["severity"], "ok");
}

#[test]
fn cloud_instance_and_geforce_are_blocked_with_reasons() {
    for m in ["cloud-h100", "cloud-h100-ready"] {
        let (human, j) = verdict(m);
        assert_eq!(human.code, 1, "{m}: {human:?}");
        assert_eq!(j["ready"], false);
        let vm = finding(&j, "host.vm").expect("host.vm finding");
        assert_eq!(vm["severity"], "blocker");
        assert!(vm["message"].as_str().unwrap().contains("virtual machine"));
        assert!(vm["fix"].as_str().unwrap().contains("bare-metal"));
        assert_eq!(j["gpus"][0]["device_id"], "10de:2330");
    }
    let (human, j) = verdict("geforce");
    assert_eq!(human.code, 1);
    let g = &j["gpus"][0];
    assert_eq!(g["vgpu_supported"], false);
    let id = format!("gpu.{}", g["address"].as_str().unwrap());
    let f = finding(&j, &id).unwrap();
    assert_eq!(f["severity"], "blocker");
    assert!(f["message"].as_str().unwrap().contains("consumer"), "{f}");
    assert!(human.stdout.contains("BLOCKED"));
}

#[test]
fn no_firmware_iommu_blocks() {
    let s = Sim::new("a40x8");
    std::fs::remove_file(s.root().join("sys/firmware/acpi/tables/DMAR")).unwrap();
    let r = s.run(&["check", "--json"]);
    assert_eq!(r.code, 1);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let f = finding(&j, "iommu.firmware").unwrap();
    assert_eq!(f["severity"], "blocker");
    assert!(f["fix"].as_str().unwrap().contains("VT-d"));
}

#[test]
fn a_root_missing_most_of_sys_is_judged_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys/bus/pci")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--json", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ready"], false);
    assert!(finding(&j, "gpu.none").is_some());
}

#[test]
fn half_way_through_setup() {
    let s = Sim::new("a40x8");
    let r = s.run(&[
        "setup",
        "--profile",
        repo().join("profiles/a40.toml").to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    let j = s.json(&["check", "--json"]);
    assert_eq!(j["ready"], true, "{j}");
    let d = finding(&j, "driver").unwrap();
    assert!(d["message"].as_str().unwrap().contains("not loaded"), "{d}");
}

#[test]
fn bad_usage_exits_2() {
    let r = std::process::Command::new(bin())
        .args(["check", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let s = Sim::new("a40x8");
    let out = std::process::Command::new(bin())
        .args(["check", "--root"])
        .arg(s.root())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a simulated root without --simulate"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--simulate a40x8"));
}
