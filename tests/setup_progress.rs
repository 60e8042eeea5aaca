//! Setup's long steps: SR-IOV on every GPU side by side (as restore does at boot), and a run
//! that is never silent while it waits (plain lines off a terminal, what is awaited named).

mod common;
use common::*;

#[test]
fn sriov_runs_on_all_gpus_at_once_and_the_wait_is_never_silent() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n");
    // Lines every 20 ms; each VF's vGPU group 20 ms after the last (32 VFs: > 0.6 s per GPU).
    let r = s.run_env(
        &[
            "--sim-opt",
            "vf_group_ms=20",
            "setup",
            "--profile",
            p.path().to_str().unwrap(),
            "--yes",
        ],
        &[("VGPUCTL_PROGRESS_INTERVAL_MS", "20")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let titles: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with('[') && lines[i].contains("] Enable SR-IOV on A40"))
        .collect();
    assert_eq!(titles.len(), 8, "{}", r.stdout);
    // All eight are started before any result: one batch, not one GPU after another.
    assert_eq!(titles[7] - titles[0], 7, "{}", r.stdout);
    let after = &lines[titles[7] + 1..];
    let oks: Vec<&str> = after
        .iter()
        .copied()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| l.trim_start().starts_with("ok: "))
        .collect();
    let pfs = [
        "0000:67:00.0",
        "0000:68:00.0",
        "0000:6a:00.0",
        "0000:6b:00.0",
        "0000:e5:00.0",
        "0000:e6:00.0",
        "0000:e7:00.0",
        "0000:e8:00.0",
    ];
    assert_eq!(oks.len(), 8, "{}", r.stdout);
    // Reported in the plan's order, whatever order they finished in.
    for (ok, pf) in oks.iter().zip(pfs) {
        assert!(
            ok.contains(&format!("ok: {pf}: 32 VFs ready after")),
            "{ok}"
        );
    }
    // The wait said what it waited for, with the time so far, before the results.
    let first_ok = after
        .iter()
        .position(|l| l.trim_start().starts_with("ok: "))
        .unwrap();
    let beat = after[..first_ok]
        .iter()
        .find(|l| l.contains(" s: enabling SR-IOV on 8 GPUs side by side"))
        .unwrap_or_else(|| panic!("no progress line while waiting:\n{}", r.stdout));
    assert!(beat.trim_start().starts_with("... "), "{beat}");
    assert_eq!(s.live_vgpus().len(), 16, "{}", r.stdout);
}
