//! `vgpuctl export --mdevctl` read back by Debian's real mdevctl: `mdevctl list --defined
//! --dumpjson` on the simulated root shows exactly the pinned vGPUs, each `start: manual`.
//!
//! mdevctl takes its root from `MDEVCTL_ENV_ROOT` (mdevctl `src/environment.rs`), but only
//! from 1.3 on: Debian bookworm's 1.2.0 always reads `/etc/mdevctl.d`. With such an mdevctl the
//! root's `etc/mdevctl.d` is bind-mounted over `/etc/mdevctl.d` in a private mount namespace
//! (`unshare --mount`), so the real system's directory is never touched either way.

mod common;
mod integrations_util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use integrations_util::*;

/// Whether this mdevctl honours MDEVCTL_ENV_ROOT (the name is in its binary when it does).
fn honours_env_root(mdevctl: &Path) -> bool {
    let bin = std::fs::read(mdevctl).unwrap();
    bin.windows(16).any(|w| w == b"MDEVCTL_ENV_ROOT")
}

/// Run mdevctl with `args` against the definitions under `root`.
fn mdevctl(mdevctl: &Path, root: &Path, args: &[&str]) -> (i32, String, String) {
    // What Debian's package installs next to the definitions (mdevctl checks they exist).
    for d in ["callouts", "notifiers"] {
        std::fs::create_dir_all(root.join("etc/mdevctl.d/scripts.d").join(d)).unwrap();
    }
    if honours_env_root(mdevctl) {
        return output(
            Command::new(mdevctl)
                .args(args)
                .env("MDEVCTL_ENV_ROOT", root),
        );
    }
    let unshare = need("unshare", "apt-get install util-linux")
        .expect("unshare is part of util-linux, which every Debian has");
    // Positional parameters, never interpolated into the script.
    let mut c = Command::new(unshare);
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/mdevctl.d && shift && exec \"$@\"",
        "sh",
    ])
    .arg(root.join("etc/mdevctl.d"))
    .arg(mdevctl)
    .args(args);
    let r = output(&mut c);
    assert!(
        !r.2.contains("mount:") && !r.2.contains("unshare:"),
        "cannot give mdevctl a private /etc/mdevctl.d (needs root): {}",
        r.2
    );
    r
}

/// (parent, uuid, type, start) of every definition mdevctl lists.
fn listed(json: &str) -> BTreeSet<(String, String, String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("mdevctl JSON: {e}: {json}"));
    let mut out = BTreeSet::new();
    for parents in v.as_array().unwrap() {
        for (parent, devs) in parents.as_object().unwrap() {
            for dev in devs.as_array().unwrap() {
                for (uuid, d) in dev.as_object().unwrap() {
                    out.insert((
                        parent.clone(),
                        uuid.clone(),
                        d["mdev_type"].as_str().unwrap().to_string(),
                        d["start"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn real_mdevctl_reads_back_exactly_our_vgpus() {
    let Some(bin) = need("mdevctl", "apt-get install mdevctl") else {
        return;
    };
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n\
         [[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\
         [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 3\n",
    );
    // A definition that is not ours, made by mdevctl's own `define`, must stay and be listed.
    let other = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    let (code, _, err) = mdevctl(
        &bin,
        s.root(),
        &[
            "define",
            "-u",
            other,
            "-p",
            "0000:6a:00.4",
            "-t",
            "nvidia-558",
        ],
    );
    assert_eq!(code, 0, "mdevctl define: {err}");

    let r = s.run(&["export", "--mdevctl"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("5 mdevctl definition(s)"), "{r:?}");

    let j = s.json(&["status", "--json"]);
    let mut want: BTreeSet<_> = j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
        .map(|v| {
            (
                v["parent"].as_str().unwrap().to_string(),
                v["uuid"].as_str().unwrap().to_string(),
                v["type_id"].as_str().unwrap().to_string(),
                "manual".to_string(),
            )
        })
        .collect();
    assert_eq!(want.len(), 5);
    want.insert((
        "0000:6a:00.4".into(),
        other.into(),
        "nvidia-558".into(),
        "manual".into(),
    ));

    let (code, out, err) = mdevctl(&bin, s.root(), &["list", "--defined", "--dumpjson"]);
    assert_eq!(code, 0, "mdevctl list: {err}");
    assert_eq!(listed(&out), want, "mdevctl's view:\n{out}");

    // The plain listing agrees, one line per device, `manual` each.
    let (code, plain, err) = mdevctl(&bin, s.root(), &["list", "--defined"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 6, "{plain}");
    assert!(lines.iter().all(|l| l.ends_with(" manual")), "{plain}");

    // Exporting again writes the same bytes: mdevctl's files are not rewritten.
    let hash = s.hash();
    assert_eq!(s.run(&["export", "--mdevctl"]).code, 0);
    assert_eq!(s.hash(), hash);
}

#[test]
fn vendor_vfio_host_has_nothing_for_mdevctl() {
    let s = ready_host(
        "l40s-vfio-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 1\n",
    );
    let r = s.run(&["export", "--mdevctl"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("0 mdevctl definition(s)"), "{r:?}");
    assert!(!s.exists("etc/mdevctl.d"));
}

/// `--mdevctl` writes one file per vGPU where mdevctl reads them; `-o FILE` was once accepted
/// and ignored. Now refused (exit 2) before anything is written, naming both flags.
#[test]
fn mdevctl_export_refuses_an_output_file() {
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-12Q\"\ncount = 1\n",
    );
    let out = s.root().join("defs.txt");
    let hash = s.hash();
    let r = s.run(&["export", "--mdevctl", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("--mdevctl") && r.stderr.contains("--output"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash, "a refused export changed the host");
    assert!(!out.exists());
}
