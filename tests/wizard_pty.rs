//! The wizard, driven in a pseudo-terminal on the simulator: arrow keys, space, enter, Ctrl-C.

mod common;
use common::*;

use rexpect::session::{spawn_command, PtySession};

const DOWN: &str = "\x1b[B";
const ENTER: &str = "\r";

fn wizard(s: &Sim, extra: &[&str]) -> PtySession {
    let mut c = std::process::Command::new(bin());
    c.arg("--root")
        .arg(s.root())
        .arg("--simulate")
        .arg(&s.model)
        .arg("setup");
    c.args(extra);
    c.env("TERM", "xterm").env("NO_COLOR", "1");
    spawn_command(c, Some(60_000)).expect("spawn in a pty")
}

/// Type like a person: the prompt switches the terminal to raw mode with a flush, so a key sent
/// before it waits would be dropped.
fn key(p: &mut PtySession, k: &str) {
    std::thread::sleep(std::time::Duration::from_millis(400));
    p.send(k).unwrap();
    p.flush().unwrap();
}

fn exit_code(p: &mut PtySession) -> i32 {
    let _ = p.exp_eof();
    match p.process().wait() {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        other => panic!("wizard did not exit normally: {other:?}"),
    }
}

/// Answer the first-time questions on a fresh a40x8: all GPUs, A40-24Q typed, 2 per GPU, the
/// zip in /root, no checksum, reboot "never".
fn answer_fresh(p: &mut PtySession) {
    p.exp_string("GPUs for vGPU").unwrap();
    key(p, ENTER);
    p.exp_string("vGPU type").unwrap();
    key(p, "A40-24Q");
    key(p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(p, ENTER);
    p.exp_string("GRID host driver").unwrap();
    key(p, ENTER);
    p.exp_string("Path").unwrap();
    key(p, ENTER);
    p.exp_string("SHA-256").unwrap();
    key(p, ENTER);
    p.exp_string("When the host needs its reboot").unwrap();
    key(p, DOWN);
    key(p, DOWN);
    key(p, ENTER);
}

#[test]
fn full_run_to_a_saved_profile_that_replays_to_the_same_state() {
    let s = Sim::new("a40x8");
    let saved = s.root().with_extension("profile.toml");
    let mut p = wizard(&s, &["--save-profile", saved.to_str().unwrap()]);
    answer_fresh(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, "y");
    p.exp_string("Reboot, then run the same command again")
        .unwrap();
    assert_eq!(exit_code(&mut p), 3);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("vgpu_type = \"A40-24Q\"") && text.contains("count = 2"),
        "{text}"
    );

    // After the reboot the resumed wizard asks only what is open: the type, from the live list.
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let mut p = wizard(&s, &[]);
    p.exp_string("Continuing the setup you started").unwrap();
    p.exp_string("Enable SR-IOV on 8 GPU(s) now").unwrap();
    key(&mut p, "y");
    p.exp_string("from the driver's live list").unwrap();
    key(&mut p, ENTER);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, "y");
    p.exp_string("Setup is complete.").unwrap();
    assert_eq!(exit_code(&mut p), 0);
    let by_wizard = s.live_vgpus();
    assert_eq!(by_wizard.len(), 16);

    // The saved profile, unattended, on another fresh a40x8: same types and counts.
    let t = Sim::new("a40x8");
    let runs = t.setup_to_end(&saved);
    assert_eq!(runs.last().unwrap().code, 0);
    let replayed = t.live_vgpus();
    let types = |m: &std::collections::BTreeMap<String, String>| {
        let mut v: Vec<String> = m.values().cloned().collect();
        v.sort();
        v
    };
    assert_eq!(types(&replayed), types(&by_wizard));
}

#[test]
fn an_unsupported_gpu_cannot_be_picked() {
    let s = Sim::new("a40x8-ready");
    // A GeForce card next to the A40s.
    let dev = s.root().join("sys/devices/pci0000:00/0000:01:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    for (f, v) in [
        ("vendor", "0x10de"),
        ("device", "0x2684"),
        ("class", "0x030000"),
        ("subsystem_vendor", "0x10de"),
        ("subsystem_device", "0x16f3"),
    ] {
        std::fs::write(dev.join(f), format!("{v}\n")).unwrap();
    }
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:01:00.0",
        s.root().join("sys/bus/pci/devices/0000:01:00.0"),
    )
    .unwrap();
    let before = s.hash();
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    p.exp_string("cannot be used: GeForce RTX 4090 is a consumer")
        .unwrap();
    // The GeForce is listed first (0000:01:00.0): select it too and accept.
    key(&mut p, " ");
    key(&mut p, ENTER);
    p.exp_string("0000:01:00.0 cannot be picked").unwrap();
    p.exp_string("GPUs for vGPU").unwrap();
    p.send_control('c').unwrap();
    let _ = exit_code_any(&mut p);
    assert_eq!(s.hash(), before, "nothing changed");
}

fn exit_code_any(p: &mut PtySession) -> Option<i32> {
    let _ = p.exp_eof();
    match p.process().wait() {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Some(c),
        _ => None,
    }
}

#[test]
fn a_count_above_what_fits_is_refused_at_the_prompt() {
    let s = Sim::new("a40x8-ready");
    assert_eq!(s.run(&["restore"]).code, 0);
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    // The driver is loaded but no VFs yet: the type is typed and checked against the model.
    p.exp_string("vGPU type").unwrap();
    key(&mut p, "A40-24Q");
    key(&mut p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(&mut p, "\x7f3");
    key(&mut p, ENTER);
    p.exp_string("does not fit: at most 2").unwrap();
    p.send_control('c').unwrap();
    let _ = exit_code_any(&mut p);
}

#[test]
fn ctrl_c_before_confirming_changes_nothing() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    let mut p = wizard(&s, &[]);
    answer_fresh(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    p.send_control('c').unwrap();
    let _ = exit_code_any(&mut p);
    assert_eq!(s.hash(), before);
}

#[test]
fn no_terminal_says_to_pass_a_profile() {
    let s = Sim::new("a40x8");
    let r = s.run(&["setup"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--profile"), "{r:?}");
}
