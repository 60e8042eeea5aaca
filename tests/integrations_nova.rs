//! `vgpuctl export --nova` read back by Nova itself: `tests/fixtures/nova/check_fragment.py`
//! loads the fragment with oslo.config and Nova's own option definitions (nova and oslo.config
//! from PyPI, in the venv `scripts/test-deps` makes), rejects any section or key Nova does not
//! define, and runs Nova's own readers over it: the libvirt driver's `_get_supported_vgpu_types`
//! for `[devices]`/`[mdev_*]`, `nova.pci.whitelist.Whitelist` for `device_spec` and
//! `nova.pci.request.get_alias_from_config` for `alias`. What Nova read must be the pins.

mod common;
mod integrations_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use integrations_util::*;

/// The venv's python. Missing: skipped with a loud message on a developer machine; a failure
/// in CI or with VGPUCTL_REQUIRE_TEST_DEPS set (as the Ansible test).
fn nova_python() -> Option<PathBuf> {
    let p = test_cache().join("nova-venv/bin/python");
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "{} is missing: run scripts/test-deps (it installs nova and oslo.config from PyPI into \
         that venv)",
        p.display()
    );
    if in_ci() || std::env::var_os("VGPUCTL_REQUIRE_TEST_DEPS").is_some_and(|v| !v.is_empty()) {
        panic!("the Nova test must run here: {msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPED the Nova fragment test: {msg} !!!!!!!!\n");
    None
}

/// Nova's reading of `file`: Ok(JSON of what it read) or Err(Nova's complaint).
fn nova_reads(py: &Path, file: &Path) -> Result<serde_json::Value, String> {
    let script = repo().join("tests/fixtures/nova/check_fragment.py");
    let (code, out, err) = output(
        Command::new(py)
            .arg("-W")
            .arg("ignore")
            .arg(&script)
            .arg(file)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    if code != 0 {
        return Err(format!("exit {code}: {err}"));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))
}

/// (parent, type id, interface) of every pin.
fn pins(s: &Sim) -> Vec<(String, String, String)> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["parent"].as_str().unwrap().to_string(),
                v["type_id"].as_str().unwrap().to_string(),
                v["interface"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn export_nova(s: &Sim, dir: &Path) -> (PathBuf, String) {
    let file = dir.join("vgpu.conf");
    let r = s.run(&["export", "--nova", "-o", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    (file, text)
}

#[test]
fn mdev_fragment_is_what_nova_reads_as_the_pinned_parents() {
    let Some(py) = nova_python() else {
        return;
    };
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n\
         [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\
         [[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 3\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (file, text) = export_nova(&s, dir.path());
    let read = nova_reads(&py, &file).unwrap_or_else(|e| panic!("Nova rejects:\n{text}\n{e}"));
    let mut want = serde_json::Map::new();
    let mut types = Vec::new();
    for (parent, type_id, iface) in pins(&s) {
        assert_eq!(iface, "mdev");
        want.insert(parent, type_id.clone().into());
        if !types.contains(&type_id) {
            types.push(type_id);
        }
    }
    assert_eq!(want.len(), 5, "{want:?}");
    assert_eq!(
        read["device_addresses"],
        serde_json::Value::Object(want),
        "{text}"
    );
    let mut got: Vec<String> = read["enabled_mdev_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    got.sort();
    types.sort();
    assert_eq!(got, types, "{text}");
    assert_eq!(read["device_spec"], serde_json::json!([]), "{text}");

    // The checker is Nova's: the same fragment with a parent under two types, or a key Nova does
    // not define, is refused.
    let first = pins(&s)[0].0.clone();
    let other = pins(&s)
        .into_iter()
        .find(|p| !p.0.starts_with(&first[..10]))
        .unwrap()
        .0;
    for (bad, why) in [
        (
            text.replacen(&other, &first, 1),
            "duplicate types for PCI ID",
        ),
        (
            text.replace("device_addresses", "device_address"),
            "is not a Nova option",
        ),
        (
            text.replacen("0000:", "0000-", 1),
            "incorrect device address",
        ),
    ] {
        let f = dir.path().join("bad.conf");
        std::fs::write(&f, &bad).unwrap();
        let e = nova_reads(&py, &f).expect_err(&bad);
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn vendor_vfio_fragment_gives_nova_each_vf_and_one_alias_per_type() {
    let Some(py) = nova_python() else {
        return;
    };
    let s = ready_host(
        "l40s-vfio-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 2\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (file, text) = export_nova(&s, dir.path());
    let read = nova_reads(&py, &file).unwrap_or_else(|e| panic!("Nova rejects:\n{text}\n{e}"));
    let mut vfs: Vec<String> = pins(&s)
        .into_iter()
        .map(|(p, _, iface)| {
            assert_eq!(iface, "vendor-vfio");
            p
        })
        .collect();
    vfs.sort();
    assert_eq!(vfs.len(), 8);
    let specs = read["device_spec"].as_array().unwrap();
    let addrs: Vec<&str> = specs
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, vfs, "{text}");
    // The VF's own ids, as its sysfs files give them.
    let device = s.read(&format!("sys/bus/pci/devices/{}/device", vfs[0]));
    let product = device.trim().trim_start_matches("0x");
    for spec in specs {
        assert_eq!(spec["vendor_id"], "10de");
        assert_eq!(spec["product_id"], product);
        assert_eq!(spec["tags"]["managed"], "false", "{spec}");
        assert_eq!(spec["tags"]["resource_class"], "CUSTOM_NVIDIA_L40S_12Q");
    }
    assert_eq!(
        read["alias"],
        serde_json::json!({"nvidia-l40s-12q": [{
            "dev_type": "type-VF", "vendor_id": "10de", "product_id": product,
            "resource_class": "CUSTOM_NVIDIA_L40S_12Q"
        }]}),
        "{text}"
    );
    assert!(read["device_addresses"].as_object().unwrap().is_empty());

    // Nova refuses a malformed spec or alias.
    for (bad, why) in [
        (text.replacen(".4\"", ".4x\"", 1), "device_spec"),
        (
            text.replace("\"device_type\": \"type-VF\"", "\"device_type\": \"VF\""),
            "alias",
        ),
        (text.replacen("\"10de\"", "\"10dex\"", 1), "device_spec"),
    ] {
        let f = dir.path().join("bad.conf");
        std::fs::write(&f, &bad).unwrap();
        let e = nova_reads(&py, &f).expect_err(&bad);
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn export_formats_are_one_at_a_time_and_need_pins() {
    let s = Sim::new("a40x8-ready");
    for args in [
        &["export", "--nova", "--kubevirt"][..],
        &["export", "--nova", "--mdevctl"],
        &["export", "--proxmox", "--kubevirt"],
    ] {
        let r = s.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("cannot be used with"), "{r:?}");
    }
    let before = s.hash();
    let r = s.run(&["export", "--nova"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("nothing for Nova"), "{r:?}");
    assert_eq!(s.hash(), before);
}

const NOVA_DIR: &str = "etc/nova/nova.conf.d";
const NOVA_FILE: &str = "etc/nova/nova.conf.d/vgpu.conf";

fn nova_profile(count: u32, restart: bool) -> String {
    format!(
        "[host]\nreboot = \"never\"\n\
         [[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-12Q\"\ncount = {count}\n\
         [nova]\nrestart = {restart}\n"
    )
}

/// `[nova]`: setup writes the fragment `export --nova` prints (and Nova reads it as the pins),
/// restarts nova-compute once, leaves it alone when nothing changed (a reboot's restore), and
/// follows a changed profile.
#[test]
fn nova_section_keeps_the_fragment_in_step_through_setup_and_restore() {
    let s = Sim::new("a40x8-ready");
    std::fs::create_dir_all(s.root().join(NOVA_DIR)).unwrap();
    // nova-compute's unit, as Ubuntu's nova-compute package installs it.
    write(
        &s.root().join("lib/systemd/system/nova-compute.service"),
        "[Unit]\nDescription=OpenStack Compute\n[Service]\nExecStart=/usr/bin/nova-compute\n",
    );
    let p = profile_file(&nova_profile(2, true));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.all();
    assert!(
        out.contains("Nova: wrote /etc/nova/nova.conf.d/vgpu.conf (2 pinned vGPU(s))"),
        "{out}"
    );
    assert!(
        out.contains("Nova: restarted nova-compute (`systemctl restart nova-compute`)"),
        "{out}"
    );
    assert!(!s.exists("var/lib/vgpuctl/nova-restart-pending"));
    let written = s.read(NOVA_FILE);
    let exported = s.run(&["export", "--nova"]);
    assert_eq!(exported.stdout, written);
    if let Some(py) = nova_python() {
        let read = nova_reads(&py, &s.root().join(NOVA_FILE)).unwrap();
        assert_eq!(
            read["device_addresses"].as_object().unwrap().len(),
            2,
            "{written}"
        );
    }

    // A reboot: restore recreates the same vGPUs, the fragment is unchanged, no restart.
    let r = s.run(&["sim", "reboot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.read(NOVA_FILE), written);
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.all()
            .contains("Nova: /etc/nova/nova.conf.d/vgpu.conf already lists the 2"),
        "{r:?}"
    );
    assert!(!r.all().contains("restarted nova-compute"), "{r:?}");

    // One more vGPU: the fragment follows.
    let p = profile_file(&nova_profile(3, false));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("run `systemctl restart nova-compute`"),
        "{r:?}"
    );
    let now = s.read(NOVA_FILE);
    assert_ne!(now, written);
    assert_eq!(now.matches("0000:e8:").count(), 3, "{now}");
    // The first version vgpuctl replaced is kept.
    assert_eq!(
        s.read(&format!("var/lib/vgpuctl/backups/{NOVA_FILE}")),
        written
    );
}

#[test]
fn nova_section_without_nova_installed_is_refused_before_any_change() {
    let s = Sim::new("a40x8-ready");
    let before = s.hash();
    let p = profile_file(&nova_profile(1, false));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("nova.conf: /etc/nova/nova.conf.d does not exist: is nova-compute installed"),
        "{r:?}"
    );
    assert_eq!(s.hash(), before);
}

#[test]
fn failed_nova_compute_restart_is_reported_and_retried() {
    let s = Sim::new("a40x8-ready");
    std::fs::create_dir_all(s.root().join(NOVA_DIR)).unwrap();
    // No nova-compute unit: systemctl fails.
    let p = profile_file(&nova_profile(1, true));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.all()
            .contains("restarting nova-compute failed: `systemctl restart nova-compute`"),
        "{r:?}"
    );
    assert!(s.exists("var/lib/vgpuctl/nova-restart-pending"));
    assert!(s.read(NOVA_FILE).contains("[mdev_"));
    write(
        &s.root().join("lib/systemd/system/nova-compute.service"),
        "[Service]\nExecStart=/usr/bin/nova-compute\n",
    );
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("already lists") && r.all().contains("restarted nova-compute"),
        "{r:?}"
    );
    assert!(!s.exists("var/lib/vgpuctl/nova-restart-pending"));
}
