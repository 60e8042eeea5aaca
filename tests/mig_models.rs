//! The two MIG models (`a100-mig`, `h200x8-vfio`) outside MIG mode: the product brings up their
//! time-sliced types from the ready host to done and a simulated reboot brings every vGPU back
//! with its UUID (issue 15, item 8: each new model, also `-ready`, usable end to end).

mod common;
use common::*;

fn time_sliced_round_trip(model: &str, vgpu_type: &str, count: u32, expect: usize) {
    let s = Sim::new(model);
    let p = profile_file(&format!(
        "[host]\nreboot = \"prompt\"\n\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"{vgpu_type}\"\ncount = {count}\n"
    ));
    s.setup_to_end(p.path());
    let before = s.live_vgpus();
    assert_eq!(before.len(), expect, "{model}");
    let full = format!("NVIDIA {vgpu_type}");
    assert!(before.values().all(|t| *t == full), "{before:?}");
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert_eq!(s.live_vgpus(), before, "{model}: restored with their UUIDs");
}

#[test]
fn a100_mig_takes_a_time_sliced_profile_and_restores_it() {
    time_sliced_round_trip("a100-mig-ready", "A100D-20C", 4, 8);
}

#[test]
fn h200x8_vfio_takes_a_time_sliced_profile_and_restores_it() {
    time_sliced_round_trip("h200x8-vfio-ready", "H200X-70C", 2, 16);
}

/// A MIG-backed type asks for what setup does not build yet (MIG mode, a GPU instance per
/// vGPU): refused with exit 2, the field named, before any change, on both interfaces and
/// whether or not the host still needs SR-IOV. Before, the type was only found missing from
/// the VFs' listings after SR-IOV and the restore unit were done.
#[test]
fn a_mig_backed_type_is_refused_before_any_change() {
    for (model, ty) in [
        ("a100-mig-ready", "A100D-1-10C"),
        ("h200x8-vfio-ready", "H200X-1-18C"),
    ] {
        let s = Sim::new(model);
        let before = tree_hash(s.root());
        let p = profile_file(&format!(
            "[[gpus]]\nselect = \"all\"\nvgpu_type = \"{ty}\"\ncount = 1\n"
        ));
        let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
        assert_eq!(r.code, 2, "{model}: {r:?}");
        assert!(r.stderr.contains("gpus[0].vgpu_type"), "{r:?}");
        assert!(r.stderr.contains("MIG-backed"), "{r:?}");
        assert_eq!(tree_hash(s.root()), before, "{model}: the host was changed");
    }
}
