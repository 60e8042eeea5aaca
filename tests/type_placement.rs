//! A type the GPU's model has but the GPU cannot take because of the size it holds (issue 16
//! item 12): said in those words, with what would make it possible, not "unknown vGPU type".

mod common;
use common::*;

#[test]
fn a_type_of_another_size_than_the_gpu_holds_is_named_as_such_with_the_way_out() {
    // Vendor-specific VFIO: once a VF holds L40S-12Q, the free VFs list only L40S-12Q.
    let s = Sim::new("l40s-vfio-ready");
    s.setup_to_end(&repo().join("profiles/l40s.toml"));
    let text = std::fs::read_to_string(repo().join("profiles/l40s.toml"))
        .unwrap()
        .replace("\"L40S-12Q\"", "\"L40S-4Q\"");
    let p = profile_file(&text);
    // On vGPUs vgpuctl pinned this is a change of type (issue 17 item 3, tests/setup_retype.rs):
    // their removal is planned. On vGPUs it did not make (no pins: made by hand or another
    // tool) the size they hold is the reason, said as such.
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("the profile asks for L40S-4Q"),
        "{dry:?}"
    );
    std::fs::remove_file(s.root().join("etc/vgpuctl/vgpus.toml")).unwrap();
    let before = s.hash();
    let r = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    for want in [
        "gpus[0].vgpu_type: L40S-4Q exists on L40S, but L40S 0000:",
        "cannot take it now: it holds L40S-12Q vGPU(s)",
        "equal-size mode",
        "remove its vGPUs first",
    ] {
        assert!(r.stderr.contains(want), "{want}: {r:?}");
    }
    assert!(!r.stderr.contains("unknown vGPU type"), "{r:?}");
    assert_eq!(s.hash(), before, "nothing changed");
    // A name the model does not have is still unknown.
    let p = profile_file(&text.replace("\"L40S-4Q\"", "\"L40S-5Q\""));
    let r = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown vGPU type \"L40S-5Q\""), "{r:?}");
}
