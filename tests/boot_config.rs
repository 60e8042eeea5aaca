//! Issue 12 items 11 and 12: the boot configuration is edited exactly as the shell (or the boot
//! tool) reads it, or refused with exit 2 before any change; a reboot checkpoint only when the
//! edit was made. The real binary on simulated hosts; GRUB edits judged by sourcing the files
//! with /bin/sh the way grub-mkconfig does.

mod common;
use common::*;
use std::path::Path;

const INTEL: &[&str] = &["intel_iommu=on", "iommu=pt"];

fn setup(s: &Sim, prof: &str) -> Run {
    let p = repo().join("profiles").join(prof);
    s.run(&["setup", "--profile", p.to_str().unwrap(), "--yes"])
}

/// `GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT` after `. /etc/default/grub` and every
/// `grub.d/*.cfg`, by /bin/sh (the simulated root's files; nothing of this machine's).
fn sourced(root: &Path) -> String {
    let script = r#"d=$1; . "$d/etc/default/grub"; for x in "$d"/etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; printf '%s %s' "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT""#;
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", script, "sh"])
        .arg(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every argument of `before` is still there, in order, and each wanted one exactly once.
fn judge(before: &str, after: &str) {
    let key = |a: &str| a.split('=').next().unwrap().replace('-', "_");
    let keys: Vec<String> = INTEL.iter().map(|w| key(w)).collect();
    let others = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .filter(|a| !keys.contains(&key(a)))
            .map(String::from)
            .collect()
    };
    assert_eq!(others(before), others(after), "{before:?} -> {after:?}");
    for w in INTEL {
        let same: Vec<&str> = after
            .split_whitespace()
            .filter(|a| key(a) == key(w))
            .collect();
        assert_eq!(same, [*w], "{after:?}");
    }
}

fn grub_with(s: &Sim, line: &str) {
    let g = s.read("etc/default/grub");
    let old = g
        .lines()
        .find(|l| l.starts_with("GRUB_CMDLINE_LINUX_DEFAULT="))
        .unwrap()
        .to_string();
    s.write("etc/default/grub", &g.replace(&old, line));
}

#[test]
fn grub_shapes_the_shell_executes_are_edited_exactly() {
    for line in [
        "GRUB_TIMEOUT=5; GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"",
        "GRUB_TIMEOUT=5 GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"",
        "export GRUB_TIMEOUT=5 GRUB_CMDLINE_LINUX_DEFAULT='quiet splash nomodeset' # ours",
    ] {
        let s = Sim::new("a40x8");
        grub_with(&s, line);
        let before = sourced(s.root());
        assert!(before.contains("quiet splash nomodeset"), "{before}");
        let r = setup(&s, "a40.toml");
        assert_eq!(r.code, 3, "{line}: {r:?}");
        judge(&before, &sourced(s.root()));
        assert!(
            s.read("var/lib/vgpuctl/state.toml").contains("reboot"),
            "{line}"
        );
    }
}

#[test]
fn grub_shapes_that_cannot_be_followed_are_refused_before_any_change() {
    for (line, needle) in [
        (
            "[ -e /etc/x ] && GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"",
            "conditionally",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\" true",
            "prefix assignment",
        ),
        (
            "if [ -e /etc/x ]; then GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"; fi",
            "conditionally",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$(cat /etc/args)\"",
            "command substitution",
        ),
    ] {
        let s = Sim::new("a40x8");
        grub_with(&s, line);
        let hash = s.hash();
        let r = setup(&s, "a40.toml");
        assert_eq!(r.code, 2, "{line}: {r:?}");
        assert!(r.stderr.contains("/etc/default/grub:"), "{r:?}");
        assert!(
            r.stderr.contains(needle) && r.stderr.contains("iommu = \"skip\""),
            "{r:?}"
        );
        assert_eq!(s.hash(), hash, "{line}");
    }
}

#[test]
fn latin1_comment_is_kept_byte_for_byte_and_the_edit_made() {
    let s = Sim::new("a40x8");
    let p = s.root().join("etc/default/grub");
    let mut bytes = b"# R\xe9glages de l'\xe9quipe\n".to_vec();
    bytes.extend(std::fs::read(&p).unwrap());
    std::fs::write(&p, &bytes).unwrap();
    let before = sourced(s.root());
    let r = setup(&s, "a40.toml");
    assert_eq!(r.code, 3, "{r:?}");
    let after = std::fs::read(&p).unwrap();
    assert!(after.starts_with(b"# R\xe9glages de l'\xe9quipe\n"));
    judge(&before, &sourced(s.root()));
    // The edit reaches the next boot.
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert!(s.read("proc/cmdline").contains("intel_iommu=on"));
}

#[test]
fn grub_defaults_that_are_a_directory_are_refused() {
    let s = Sim::new("a40x8");
    std::fs::remove_file(s.root().join("etc/default/grub")).unwrap();
    std::fs::create_dir(s.root().join("etc/default/grub")).unwrap();
    let hash = s.hash();
    let r = setup(&s, "a40.toml");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("/etc/default/grub: cannot be read"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash);
}

#[test]
fn a_drop_in_that_unsets_the_variable() {
    // Only _DEFAULT unset: the arguments go to GRUB_CMDLINE_LINUX, which survives.
    let s = Sim::new("a40x8");
    s.write(
        "etc/default/grub.d/90-plain.cfg",
        "unset GRUB_CMDLINE_LINUX_DEFAULT\n",
    );
    let before = sourced(s.root());
    let r = setup(&s, "a40.toml");
    assert_eq!(r.code, 3, "{r:?}");
    judge(&before, &sourced(s.root()));
    // Both unset: nothing can carry them; refused.
    let s = Sim::new("a40x8");
    s.write(
        "etc/default/grub.d/90-plain.cfg",
        "unset GRUB_CMDLINE_LINUX_DEFAULT GRUB_CMDLINE_LINUX\n",
    );
    let hash = s.hash();
    let r = setup(&s, "a40.toml");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("/etc/default/grub.d/90-plain.cfg:1: `unset"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash);
}

#[test]
fn proxmox_multi_line_kernel_cmdline_gets_the_arguments_on_the_line_the_tool_reads() {
    let s = Sim::new("proxmox-l4");
    let first = s.read("etc/kernel/cmdline");
    let first = first.trim_end();
    s.write("etc/kernel/cmdline", &format!("{first}\nquiet\n"));
    let r = setup(&s, "proxmox-l4.toml");
    assert_eq!(r.code, 3, "{r:?}");
    let c = s.read("etc/kernel/cmdline");
    let line1 = c.lines().next().unwrap();
    assert!(
        line1.starts_with(first) && line1.contains("intel_iommu=on iommu=pt"),
        "{c}"
    );
    assert!(c.ends_with("\nquiet\n"), "{c}");
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert!(s.read("proc/cmdline").contains("intel_iommu=on"));

    // The first line empty: proxmox-boot-tool would boot without root=; refused.
    let s = Sim::new("proxmox-l4");
    let c = s.read("etc/kernel/cmdline");
    s.write("etc/kernel/cmdline", &format!("\n{c}"));
    let hash = s.hash();
    let r = setup(&s, "proxmox-l4.toml");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("/etc/kernel/cmdline: line 1 is empty"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash);
}
