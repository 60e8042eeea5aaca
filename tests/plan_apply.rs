//! The dry run is the plan the real run applies: setup on a ready host shows the SR-IOV steps and,
//! as the phase after their waits, the vGPU work; the real run applies the same steps, observes
//! again after the waits, and creates exactly what that phase named, at the sysfs paths it shows.

mod common;
use common::*;

/// The numbered step titles of a plan display.
fn steps(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let (n, rest) = t.split_once(". ")?;
            n.parse::<u32>().ok().map(|_| rest.to_string())
        })
        .collect()
}

#[test]
fn setup_dry_run_shows_what_the_real_run_does() {
    let s = Sim::new("a40x8-ready");
    let prof = repo().join("profiles/a40.toml");
    let p = prof.to_str().unwrap();
    let dry = s.run(&["setup", "--profile", p, "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let dry_steps = steps(&dry.stdout);
    let sriov: Vec<&String> = dry_steps
        .iter()
        .filter(|t| t.starts_with("Enable SR-IOV"))
        .collect();
    assert_eq!(sriov.len(), 8, "{dry:?}");
    // The vGPUs go on VFs that exist only after the waits: the later phase names them per GPU.
    let (_, later) = dry
        .stdout
        .split_once("After the VFs above and their type listings appear")
        .unwrap_or_else(|| panic!("a later phase: {dry:?}"));
    let later_gpus: Vec<String> = later
        .lines()
        .filter(|l| l.contains("2 x A40-24Q on"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("0000:")))
        .map(str::to_string)
        .collect();
    assert_eq!(later_gpus.len(), 8, "{dry:?}");

    let r = s.run(&["setup", "--profile", p, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The real run shows and applies the same first plan ...
    let (first, rest) = r.stdout.split_once("[1/").unwrap();
    assert_eq!(steps(first), dry_steps, "{r:?}");
    // ... then, from the observation after the waits, creates on exactly the GPUs named.
    let created: Vec<String> = steps(rest)
        .iter()
        .filter_map(|t| t.strip_prefix("Create A40-24Q vGPUs on A40 "))
        .map(str::to_string)
        .collect();
    assert_eq!(created, later_gpus, "{r:?}");
    // Each creation is shown as the sysfs write it is.
    let writes: Vec<&str> = rest
        .lines()
        .filter(|l| l.trim_start().starts_with("- write \""))
        .collect();
    assert_eq!(writes.len(), 16, "{r:?}");
    let live = s.live_vgpus();
    assert_eq!(live.len(), 16, "{live:?}");
    for w in &writes {
        let uuid = w.split('"').nth(1).unwrap();
        assert!(live.contains_key(uuid), "{w} created: {live:?}");
        assert!(
            w.contains("/mdev_supported_types/") && w.ends_with("/create"),
            "{w}"
        );
    }
    let again = s.run(&["setup", "--profile", p, "--dry-run"]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

/// Issue 16 item 11: the GPUs' SR-IOV steps run together (sriov-manage itself runs one GPU at a
/// time, but each GPU's wait for its VFs' type listings overlaps the others'), and a log (stdout
/// not a terminal) gets a line saying what is awaited while a step waits long.
#[test]
fn sriov_steps_run_together_and_a_long_wait_says_what_it_awaits() {
    let s = Sim::new("a40x8-ready");
    // 32 VF groups 400 ms apart: each GPU's listings take about 13 s after its sriov-manage.
    assert_eq!(
        s.run(&["--sim-opt", "vf_group_ms=400", "sim", "info"]).code,
        0
    );
    let prof = repo().join("profiles/a40.toml");
    let r = s.run(&["setup", "--profile", prof.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (_, applied) = r.stdout.split_once("[1/").unwrap();
    // Every GPU's step is started before the first one reports its VFs.
    let (before_first_ready, _) = applied.split_once("VFs ready after").unwrap();
    let started = before_first_ready
        .lines()
        .filter(|l| l.contains("] Enable SR-IOV on A40 "))
        .count();
    assert_eq!(started, 8, "{r:?}");
    assert!(
        r.stdout
            .contains("      still waiting for the VFs of 8 GPUs and their vGPU types (10 s)"),
        "{r:?}"
    );
    assert_eq!(s.live_vgpus().len(), 16);
}
