//! `vgpuctl export --kubevirt` checked against KubeVirt's API types and against the host the way
//! virt-handler reads it.
//!
//! The schema below is KubeVirt's, from kubevirt/kubevirt
//! `staging/src/kubevirt.io/api/core/v1/types.go` (commit 00341b09120e281be174fce990980ce9d0cf7c74):
//! `PermittedHostDevices` has `pciHostDevices`, `mediatedDevices` and `usb` (all `omitempty`);
//! `PciHostDevice` has `pciVendorSelector` and `resourceName` (required: no `omitempty`) and
//! `externalResourceProvider` (`omitempty`); `MediatedHostDevice` has `mdevNameSelector`,
//! `resourceName` (required) and `externalResourceProvider`. The CR holds it at
//! `spec.configuration.permittedHostDevices` (`KubeVirtSpec.Configuration`,
//! `KubeVirtConfiguration.PermittedHostDevices` in the same file).

mod common;
mod integrations_util;

use std::collections::BTreeSet;

use common::*;
use integrations_util::*;
use yaml_rust2::{Yaml, YamlLoader};

/// (list field of PermittedHostDevices, required fields, optional fields) of its item type.
const SCHEMA: &[(&str, &[&str], &[&str])] = &[
    (
        "pciHostDevices",
        &["pciVendorSelector", "resourceName"],
        &["externalResourceProvider"],
    ),
    (
        "mediatedDevices",
        &["mdevNameSelector", "resourceName"],
        &["externalResourceProvider"],
    ),
    (
        "usb",
        &["resourceName"],
        &["selectors", "externalResourceProvider"],
    ),
];

fn is_vendor_device(s: &str) -> bool {
    let hex4 = |p: &str| p.len() == 4 && p.chars().all(|c| c.is_ascii_hexdigit());
    matches!(s.split_once(':'), Some((v, d)) if hex4(v) && hex4(d))
}

fn key<'a>(y: &'a Yaml, k: &str) -> &'a Yaml {
    &y[k]
}

/// One list item: (field, string value) pairs.
type Row = Vec<(String, String)>;

/// Check `text` against the schema: Ok(list field -> its items).
fn check(text: &str) -> Result<Vec<(String, Vec<Row>)>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let [doc] = docs.as_slice() else {
        return Err(format!("{} YAML documents, want one", docs.len()));
    };
    let only = |y: &Yaml, k: &str, path: &str| -> Result<(), String> {
        let h = y.as_hash().ok_or(format!("{path} is not a mapping"))?;
        let keys: Vec<_> = h.keys().map(|k| k.as_str().unwrap_or("?")).collect();
        if keys != [k] {
            return Err(format!("{path} has {keys:?}, want only {k}"));
        }
        Ok(())
    };
    only(doc, "spec", "the document")?;
    only(key(doc, "spec"), "configuration", "spec")?;
    only(
        key(key(doc, "spec"), "configuration"),
        "permittedHostDevices",
        "spec.configuration",
    )?;
    let phd = key(
        key(key(doc, "spec"), "configuration"),
        "permittedHostDevices",
    );
    let h = phd
        .as_hash()
        .ok_or("permittedHostDevices is not a mapping")?;
    let mut out = Vec::new();
    for (list, items) in h {
        let list = list.as_str().ok_or("a non-string key")?;
        let (_, required, optional) = SCHEMA.iter().find(|(l, _, _)| *l == list).ok_or(format!(
            "permittedHostDevices.{list} is not a KubeVirt field"
        ))?;
        let items = items
            .as_vec()
            .ok_or(format!("permittedHostDevices.{list} is not a list"))?;
        let mut rows = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let fields = item
                .as_hash()
                .ok_or(format!("{list}[{i}] is not a mapping"))?;
            let mut row = Vec::new();
            for (k, v) in fields {
                let k = k.as_str().ok_or("a non-string key")?;
                if !required.contains(&k) && !optional.contains(&k) {
                    return Err(format!("{list}[{i}].{k} is not a field of its type"));
                }
                let v = v
                    .as_str()
                    .ok_or(format!("{list}[{i}].{k} is not a string"))?;
                // virt-handler splits the selector at ':' into two hex ids.
                if k == "pciVendorSelector" && !is_vendor_device(v) {
                    return Err(format!("{list}[{i}].{k} {v:?} is not VENDOR:DEVICE"));
                }
                row.push((k.to_string(), v.to_string()));
            }
            for r in *required {
                if !row.iter().any(|(k, _)| k == r) {
                    return Err(format!("{list}[{i}] lacks the required {r}"));
                }
            }
            rows.push(row);
        }
        out.push((list.to_string(), rows));
    }
    Ok(out)
}

fn field<'a>(row: &'a [(String, String)], k: &str) -> &'a str {
    &row.iter().find(|(f, _)| f == k).unwrap().1
}

fn export(s: &Sim) -> String {
    let r = s.run(&["export", "--kubevirt"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
}

#[test]
fn mdev_host_permits_each_pinned_type_by_the_name_virt_handler_reads() {
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n\
         [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\
         [[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 1\n",
    );
    let text = export(&s);
    let lists = check(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(lists.len(), 1, "{text}");
    assert_eq!(lists[0].0, "mediatedDevices");
    // virt-handler matches mdevNameSelector with each mdev's mdev_type/name, trimmed.
    let mut names = BTreeSet::new();
    for uuid in std::fs::read_dir(s.root().join("sys/bus/mdev/devices")).unwrap() {
        let p = uuid.unwrap().path().join("mdev_type/name");
        names.insert(std::fs::read_to_string(p).unwrap().trim().to_string());
    }
    let selectors: BTreeSet<String> = lists[0]
        .1
        .iter()
        .map(|row| field(row, "mdevNameSelector").to_string())
        .collect();
    assert_eq!(selectors, names, "{text}");
    for row in &lists[0].1 {
        let r = field(row, "resourceName");
        assert!(r.starts_with("nvidia.com/") && !r.contains(' '), "{r}");
    }

    // Malformed blocks fail the check: a misspelt field, a missing required one, a list KubeVirt
    // does not have.
    for bad in [
        text.replace("mdevNameSelector", "mdevNameSelecter"),
        text.replace("        resourceName:", "        # resourceName:"),
        text.replace("mediatedDevices:", "mediatedDevice:"),
    ] {
        assert!(check(&bad).is_err(), "accepted:\n{bad}");
    }
}

#[test]
fn vendor_vfio_host_permits_its_vfs_by_their_own_vendor_and_device() {
    let s = ready_host(
        "l40s-vfio-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 2\n",
    );
    let text = export(&s);
    let lists = check(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(lists.len(), 1, "{text}");
    assert_eq!(lists[0].0, "pciHostDevices");
    let rows = &lists[0].1;
    assert_eq!(rows.len(), 1, "{text}");
    // Every pinned VF's own sysfs ids.
    let pins: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    let mut ids = BTreeSet::new();
    for v in pins["vgpus"].as_array().unwrap() {
        let vf = v["parent"].as_str().unwrap();
        let read = |f: &str| {
            s.read(&format!("sys/bus/pci/devices/{vf}/{f}"))
                .trim()
                .trim_start_matches("0x")
                .to_uppercase()
        };
        ids.insert(format!("{}:{}", read("vendor"), read("device")));
    }
    assert_eq!(
        ids,
        BTreeSet::from([field(&rows[0], "pciVendorSelector").to_uppercase()])
    );
    assert_eq!(
        field(&rows[0], "resourceName"),
        "nvidia.com/NVIDIA_L40S-12Q"
    );
    for bad in [
        // HCO's field name, not KubeVirt's.
        text.replace("pciVendorSelector", "pciDeviceSelector"),
        text.replace("10DE:", "10DE"),
    ] {
        assert!(check(&bad).is_err(), "accepted:\n{bad}");
    }
}
