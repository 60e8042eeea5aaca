//! The fleet playbook (`scripts/ansible/vgpuctl.yml` with the `vgpuctl` role) run by real
//! `ansible-playbook` (ansible-core from PyPI, in the venv `scripts/test-deps` makes) against
//! two inventory hosts on localhost (`connection: local`), each pointed at its own simulated
//! root through the role's test hooks: `vgpuctl_global_args` and `vgpuctl_reboot_command`
//! (`vgpuctl sim reboot` instead of `ansible.builtin.reboot`). One host is fresh 8 x A40 and
//! needs a reboot; the other has only a GeForce card and must fail without hiding the first.

mod common;
mod integrations_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use integrations_util::*;

fn ansible_playbook() -> Option<PathBuf> {
    let p = test_cache().join("venv/bin/ansible-playbook");
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "{} is missing: run scripts/test-deps (it installs ansible-core from PyPI into that venv)",
        p.display()
    );
    if in_ci() {
        panic!("CI must run the Ansible test: {msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPED the Ansible playbook test: {msg} !!!!!!!!\n");
    None
}

/// One inventory host: a simulated root of `model`, the binary and profile copied next to it.
fn host_vars(name: &str, model: &str, root: &Path, work: &Path) -> String {
    let dest = work.join(name);
    let bin = dest.join("vgpuctl");
    format!(
        "    {name}:\n\
         \x20     vgpuctl_global_args: \"--simulate {model} --root {root}\"\n\
         \x20     vgpuctl_reboot_command: \"{bin} --simulate {model} --root {root} sim reboot\"\n\
         \x20     vgpuctl_binary_dest: \"{bin}\"\n\
         \x20     vgpuctl_profile_dest: \"{profile}\"\n",
        root = root.display(),
        bin = bin.display(),
        profile = dest.join("etc/fleet-profile.toml").display(),
    )
}

fn run_playbook(ap: &Path, work: &Path, inventory: &Path, extra: &[&str]) -> (i32, String) {
    let playbook = repo().join("scripts/ansible/vgpuctl.yml");
    let mut c = Command::new(ap);
    c.arg("-i")
        .arg(inventory)
        .arg(&playbook)
        .args(extra)
        .current_dir(work)
        // Keep Ansible's own files in the test's directory, and its output plain.
        .env("ANSIBLE_HOME", work.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env_remove("ANSIBLE_CONFIG")
        .stdin(std::process::Stdio::null());
    let (code, out, err) = output(&mut c);
    (code, format!("{out}{err}"))
}

#[test]
fn playbook_rolls_out_reboots_and_reports_every_host() {
    let Some(ap) = ansible_playbook() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let good = Sim::new("a40x8");
    let bad = Sim::new("geforce");
    let bad_before = bad.hash();
    let inventory = work.path().join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "vgpu_hosts:\n  hosts:\n{}{}  vars:\n\
             \x20   ansible_connection: local\n\
             \x20   ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n\
             \x20   vgpuctl_become: false\n\
             \x20   vgpuctl_binary_src: \"{}\"\n\
             \x20   vgpuctl_profile_src: \"{}\"\n",
            host_vars("a40-good", "a40x8", good.root(), work.path()),
            host_vars("geforce-bad", "geforce", bad.root(), work.path()),
            bin().display(),
            repo().join("profiles/a40.toml").display(),
        ),
    )
    .unwrap();

    let (code, out) = run_playbook(&ap, work.path(), &inventory, &[]);
    // 2: a host failed. Both are reported; the good one finished after its reboot.
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("a40-good: DONE (exit 0), 1 reboot(s): setup complete"),
        "{out}"
    );
    assert!(
        out.contains(
            "geforce-bad: FAILED (exit 1), 0 reboot(s): setup failed (exit 1): vgpuctl: error: \
             this host has no GPU that supports vGPU"
        ),
        "{out}"
    );
    let recap = &out[out.rfind("PLAY RECAP").expect("a recap")..];
    let line = |h: &str| {
        recap
            .lines()
            .find(|l| l.starts_with(h))
            .unwrap()
            .to_string()
    };
    assert!(line("a40-good").contains("failed=0"), "{recap}");
    assert!(line("geforce-bad").contains("failed=1"), "{recap}");

    // The good host is a vGPU host now: 8 GPUs x 2 A40-24Q, restore unit enabled, no drift.
    assert_eq!(good.live_vgpus().len(), 16);
    let st = good.json(&["status", "--json"]);
    assert_eq!(st["drift"].as_array().unwrap().len(), 0, "{st}");
    assert!(good.exists("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"));
    // The refused host was not changed (the role's copies live outside its root), apart from
    // vgpuctl's run lock.
    let lock = bad.root().join("var/lib/vgpuctl/lock");
    if lock.exists() {
        std::fs::remove_file(&lock).unwrap();
        let _ = std::fs::remove_dir(lock.parent().unwrap());
    }
    assert_eq!(bad.hash(), bad_before);

    // Again, on the good host only: nothing to do, no reboot, success.
    let (code, out) = run_playbook(&ap, work.path(), &inventory, &["--limit", "a40-good"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a40-good: DONE (exit 0), 0 reboot(s): setup complete"),
        "{out}"
    );
    assert!(!out.contains("sim reboot"), "{out}");
}
