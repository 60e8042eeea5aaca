//! SR-IOV is decided by the GPU's architecture and the loaded driver's answer, never by
//! `sriov_totalvfs` alone (recorded-behaviour.md §2, §3): a T4 advertises VFs that the vGPU
//! driver never creates.

mod common;
use common::*;

#[test]
fn t4_with_a_phantom_sriov_capability_gets_its_vgpus_on_the_pf() {
    let s = Sim::new("t4x2");
    let prof = repo().join("profiles").join("t4.toml");
    let runs = s.setup_to_end(&prof);
    assert_eq!(runs.last().unwrap().code, 0, "{runs:?}");
    // The phantom capability is there once the vGPU driver is bound, and no VF ever is.
    for pf in ["0000:3b:00.0", "0000:af:00.0"] {
        let d = format!("sys/bus/pci/devices/{pf}");
        assert_eq!(s.read(&format!("{d}/sriov_totalvfs")).trim(), "16");
        assert_eq!(s.read(&format!("{d}/sriov_numvfs")).trim(), "0");
        assert!(!s.exists(&format!("{d}/virtfn0")));
    }
    for r in &runs {
        assert!(!r.all().contains("SR-IOV on"), "no SR-IOV step: {r:?}");
    }
    let live = s.live_vgpus();
    assert_eq!(live.len(), 8, "{live:?}");
    // Every vGPU's parent is a PF.
    for uuid in live.keys() {
        let parent =
            std::fs::read_link(s.root().join(format!("sys/bus/mdev/devices/{uuid}"))).unwrap();
        let parent = parent.parent().unwrap().file_name().unwrap();
        assert!(
            ["0000:3b:00.0", "0000:af:00.0"].contains(&parent.to_str().unwrap()),
            "{uuid} on {parent:?}"
        );
    }
    // Restore at boot does not try SR-IOV either: the pins name no SR-IOV GPU.
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert!(!pins.contains("sriov"), "{pins}");
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(!rb.all().contains("sriov-manage"), "{rb:?}");
    assert_eq!(s.live_vgpus().len(), 8, "{}", rb.all());
    // check agrees: nothing to fix about SR-IOV on a T4.
    let c = s.run(&["check"]);
    assert!(!c.all().contains("SR-IOV"), "{c:?}");
    // Nor does it count the advertised VFs as the GPU's.
    let j = s.json(&["check", "--json"]);
    for g in j["gpus"].as_array().unwrap() {
        assert_eq!(g["vfs_total"], 0, "{g}");
    }
}
