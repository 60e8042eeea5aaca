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
