//! Setup on Proxmox VE leaves vGPU creation to Proxmox (issue 18 item 2): qemu-server creates a
//! VM's vGPU at VM start, so vgpuctl brings the host up (SR-IOV now and at every boot) and makes
//! none, unless the profile asks with `[[gpus]]`. And a profile's own `sriov` list is enabled
//! now, not only at the next boot.

mod common;
use common::*;

fn vfs_enabled(s: &Sim, pf: &str) -> u64 {
    let j = s.json(&["status", "--json"]);
    j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == pf)
        .and_then(|g| g["vfs_enabled"].as_u64())
        .unwrap_or_else(|| panic!("{pf} in {j}"))
}

#[test]
fn on_proxmox_a_profile_without_gpus_brings_up_sriov_and_makes_no_vgpu() {
    let s = Sim::new("proxmox-l4-ready");
    let p = profile_file("[host]\nreboot = \"never\"\n");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("leaves the vGPUs to Proxmox"),
        "says who makes the vGPUs: {r:?}"
    );
    assert_eq!(vfs_enabled(&s, "0000:01:00.0"), 32, "{r:?}");
    assert!(s.live_vgpus().is_empty(), "{r:?}");
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert!(pins.contains("sriov = [\"0000:01:00.0\"]"), "{pins}");
    // Every boot: SR-IOV back, still no vGPU of vgpuctl's.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(vfs_enabled(&s, "0000:01:00.0"), 32);
    assert!(s.live_vgpus().is_empty());
    // Run again: nothing to do.
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.stdout.contains("[1/"), "{again:?}");
}

#[test]
fn on_proxmox_a_profile_with_gpus_still_has_vgpuctl_make_them() {
    let s = Sim::new("proxmox-l4-ready");
    let p = profile_file(
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L4-6Q\"\ncount = 2\n",
    );
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("leaves the vGPUs to Proxmox"), "{r:?}");
    assert_eq!(s.live_vgpus().len(), 2, "{r:?}");
}

#[test]
fn a_profile_sriov_list_is_enabled_now_and_an_unknown_pf_is_refused() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file("sriov = [\"0000:e8:00.0\"]\n[host]\nreboot = \"never\"\n");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(vfs_enabled(&s, "0000:e8:00.0"), 32, "{r:?}");
    assert_eq!(
        vfs_enabled(&s, "0000:67:00.0"),
        0,
        "only the listed GPU: {r:?}"
    );
    assert!(!r.stdout.contains("Proxmox"), "{r:?}");

    let t = Sim::new("a40x8-ready");
    let before = tree_hash(t.root());
    let bad = profile_file("sriov = [\"0000:99:00.0\"]\n[host]\nreboot = \"never\"\n");
    let r = t.run(&["setup", "--profile", bad.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("sriov[0]") && r.stderr.contains("0000:99:00.0"),
        "{r:?}"
    );
    assert_eq!(tree_hash(t.root()), before, "the host was changed");
}
