//! Shared by the `integrations_*` tests: real external tools (virsh, mdevctl, ansible-playbook)
//! and hosts brought up on the simulator.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{profile_file, Sim};

/// The test cache `scripts/test-deps` fills (pci.ids, the Ansible venv).
pub fn test_cache() -> PathBuf {
    PathBuf::from(
        std::env::var("VGPUCTL_TEST_CACHE").unwrap_or_else(|_| "/var/cache/vgpuctl-test".into()),
    )
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A program from PATH (or an absolute path). Missing: the test is skipped with a loud message
/// on a developer machine, and fails in CI, where `scripts/test-deps` must have installed it.
pub fn need(program: &str, install: &str) -> Option<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        let msg = format!("{program} is missing: {install} (scripts/test-deps does it)");
        if in_ci() {
            panic!("CI must run this test: {msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }
    found
}

/// A `-ready` simulated host set up with `profile` (no reboot needed: exit 0 at once).
pub fn ready_host(model: &str, profile: &str) -> Sim {
    let s = Sim::new(model);
    let p = profile_file(profile);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{model}: setup: {r:?}");
    s
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
