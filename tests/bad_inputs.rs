//! The bad-input corpus (issue 9): every profile under tests/bad-inputs/ (listed in its
//! manifest.toml) given to `vgpuctl setup --profile FILE --yes` on a simulated host must exit 2,
//! name the field or file at fault on stderr, never echo a link's credential, and leave the
//! root's file tree exactly as it was.

mod common;
use common::*;

use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    model: String,
    expect: Vec<String>,
    what: String,
    #[serde(default)]
    prepare: Option<String>,
}

#[test]
fn every_bad_input_is_rejected_with_the_root_unchanged() {
    let dir = repo().join("tests/bad-inputs");
    let m: Manifest =
        toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml")).unwrap()).unwrap();
    // Every file is in the manifest and every case has a file.
    let mut listed: Vec<&str> = m.case.iter().map(|c| c.file.as_str()).collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "manifest.toml")
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk, "manifest and directory disagree");
    assert!(m.case.len() >= 40, "{} cases", m.case.len());

    // One simulated host per model: a rejected profile changes nothing, so they can be shared.
    let mut sims: BTreeMap<String, Sim> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rejected = 0;
    for c in &m.case {
        let sim = sims
            .entry(c.model.clone())
            .or_insert_with(|| Sim::new(&c.model));
        if let Some(d) = &c.prepare {
            std::fs::create_dir_all(sim.root().join(d)).unwrap();
        }
        let before = sim.hash();
        let path = dir.join(&c.file);
        let r = sim.run(&["setup", "--profile", path.to_str().unwrap(), "--yes"]);
        let mut wrong = Vec::new();
        if r.code != 2 {
            wrong.push(format!("exit {} (want 2)", r.code));
        }
        // Every error names the profile's file, the host-dependent ones too (issue 12, item 9).
        if !r.stderr.contains(c.file.as_str()) {
            wrong.push(format!("stderr does not name the file {}", c.file));
        }
        for e in &c.expect {
            if !r.stderr.contains(e.as_str()) {
                wrong.push(format!("stderr lacks {e:?}"));
            }
        }
        if r.all().contains("hmac=a5d806ec") {
            wrong.push("the link's credential was printed".into());
        }
        if sim.hash() != before {
            wrong.push("the root's file tree changed".into());
            // Later cases need the fresh host this model started as.
            sims.remove(&c.model);
        }
        if wrong.is_empty() {
            rejected += 1;
        } else {
            failures.push(format!(
                "{} ({}, on {}): {}\n  stdout: {}\n  stderr: {}",
                c.file,
                c.what,
                c.model,
                wrong.join("; "),
                r.stdout.trim(),
                r.stderr.trim()
            ));
        }
    }
    // One line for scripts/reliability-report.
    println!(
        "RELIABILITY bad-inputs: tried={} rejected={rejected} wrong={}",
        m.case.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn setup(s: &Sim, p: &std::path::Path) -> Run {
    s.run(&["setup", "--profile", p.to_str().unwrap(), "--yes"])
}

/// Issue 12, item 5: a fixed UUID already live on another GPU is refused before any change
/// (it used to fail with EEXIST at the create step, after the steps before it).
#[test]
fn a_uuid_live_on_another_gpu_is_refused_up_front() {
    const U: &str = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    let s = Sim::new("t4x2-ready");
    let first = profile_file(&format!(
        "[[gpus]]\nselect = \"0000:3b:00.0\"\nvgpu_type = \"T4-4Q\"\ncount = 1\nuuids = [\"{U}\"]\n"
    ));
    let r = setup(&s, first.path());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.live_vgpus().contains_key(U));
    // The same UUID for the other GPU.
    let second = profile_file(&format!(
        "[host]\nreboot = \"never\"\n\n[[gpus]]\nselect = \"0000:af:00.0\"\nvgpu_type = \"T4-4Q\"\ncount = 1\nuuids = [\"{U}\"]\n"
    ));
    let before = s.hash();
    let r = setup(&s, second.path());
    assert_eq!(r.code, 2, "{r:?}");
    let file = second.path().display().to_string();
    assert!(
        r.stderr.contains(&format!(
            "{file}:8:10: gpus[0].uuids[0]: {U} is already a live vGPU on 0000:3b:00.0"
        )),
        "{r:?}"
    );
    assert_eq!(s.hash(), before, "the root changed: {r:?}");
}

/// Issue 12, item 5, on a host half-way through setup (driver installed by the first run, the
/// reboot done, the vGPUs not made yet): a url without sha256 is still refused, though this host
/// no longer needs the download. It used to be accepted there.
#[test]
fn a_host_half_way_through_setup_still_gets_every_field_checked() {
    let s = Sim::new("a40x8");
    let good = std::fs::read_to_string(repo().join("profiles/a40.toml")).unwrap();
    let p = profile_file(&good);
    let r = setup(&s, p.path());
    assert_eq!(r.code, 3, "the first run stops at the reboot: {r:?}");
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let bad = profile_file(
        "[host]\nreboot = \"never\"\n\n[driver]\nurl = \"https://mirror.example.com/d/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n",
    );
    let before = s.hash();
    let r = setup(&s, bad.path());
    assert_eq!(r.code, 2, "{r:?}");
    let file = bad.path().display().to_string();
    assert!(
        r.stderr.contains(&format!("{file}:4:1: driver.sha256")),
        "{r:?}"
    );
    assert_eq!(s.hash(), before, "the root changed: {r:?}");
}

/// Issue 12, item 7: the kernel names mdev devices in lowercase, so a profile's UUIDs in
/// capitals must converge (the second run plans nothing) and be found by `--libvirt-xml`.
#[test]
fn uppercase_uuids_converge_and_are_found() {
    const U: &str = "242E5EA7-90E2-4D6E-AFEB-A0B9A656C108";
    let lower = U.to_ascii_lowercase();
    let s = Sim::new("a40x8-ready");
    let p = profile_file(&format!(
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\nuuids = [\"{U}\"]\n"
    ));
    let r = setup(&s, p.path());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.live_vgpus().contains_key(&lower), "{r:?}");
    let r = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("Nothing to do: the host already matches the profile."),
        "{r:?}"
    );
    let r = s.run(&["status", "--libvirt-xml", U]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("<address uuid='{lower}'/>")),
        "{r:?}"
    );
}

/// Issue 12, item 8: short PCI addresses (`67:00.0`, `E8:00.0`) are stored and used in the
/// kernel's full form, so the boot-time restore finds them (`sriov = ["68:00.0"]` used to make
/// every boot's restore wait its whole 120 s and fail).
#[test]
fn short_pci_addresses_are_stored_in_full_and_restored() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file(
        "sriov = [\"68:00.0\", \"6A:00.0\"]\n[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n",
    );
    let r = setup(&s, p.path());
    assert_eq!(r.code, 0, "{r:?}");
    let active = s.read("etc/vgpuctl/profile.toml");
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert!(
        pins.contains("\"0000:68:00.0\"")
            && pins.contains("\"0000:6a:00.0\"")
            && active.contains("select = \"0000:67:00.0\""),
        "{active}\n{pins}"
    );
    let saved = s.live_vgpus();
    assert_eq!(saved.len(), 2, "{saved:?}");
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    let report: serde_json::Value =
        serde_json::from_str(&s.read("run/vgpuctl/restore.json")).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sriov"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(s.live_vgpus(), saved);
}
