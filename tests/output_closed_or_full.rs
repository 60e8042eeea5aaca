//! Issue 12 item 16: stdout that is a closed pipe or a full device. The real binary with the real
//! file descriptors: a pipe whose reader is already closed (`| head -1` after head exited), and
//! `/dev/full`. Nothing panics (exit 101); a closed pipe ends quietly; a full device is a clear
//! error (exit 1); a setup keeps going to its end either way.

mod common;
use common::*;

use std::process::{Output, Stdio};

/// A pipe's write end whose reader is gone: every write gets EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

fn run_to(s: &Sim, args: &[&str], stdout: Stdio) -> (i32, String) {
    let o: Output = s
        .cmd()
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn profile() -> tempfile::NamedTempFile {
    profile_file("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n")
}

#[test]
fn a_closed_pipe_ends_read_only_commands_quietly() {
    let s = Sim::new("a40x8-ready");
    let expected_check = s.run(&["check", "--json"]).code;
    for (args, code) in [
        (&["status"][..], 0),
        (&["status", "--json"][..], 0),
        (&["check", "--json"][..], expected_check),
        (&["check"][..], expected_check),
    ] {
        let (got, stderr) = run_to(&s, args, closed_pipe());
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} is quiet: {stderr}");
    }
}

#[test]
fn a_full_device_is_a_clear_error() {
    let s = Sim::new("a40x8-ready");
    for args in [&["status"][..], &["check", "--json"][..]] {
        let (code, stderr) = run_to(&s, args, dev_full());
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write output: No space left on device"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn setup_whose_reader_left_still_finishes_its_steps() {
    let s = Sim::new("a40x8-ready");
    let p = profile();
    let (code, stderr) = run_to(
        &s,
        &["setup", "--profile", p.path().to_str().unwrap(), "--yes"],
        closed_pipe(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(s.live_vgpus().len(), 16, "every vGPU created");
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

#[test]
fn setup_onto_a_full_device_finishes_and_says_output_was_lost() {
    let s = Sim::new("a40x8-ready");
    let p = profile();
    let (code, stderr) = run_to(
        &s,
        &["setup", "--profile", p.path().to_str().unwrap(), "--yes"],
        dev_full(),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot write output: No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(s.live_vgpus().len(), 16, "not stopped half-way");
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}
