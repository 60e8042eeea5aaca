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

/// The finding lines of a human check output.
fn findings(out: &str) -> Vec<&str> {
    out.lines()
        .skip_while(|l| *l != "Findings")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.trim_start().starts_with("fix:"))
        .collect()
}

#[test]
fn identical_per_gpu_findings_are_said_once_naming_the_gpus() {
    let s = Sim::new("a40x8-ready");
    let r = s.run(&["check"]);
    let f = findings(&r.stdout);
    let all = "8 × A40 0000:67:00.0 … 0000:e8:00.0";
    assert!(
        f.contains(&format!("  ok      {all} (10de:2235) supports vGPU").as_str()),
        "{r:?}"
    );
    assert!(
        f.contains(&format!("  WARN    {all} has 0/32 virtual functions enabled").as_str()),
        "{r:?}"
    );
    // No line names a single one of the eight GPUs any more; the verdict counts what is shown.
    assert!(!f.iter().any(|l| l.contains("0000:68:00.0")), "{r:?}");
    assert!(
        r.stdout.contains("(1 item(s) setup will take care of"),
        "{r:?}"
    );
    // --json keeps one finding per GPU.
    let j = s.json(&["check", "--json"]);
    let per_gpu = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("sriov.0000:"))
        .count();
    assert_eq!(per_gpu, 8, "{j}");
}

#[test]
fn a_finished_8_gpu_host_shows_a_short_list() {
    let s = finished_a40x8();
    let r = s.run(&["check"]);
    let f = findings(&r.stdout);
    assert!(f.len() <= 12, "{} findings: {r:?}", f.len());
    assert!(
        f.contains(
            &"  ok      8 × A40 0000:67:00.0 … 0000:e8:00.0 uses the mdev interface, 2 vGPU(s)"
        ),
        "{r:?}"
    );
}

#[test]
fn types_shows_one_table_for_gpus_offering_the_same_list_and_marks_the_type_in_use() {
    let s = finished_a40x8();
    let r = s.run(&["types"]);
    assert_eq!(r.code, 0, "{r:?}");
    let heads: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(
        heads,
        ["8 × A40 0000:67:00.0 … 0000:e8:00.0 (mdev, per GPU)"],
        "{r:?}"
    );
    let a40_24q: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(" A40-24Q "))
        .collect();
    assert_eq!(a40_24q.len(), 1, "{r:?}");
    assert!(a40_24q[0].ends_with("* 2"), "{r:?}");
    // Only the type in use is marked.
    assert_eq!(r.stdout.matches("* ").count(), 1, "{r:?}");
    assert!(r.stdout.lines().count() < 30, "{r:?}");
    // --json keeps every GPU, with the count in use.
    let j = s.json(&["types", "--json"]);
    let gpus = j["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    let t = gpus[7]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "NVIDIA A40-24Q")
        .unwrap();
    assert_eq!(t["in_use"], 2, "{t}");
}

#[test]
fn types_says_which_cause_keeps_the_list_empty() {
    // The driver is loaded on -ready: SR-IOV is what is missing, once for the eight GPUs.
    let s = Sim::new("a40x8-ready");
    let r = s.run(&["types"]);
    assert_eq!(
        r.stdout,
        "8 × A40 0000:67:00.0 … 0000:e8:00.0\n  no vGPU types: SR-IOV is not enabled (0/32 VFs): \
         `vgpuctl setup` does it\n",
        "{r:?}"
    );
    // A fresh host (as the seed's): GPUs passed through and no vGPU driver yet, both said.
    let s = Sim::new("a40x8");
    let r = s.run(&["types"]);
    assert!(
        r.stdout.contains(
            "no vGPU types: it is bound to vfio-pci (passed through), not to the NVIDIA driver; \
             the vGPU host driver is not installed: `vgpuctl setup` does each"
        ),
        "{r:?}"
    );
    assert!(!r.stdout.contains("or SR-IOV"), "{r:?}");
    let j = s.json(&["types", "--json"]);
    assert!(
        j["gpus"][0]["no_types_because"]
            .as_str()
            .unwrap()
            .contains("not installed"),
        "{j}"
    );
}

#[test]
fn a_long_model_name_keeps_the_gpu_table_in_line() {
    let s = Sim::new("rtxpro6000-vfio");
    let r = s.run(&["check"]);
    let table: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| *l != "GPUs")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 3, "{r:?}");
    assert!(
        table[1].contains("RTX PRO 6000 Blackwell Server Edition  10de:2bb5"),
        "{r:?}"
    );
    // Every column starts where its header does.
    let head = table[0];
    for col in ["ID", "MEMORY", "VGPU", "DRIVER", "INTERFACE", "VFs"] {
        let at = head.find(&format!(" {col}")).unwrap() + 1;
        for row in &table[1..] {
            let cell = &row[at..];
            assert!(
                row.as_bytes()[at - 1] == b' ' && !cell.starts_with(' ') || col == "MEMORY",
                "{col} at {at} in {row:?}: {r:?}"
            );
        }
    }
}
