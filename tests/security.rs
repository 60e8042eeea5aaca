//! Security (issue 9): no shell anywhere, values that become paths are validated, files that may
//! hold the driver link are 0600 and root's, TLS verification cannot be turned off, and a
//! mutating command on the real `/` without root refuses before doing anything.

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Production sources: everything under installer/, each file cut at its first `#[cfg(test)]`
/// (unit tests may run `sh` to cross-check the GRUB editor against a real shell).
fn production_sources() -> Vec<(PathBuf, String)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let t = std::fs::read_to_string(&p).unwrap();
                let cut = t.find("#[cfg(test)]").unwrap_or(t.len());
                out.push((p, t[..cut].to_string()));
            }
        }
    }
    let mut v = Vec::new();
    walk(&repo().join("installer"), &mut v);
    assert!(v.len() > 20);
    v
}

#[test]
fn no_shell_in_production_code() {
    let forbidden = [
        "Command::new(\"sh\")",
        "Command::new(\"bash\")",
        "Command::new(\"/bin/sh\")",
        "Cmd::new(\"sh\")",
        "Cmd::new(\"bash\")",
        "Cmd::new(\"/bin/sh\")",
        "\"sh -c",
        "\"bash -c",
        ".arg(\"-c\")",
        "duct_sh",
        "duct::sh",
        "libc::system",
        "popen",
    ];
    let mut hits = Vec::new();
    for (p, src) in production_sources() {
        // Issue 12 asks for GRUB edits to be judged by sourcing the files with /bin/sh on the
        // running system: that module, and only it, runs a shell (a constant script, through
        // Host::run).
        let sh_ok = p.ends_with("installer/setup/grub_shell.rs");
        if src.contains("\"/bin/sh\"") && !sh_ok {
            hits.push(format!("{}: names /bin/sh", p.display()));
        }
        for f in forbidden {
            if src.contains(f) {
                hits.push(format!("{}: {f}", p.display()));
            }
        }
        // Programs run only through Host::run (duct with an argument vector); the simulator's
        // unit runner (installer/sim/src/lib.rs) is the one other place that starts a process, also without a shell.
        let rel = p.strip_prefix(repo()).unwrap().display().to_string();
        if src.contains("process::Command") && rel != "installer/sim/src/lib.rs" {
            hits.push(format!("{rel}: starts a process outside Host::run"));
        }
        if src.contains("duct::cmd") && rel != "installer/host/kernel.rs" {
            hits.push(format!("{rel}: runs a program outside Host::run"));
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn tls_verification_cannot_be_turned_off() {
    let mut hits = Vec::new();
    for (p, src) in production_sources() {
        for f in [
            "danger_accept_invalid_certs",
            "danger_accept_invalid_hostnames",
            "tls_built_in_root_certs(false)",
            "dangerous()",
            "ServerCertVerifier",
        ] {
            if src.contains(f) {
                hits.push(format!("{}: {f}", p.display()));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
    // No option that could: none of the commands that download takes one.
    let s = Sim::new("a40x8");
    for args in [
        &["setup", "--help"][..],
        &["driver", "fetch", "--help"],
        &["driver", "install", "--help"],
        &["--help"],
    ] {
        let r = s.run(args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        for flag in [
            "--insecure",
            "--no-verify",
            "--no-check-certificate",
            "--skip-tls",
        ] {
            assert!(!r.stdout.contains(flag), "{args:?} offers {flag}");
        }
    }
}

const CANARY_CMDS: &[&str] = &[
    "$(touch {c})",
    "`touch {c}`",
    "; touch {c}",
    "&& touch {c}",
    "| tee {c}",
    "\\ntouch {c}",
    "' ; touch {c} ; '",
];

/// Address and type strings with shell metacharacters are refused as bad input; nothing runs.
#[test]
fn shell_metacharacters_in_profiles_are_refused() {
    let s = Sim::new("a40x8");
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let c = canary.display().to_string();
    let before = s.hash();
    let mut tried = 0;
    for pat in CANARY_CMDS {
        let evil = pat.replace("{c}", &c);
        for (field, text) in [
            (
                "gpus[0].select",
                format!("[[gpus]]\nselect = \"0000:e8:00.0{evil}\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n"),
            ),
            (
                "gpus[0].vgpu_type",
                format!("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q{evil}\"\ncount = 1\n"),
            ),
            (
                "gpus[0].uuids[0]",
                format!("[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\nuuids = [\"2f82ee72-3ac5-4615-9c0b-327c12e8c83d{evil}\"]\n"),
            ),
            (
                "sriov[0]",
                format!("sriov = [\"0000:e8:00.0{evil}\"]\n"),
            ),
            (
                "driver.path",
                format!("[driver]\npath = \"/root/x{evil}.zip\"\n"),
            ),
        ] {
            // TOML needs the backslash of `\n` escaped to mean a newline inside the string.
            let p = profile_file(&text.replace("\\n", "\n").replace("\\\n", "\\n"));
            let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
            tried += 1;
            assert_eq!(r.code, 2, "{field} {evil:?}: {r:?}");
            assert!(
                r.stderr.contains(field)
                    || r.stderr.contains(&field.replace("driver.", "[driver] "))
                    || r.stderr.contains("not valid TOML"),
                "{field} {evil:?}: {r:?}"
            );
            assert!(!canary.exists(), "{field} {evil:?} ran a command");
        }
    }
    assert_eq!(s.hash(), before);
    eprintln!("{tried} profiles with shell metacharacters refused");
}

/// rc.local lines with a command glued on are imported for their vGPU part only; the rest is
/// never run (vgpuctl reads shell, it never executes it).
#[test]
fn shell_metacharacters_in_rc_local_are_inert() {
    let s = Sim::new("a40x8-ready");
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("pwned");
    let c = canary.display().to_string();
    s.write(
        "etc/rc.local",
        &format!(
            "#!/bin/bash\n\
             /usr/lib/nvidia/sriov-manage -e 0000:e8:00.0; touch {c}\n\
             echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-566/create && touch {c}\n\
             echo $(touch {c}) > /sys/class/mdev_bus/0000:e8:00.5/mdev_supported_types/nvidia-566/create\n\
             exit 0\n"
        ),
    );
    let r = s.run(&["import"]);
    assert!(!canary.exists(), "import ran a command: {r:?}");
    assert!(r.code == 0 || r.code == 1, "{r:?}");
    // The UUID passes through as data; the dynamic line is reported, not imported.
    assert!(
        s.read("etc/vgpuctl/vgpus.toml")
            .contains("2f82ee72-3ac5-4615-9c0b-327c12e8c83d"),
        "{r:?}"
    );
    assert!(r.all().contains("rc.local:4: not imported"), "{r:?}");
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(!canary.exists(), "the restore unit ran a command");
}

/// Pins in the active profile become sysfs paths at every boot: validated like any profile.
#[test]
fn active_profile_paths_are_validated() {
    let s = Sim::new("a40x8-ready");
    for (field, pin) in [
        (
            "vgpus[0].parent",
            "parent = \"../../../../etc\"\ntype_id = \"nvidia-566\"",
        ),
        (
            "vgpus[0].type_id",
            "parent = \"0000:e8:00.4\"\ntype_id = \"../../../../../etc\"",
        ),
        (
            "vgpus[0].gpu",
            "parent = \"0000:e8:00.4\"\ntype_id = \"nvidia-566\"\ngpu = \"0000:e8:00.0/../..\"",
        ),
    ] {
        // Where pins live (vgpus.toml) and where an older release kept them (the profile copy).
        for file in ["etc/vgpuctl/vgpus.toml", "etc/vgpuctl/profile.toml"] {
            for old in ["etc/vgpuctl/vgpus.toml", "etc/vgpuctl/profile.toml"] {
                let _ = std::fs::remove_file(s.root().join(old));
            }
            s.write(
                file,
                &format!(
                    "[[vgpus]]\nuuid = \"2f82ee72-3ac5-4615-9c0b-327c12e8c83d\"\n{pin}\ntype_name = \"NVIDIA A40-24Q\"\ninterface = \"mdev\"\n"
                ),
            );
            let before = s.hash();
            let r = s.run(&["restore"]);
            assert_ne!(r.code, 0, "{file} {field}: {r:?}");
            assert!(r.stderr.contains(field), "{file} {field}: {r:?}");
            assert!(r.stderr.contains(file), "{file} {field}: {r:?}");
            assert_eq!(s.hash(), before, "{file} {field}: restore changed the host");
        }
    }
    // Paths from a profile or sysfs that try to leave the root never reach the file system.
    for bad in [
        "sys/bus/pci/devices/../../../etc/shadow",
        "/../etc",
        "a/../../b",
    ] {
        assert!(vgpuctl::host::clean_rel(bad).is_err(), "{bad}");
    }
}

/// The resume profile (what a run stopped at a reboot continues with) is 0600 and root's, and
/// holds no driver link; so is every temp file it is written through (crash_consistency checks
/// those after every kill).
#[test]
fn credential_files_are_private() {
    let s = Sim::new("a40x8");
    let r = s.run(&[
        "setup",
        "--profile",
        repo().join("profiles/a40.toml").to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    let p = s.root().join("etc/vgpuctl/setup-profile.toml");
    let md = p.metadata().unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(!t.contains("[driver]") && !t.contains("url"), "{t}");
    // An existing world-readable file becomes 0600 when rewritten as a secret.
    let h = vgpuctl::host::Host::real(s.root());
    std::fs::write(s.root().join("etc/vgpuctl/k"), "x").unwrap();
    h.write_file("etc/vgpuctl/k", b"x", vgpuctl::host::WriteOpts::secret())
        .unwrap();
    assert_eq!(
        s.root().join("etc/vgpuctl/k").metadata().unwrap().mode() & 0o777,
        0o600
    );
}

/// On the real `/` without root, every mutating command refuses before reading or writing
/// anything (run as nobody when the tests run as root).
#[test]
fn mutating_commands_on_the_real_root_refuse_without_root() {
    let as_root = nix::unistd::geteuid().is_root();
    let setpriv = Path::new("/usr/bin/setpriv");
    if as_root && !setpriv.exists() {
        eprintln!("SKIP: running as root and no setpriv to drop privileges");
        return;
    }
    // A valid profile nobody can read: the refusal must come from the privilege check.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pf = dir.path().join("a40.toml");
    std::fs::copy(repo().join("profiles/a40.toml"), &pf).unwrap();
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let profile = pf.to_str().unwrap();
    for args in [
        &["setup", "--profile", profile, "--yes"][..],
        &["restore"],
        &["import"],
        &["export", "--mdevctl"],
        &["uninstall", "--yes"],
        &["driver", "install", "--profile", profile],
    ] {
        let mut c = if as_root {
            let mut c = std::process::Command::new(setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin());
            c
        } else {
            std::process::Command::new(bin())
        };
        let o = c.args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("run it as root"), "{args:?}: {err}");
    }
}
