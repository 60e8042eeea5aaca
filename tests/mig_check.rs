//! `vgpuctl check` on a MIG GPU (issue 15, item 1): per GPU its MIG capability and mode, current
//! and pending (recorded-behaviour.md §5), with the nvidia-smi command when the active profile's
//! MIG-backed types need the mode on; the simulated A100's mode waits for a reboot.

mod common;
use common::*;

const PROFILE: &str = "[host]\nreboot = \"prompt\"\n\n[[gpus]]\nselect = \"0000:17:00.0\"\n\
                       vgpu_type = \"A100D-1-10C\"\ncount = 7\n";

fn mig_line(check: &Run, addr: &str) -> String {
    let lines: Vec<&str> = check.stdout.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(&format!("{addr}: MIG")))
        .unwrap_or_else(|| panic!("no MIG finding for {addr}: {check:?}"));
    let mut s = lines[i].trim().to_string();
    if let Some(next) = lines
        .get(i + 1)
        .filter(|l| l.trim_start().starts_with("fix:"))
    {
        s.push('\n');
        s.push_str(next.trim());
    }
    s
}

#[test]
fn check_reports_mig_mode_and_the_command_a_mig_backed_profile_needs() {
    let s = Sim::new("a100-mig-ready");
    s.write("etc/vgpuctl/profile.toml", PROFILE);
    let c = s.run(&["check"]);
    assert_eq!(
        mig_line(&c, "0000:17:00.0"),
        "WARN    0000:17:00.0: MIG capable, MIG mode off (pending: off): A100D-1-10C need it on\n\
         fix: `vgpuctl setup` turns it on; by hand: `nvidia-smi -i 0000:17:00.0 -mig 1` (before \
         sriov-manage -e; on an Ampere GPU the mode waits for a reboot)"
    );
    // A GPU the profile does not use: reported, nothing to fix.
    assert_eq!(
        mig_line(&c, "0000:65:00.0"),
        "ok      0000:65:00.0: MIG capable, MIG mode off (pending: off)"
    );
    let before = s.hash();
    assert_eq!(s.run(&["check"]).stdout, c.stdout);
    assert_eq!(s.hash(), before, "check changes nothing");

    // The operator runs the fix: on the A100 the mode is pending until the GPU resets.
    let host = vgpuctl_sim::open(s.root(), "a100-mig-ready", &[]).unwrap();
    let out = host
        .run(&vgpuctl_sim::Cmd::new("nvidia-smi").args(["-i", "0000:17:00.0", "-mig", "1"]))
        .unwrap();
    assert!(out.stdout.contains("pending enable state"), "{out:?}");
    drop(host);
    let c = s.run(&["check"]);
    assert_eq!(
        mig_line(&c, "0000:17:00.0"),
        "WARN    0000:17:00.0: MIG capable, MIG mode off (pending: on): A100D-1-10C need it on, \
         which waits for the GPU's reset\n\
         fix: reboot the host: the pending MIG mode takes effect when the GPU resets"
    );
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let c = s.run(&["check"]);
    assert_eq!(
        mig_line(&c, "0000:17:00.0"),
        "ok      0000:17:00.0: MIG capable, MIG mode on (pending: on): ready for A100D-1-10C"
    );
    let j = s.json(&["check", "--json"]);
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "mig.0000:17:00.0")
        .expect("a finding per GPU in --json");
    assert_eq!(f["severity"], "ok", "{f}");
}

#[test]
fn check_says_nothing_about_mig_on_a_gpu_without_it() {
    let s = Sim::new("a40x8-ready");
    let c = s.run(&["check"]);
    assert!(!c.stdout.contains("MIG"), "{c:?}");
}
