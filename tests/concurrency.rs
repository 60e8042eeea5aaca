//! Concurrency (issue 9): one mutating run at a time. A second `setup` while one holds the lock
//! refuses and names the holder's pid; `check` and `status` (read-only) work meanwhile; a lock
//! file left by a dead process is taken over.

mod common;
use common::*;

use std::time::{Duration, Instant};

const LOCK: &str = "var/lib/vgpuctl/lock";

fn profile() -> tempfile::NamedTempFile {
    profile_file(
        "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\n\
         [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-12Q\"\ncount = 3\n",
    )
}

#[test]
fn second_mutating_run_refuses_while_reads_still_work() {
    let s = Sim::new("a40x8-ready");
    let p = profile();
    let pstr = p.path().to_str().unwrap();
    // Slow vGPU creation (5 vGPUs x 1 s) keeps the first run inside its lock.
    let mut first = s.cmd();
    first
        .args([
            "--sim-opt",
            "create_ms=1000",
            "setup",
            "--profile",
            pstr,
            "--yes",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = first.spawn().unwrap();
    let pid = child.id();
    // Wait (bounded) until it holds the lock and is creating vGPUs.
    let start = Instant::now();
    while !s.read(LOCK).contains(&format!("pid {pid}")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = s.run(&["setup", "--profile", pstr, "--yes"]);
    assert!(
        second.code == 1 || second.code == 2,
        "second setup: {second:?}"
    );
    assert!(
        second.stderr.contains(&format!("pid {pid}")) && second.stderr.contains("lock"),
        "the refusal names the holder: {second:?}"
    );
    // Read-only commands do not take the lock.
    let check = s.run(&["check"]);
    assert!(
        !check.all().contains("holds the lock"),
        "check blocked: {check:?}"
    );
    assert!(check.stdout.contains("A40"), "{check:?}");
    let status = s.json(&["status", "--json"]);
    assert!(status["gpus"].as_array().is_some_and(|g| !g.is_empty()));
    // The lock is still the first run's: the refused run did not take or clear it.
    assert!(s.read(LOCK).contains(&format!("pid {pid}")));

    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "first setup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.live_vgpus().len(), 5);
    // Released: nothing in the file claims it now.
    assert!(!s.read(LOCK).contains("pid"), "{:?}", s.read(LOCK));
}

#[test]
fn stale_lock_from_a_dead_process_is_taken_over() {
    let s = Sim::new("a40x8-ready");
    let p = profile();
    // A run that died (SIGKILL, power cut) leaves its pid in the file but no flock.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    s.write(LOCK, &format!("pid {dead_pid} setup"));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.live_vgpus().len(), 5);
    assert!(!s.read(LOCK).contains(&dead_pid.to_string()));
}

/// Issue 12 item 15: two restores at once (a boot-time restore and one run by hand) take turns on
/// the lock instead of creating the same vGPUs against each other.
#[test]
fn two_restores_at_once_take_turns_and_restore_every_vgpu() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let saved = s.live_vgpus();
    assert_eq!(saved.len(), 16);
    // Reboot with the restore unit disabled: SR-IOV off, no vGPUs, the pins kept.
    std::fs::remove_file(
        s.root()
            .join("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"),
    )
    .unwrap();
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert!(s.live_vgpus().is_empty());

    let spawn = || {
        let mut c = s.cmd();
        c.args(["--sim-opt", "create_ms=100", "restore"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert_eq!(
            o.status.code(),
            Some(0),
            "restore: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(s.live_vgpus(), saved, "every pinned vGPU is back");
    // The lock was free when the first started; if they overlapped, the other said it waited.
    let stderr: String = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        !stderr.contains("holds the lock"),
        "neither refused: {stderr}"
    );
    assert!(
        !s.read(LOCK).contains("pid"),
        "released: {:?}",
        s.read(LOCK)
    );
}
