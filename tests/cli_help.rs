//! The command line as an operator meets it (issue 16 items 13 and 14): every flag has help
//! text, internal and simulator flags stay out of the commands' help, conflicting flags are
//! refused by the parser, and a mistyped --root is named.

mod common;

use std::process::Command;

use common::{bin, Sim};

fn run(args: &[&str]) -> common::Run {
    let o = Command::new(bin())
        .args(args)
        .env_remove("VGPUCTL_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The names under a help text's `Commands:` heading (without clap's `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A name is indented two spaces; a wrapped description further.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect()
}

/// The flags under a help text's `Options:` heading that have no description: a flag line with
/// nothing after its name whose next line is not an indented description (clap puts a long
/// description on the next line).
fn flags_without_help(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim() != "Options:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut bare = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        // A flag starts at column 2 (`-y, --yes`) or 6 (`--json`); a description further right.
        let t = l.trim();
        if !t.starts_with('-') || indent(l) > 6 {
            continue;
        }
        // `-y, --yes  Do not ask`: the spec ends at the first run of two spaces (clap pads a
        // flag without help with trailing spaces, hence the trim).
        let described = t.contains("  ");
        let next_is_text = lines
            .get(i + 1)
            .map(|n| !n.trim().is_empty() && indent(n) > 6)
            .unwrap_or(false);
        if !described && !next_is_text {
            bare.push(t.to_string());
        }
    }
    bare
}

/// Every command's help, depth first: (argv, help text).
fn all_helps() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let r = run(&args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        for s in subcommands(&r.stdout) {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
        out.push((path, r.stdout));
    }
    out
}

#[test]
fn every_flag_of_every_command_has_help_text() {
    let helps = all_helps();
    // The walk reached the nested commands (driver fetch/install, sim reboot/info).
    for want in [
        &["driver", "install"][..],
        &["sim", "reboot"],
        &["uninstall"],
    ] {
        assert!(
            helps.iter().any(|(p, _)| p == want),
            "{want:?} not walked: {:?}",
            helps.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
    }
    let bare: Vec<String> = helps
        .iter()
        .flat_map(|(p, h)| {
            flags_without_help(h)
                .into_iter()
                .map(move |f| format!("vgpuctl {}: {f}", p.join(" ")))
        })
        .collect();
    assert!(
        bare.is_empty(),
        "flags without help text:\n{}",
        bare.join("\n")
    );
}

#[test]
fn commands_help_leaves_out_internal_and_simulator_flags() {
    for (path, help) in all_helps() {
        // As options (`--simulate <MODEL>`): `sim`'s description and the top-level epilogue
        // name the simulator's flags in words.
        for hidden in ["--resume", "--simulate <", "--sim-opt <"] {
            assert!(
                !help.contains(hidden),
                "vgpuctl {} --help shows {hidden}:\n{help}",
                path.join(" ")
            );
        }
    }
    let top = run(&["--help"]).stdout;
    assert!(top.contains("--simulate MODEL"), "{top}");
    assert!(top.contains("--sim-opt"), "{top}");
}

#[test]
fn setup_help_shows_a_profile_inline_instead_of_a_repository_file() {
    let h = run(&["setup", "--help"]).stdout;
    assert!(!h.contains("profiles/"), "{h}");
    for want in ["[driver]", "[[gpus]]", "vgpu_type = ", "count = "] {
        assert!(h.contains(want), "{want}: {h}");
    }
}

#[test]
fn uninstall_takes_y_like_setup() {
    let s = Sim::new("a40x8-ready");
    let r = s.run(&["uninstall", "-y"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!s.exists("/etc/vgpuctl/profile.toml"), "{r:?}");
}

#[test]
fn the_hidden_flags_still_work() {
    // --simulate/--sim-opt are only hidden: the README's first command and the tests use them.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let r = run(&[
        "--simulate",
        "t4x2",
        "--root",
        root,
        "--sim-opt",
        "create_ms=1",
        "check",
    ]);
    assert!(r.stdout.contains("Tesla T4"), "{r:?}");
}

#[test]
fn conflicting_flags_are_refused_before_anything_runs() {
    let s = Sim::new("a40x8-ready");
    let before = s.hash();
    let r = s.run(&["status", "--libvirt-xml", "--json"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cannot be used with"), "{r:?}");
    let p = common::profile_file(
        &std::fs::read_to_string(common::repo().join("profiles/a40.toml")).unwrap(),
    );
    let saved = s.root().join("saved.toml");
    let r = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--save-profile",
        saved.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cannot be used with"), "{r:?}");
    assert_eq!(s.hash(), before, "nothing changed");
}

#[test]
fn a_root_that_does_not_exist_is_named_not_judged_as_an_empty_host() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    for cmd in [&["check"][..], &["status", "--json"], &["types"]] {
        let mut args = vec!["--root", typo.to_str().unwrap()];
        args.extend_from_slice(cmd);
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!(
                "--root {}: the directory does not exist",
                typo.display()
            )),
            "{args:?}: {r:?}"
        );
        assert!(!r.all().contains("no NVIDIA GPU"), "{r:?}");
        assert!(!typo.exists(), "nothing created");
    }
    let r = run(&["--root", file.to_str().unwrap(), "check"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not a directory"), "{r:?}");
}
