//! `vgpuctl check`'s human output on an 8-GPU host (issue 16 items 8 and 9): what is true of a
//! finished host, and identical per-GPU findings said once.

mod common;
use common::*;

fn finished_a40x8() -> Sim {
    let s = Sim::new("a40x8-ready");
    s.setup_to_end(&repo().join("profiles/a40.toml"));
    s
}

#[test]
fn a_finished_host_is_told_vgpu_is_up_not_ready_for_setup() {
    let s = finished_a40x8();
    let r = s.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(
            "Verdict: vGPU is up: 16 vGPUs on 8 GPUs, restored at boot by vgpuctl-restore.service\n"
        ),
        "{r:?}"
    );
    assert!(!r.stdout.contains("ready for `vgpuctl setup`"), "{r:?}");
}

#[test]
fn a_host_before_setup_is_still_ready_for_setup() {
    let s = Sim::new("a40x8-ready");
    let r = s.run(&["check"]);
    assert!(
        r.stdout.contains("Verdict: ready for `vgpuctl setup`"),
        "{r:?}"
    );
    assert!(!r.stdout.contains("vGPU is up"), "{r:?}");
}
