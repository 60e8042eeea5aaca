//! Cross-check the embedded GPU table against the PCI ID Repository (Debian's pci.ids package):
//! every id we list must exist there as an NVIDIA device whose name agrees with our model.

use std::collections::BTreeMap;

use vgpuctl::models::MODELS;

struct Device {
    name: String,
    subsystems: BTreeMap<(u16, u16), String>,
}

fn load() -> (String, BTreeMap<u16, Device>) {
    let path = std::env::var("VGPUCTL_PCI_IDS").unwrap_or_else(|_| {
        for p in ["/var/cache/vgpuctl-test/pci.ids", "/usr/share/misc/pci.ids"] {
            if std::path::Path::new(p).exists() {
                return p.to_string();
            }
        }
        panic!("no pci.ids: run scripts/test-deps (or set VGPUCTL_PCI_IDS)")
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut devices = BTreeMap::new();
    let mut in_nvidia = false;
    let mut current: Option<u16> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            in_nvidia = line.starts_with("10de  ");
            current = None;
            continue;
        }
        if !in_nvidia {
            continue;
        }
        if let Some(rest) = line.strip_prefix("\t\t") {
            // "\t\t10de 129e  Quadro RTX 8000"
            let (ids, name) = rest.split_once("  ").unwrap();
            let (v, d) = ids.split_once(' ').unwrap();
            let key = (
                u16::from_str_radix(v, 16).unwrap(),
                u16::from_str_radix(d, 16).unwrap(),
            );
            if let Some(dev) = current.and_then(|c| devices.get_mut(&c)) {
                let dev: &mut Device = dev;
                dev.subsystems.insert(key, name.to_string());
            }
        } else {
            let rest = &line[1..];
            let (id, name) = rest.split_once("  ").unwrap();
            let id = u16::from_str_radix(id, 16).unwrap();
            devices.insert(
                id,
                Device {
                    name: name.to_string(),
                    subsystems: BTreeMap::new(),
                },
            );
            current = Some(id);
        }
    }
    (path, devices)
}

fn norm(s: &str) -> String {
    s.to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '/')
        .collect()
}

/// Compare with the bracketed product name ("TU104GL [Tesla T4]" -> "Tesla T4"), whole or one of
/// its "/" alternatives ("[A2 / A16]"): substring matches would let "A10" agree with
/// "GA102GL [A40]".
fn agrees(ours: &str, theirs: &str) -> bool {
    let ours = norm(ours);
    let product = theirs
        .split_once('[')
        .and_then(|(_, r)| r.rsplit_once(']'))
        .map(|(p, _)| p.to_string())
        .unwrap_or_else(|| theirs.to_string());
    norm(&product) == ours || product.split('/').any(|part| norm(part) == ours)
}

#[test]
fn every_model_id_exists_in_pci_ids_with_an_agreeing_name() {
    let (path, devices) = load();
    assert!(
        devices.len() > 500,
        "{path} looks truncated: {} NVIDIA devices",
        devices.len()
    );
    let mut problems = Vec::new();
    for m in MODELS {
        let Some(dev) = devices.get(&m.device_id) else {
            problems.push(format!(
                "10de:{:04x} ({}) is not in {path}",
                m.device_id, m.name
            ));
            continue;
        };
        let theirs = match m
            .subsystem_id
            .and_then(|s| dev.subsystems.get(&(0x10de, s)))
        {
            Some(sub) => sub.clone(),
            None => dev.name.clone(),
        };
        let agrees = agrees(m.name, &theirs);
        if !agrees {
            problems.push(format!(
                "10de:{:04x}: we say {:?}, pci.ids says {theirs:?}",
                m.device_id, m.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "GPU table disagrees with pci.ids:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_wrong_name_would_be_caught() {
    // The comparison above can fail: an A40 id named "A10" does not agree, though "A10" is a
    // substring of "GA102GL [A40]"; the real name and an alternative of "[A2 / A16]" do.
    let (_, devices) = load();
    let a40 = &devices[&0x2235].name;
    assert!(agrees("A40", a40));
    assert!(!agrees("A10", a40));
    assert!(agrees("A16", &devices[&0x25b6].name));
}
