//! SR-IOV as real hosts do it (recorded-behaviour §2) and every program run bounded (issue 14
//! items 2 and 6), on the simulated a40x8: sriov-manage failing for passing reasons is retried,
//! a hung one is killed at its bound and never stops the other GPUs.

mod common;
use common::*;

fn one_per_gpu() -> tempfile::NamedTempFile {
    profile_file(
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-1B\"\ncount = 1\nuuids = []\n",
    )
}

/// A host set up with one vGPU per GPU, rebooted without the restore unit (so a test runs
/// restore itself, with its own options and bound).
fn set_up_then_reboot_bare() -> Sim {
    let s = Sim::new("a40x8-ready");
    let p = one_per_gpu();
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.live_vgpus().len(), 8);
    std::fs::remove_file(
        s.root()
            .join("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"),
    )
    .unwrap();
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert!(s.live_vgpus().is_empty());
    s
}

fn report(s: &Sim) -> serde_json::Value {
    serde_json::from_str(&s.read("run/vgpuctl/restore.json")).unwrap()
}

#[test]
fn a_hung_sriov_manage_is_killed_at_its_bound_and_the_other_gpus_are_restored() {
    let s = set_up_then_reboot_bare();
    s.run(&["--sim-opt", "hang=sriov-manage@0000:67:00.0", "sim", "info"]);
    let r = s.run(&["restore", "--vf-timeout", "8"]);
    assert_eq!(r.code, 1, "{r:?}");
    let rep = report(&s);
    let sriov = rep["sriov"].as_array().unwrap();
    assert_eq!(sriov.len(), 8, "{rep}");
    for x in sriov {
        if x["pf"] == "0000:67:00.0" {
            assert_eq!(x["ok"], false, "{x}");
            let why = x["reason"].as_str().unwrap();
            assert!(why.contains("timed out after 8 s"), "{why}");
            assert!(why.contains("sriov-manage"), "{why}");
        } else {
            assert_eq!(x["ok"], true, "{x}");
        }
    }
    // The seven other GPUs have their vGPU back.
    assert_eq!(s.live_vgpus().len(), 7, "{rep}");
    assert!(r.all().contains("0000:67:00.0"), "{r:?}");
}

#[test]
fn unbind_lock_failures_are_retried_and_the_vfs_judged_by_sysfs() {
    let s = set_up_then_reboot_bare();
    s.run(&["--sim-opt", "unbind_lock_busy=3", "sim", "info"]);
    let r = s.run(&["restore", "--vf-timeout", "60"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(report(&s)["ok"], true);
    assert_eq!(s.live_vgpus().len(), 8);
}

#[test]
fn the_boot_race_of_the_first_sriov_manage_is_retried_at_boot() {
    let s = Sim::new("a40x8-ready");
    let p = one_per_gpu();
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    s.run(&["--sim-opt", "boot_race=1", "sim", "info"]);
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    let rep = report(&s);
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(s.live_vgpus().len(), 8);
}

#[test]
fn an_nvml_client_that_never_lets_go_fails_with_its_cause_and_fix() {
    let s = set_up_then_reboot_bare();
    s.run(&["--sim-opt", "unbind_lock_busy=1000", "sim", "info"]);
    let r = s.run(&["restore", "--vf-timeout", "30"]);
    assert_eq!(r.code, 1, "{r:?}");
    let rep = report(&s);
    for x in rep["sriov"].as_array().unwrap() {
        let why = x["reason"].as_str().unwrap();
        assert!(why.contains("Cannot obtain unbindLock"), "{why}");
        assert!(
            why.contains("NVML client") && why.contains("stop it"),
            "{why}"
        );
    }
}
