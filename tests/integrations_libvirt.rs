//! libvirt's own parser accepts `vgpuctl status --libvirt-xml`: each `<hostdev>` goes into a
//! domain that Debian's virsh defines on libvirt's in-process test driver (`test:///default`,
//! no libvirtd needed) with `--validate` (libvirt's RNG schema), then reads back.

mod common;
mod integrations_util;

use std::path::Path;
use std::process::Command;

use common::*;
use integrations_util::*;

const INSTALL: &str = "apt-get install libvirt-clients libvirt-daemon";

/// The `<hostdev>` elements of vgpuctl's output.
fn hostdevs(xml: &str) -> Vec<String> {
    xml.split("<hostdev ")
        .skip(1)
        .map(|rest| {
            let end = rest.find("</hostdev>").expect("closed element") + "</hostdev>".len();
            format!("<hostdev {}", &rest[..end])
        })
        .collect()
}

/// A KVM guest holding `devices` (vgpuctl's output pasted as is, comments included).
fn domain(name: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>4096</memory>\n  <vcpu>2</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  <devices>\n{devices}  </devices>\n</domain>\n"
    )
}

/// `virsh define --validate` then `dumpxml` on one test-driver connection: (status, output).
fn define(virsh: &Path, dir: &Path, name: &str, xml: &str) -> (i32, String) {
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml).unwrap();
    let (code, out, err) = output(Command::new(virsh).args([
        "-c",
        "test:///default",
        &format!("define --validate {}; dumpxml {name}", file.display()),
    ]));
    (code, format!("{out}{err}"))
}

fn vgpus(s: &Sim) -> Vec<(String, String)> {
    let j = s.json(&["status", "--json"]);
    j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
        .map(|v| {
            (
                v["uuid"].as_str().unwrap().to_string(),
                v["parent"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn mdev_hostdevs_are_accepted_by_libvirt() {
    let Some(virsh) = need("virsh", INSTALL) else {
        return;
    };
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n",
    );
    let live = vgpus(&s);
    assert_eq!(live.len(), 2);
    let r = s.run(&["status", "--libvirt-xml"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(hostdevs(&r.stdout).len(), 2, "{r:?}");
    let dir = tempfile::tempdir().unwrap();

    // All of them in one guest, vgpuctl's comments included.
    let (code, dump) = define(
        &virsh,
        dir.path(),
        "vgpu-all",
        &domain("vgpu-all", &r.stdout),
    );
    assert_eq!(code, 0, "libvirt rejected:\n{}\n{dump}", r.stdout);
    for (uuid, _) in &live {
        assert!(
            dump.contains(&format!("<address uuid='{uuid}'/>")),
            "{uuid} lost by libvirt:\n{dump}"
        );
    }
    assert_eq!(dump.matches("type='mdev'").count(), 2, "{dump}");
    assert_eq!(dump.matches("model='vfio-pci'").count(), 2, "{dump}");

    // One UUID asked for: exactly that element, accepted on its own.
    let (uuid, _) = &live[1];
    let one = s.run(&["status", "--libvirt-xml", uuid]);
    assert_eq!(one.code, 0, "{one:?}");
    assert_eq!(hostdevs(&one.stdout).len(), 1, "{one:?}");
    let (code, dump) = define(
        &virsh,
        dir.path(),
        "vgpu-one",
        &domain("vgpu-one", &one.stdout),
    );
    assert_eq!(code, 0, "{dump}");
    assert!(dump.contains(uuid.as_str()), "{dump}");

    // The check has teeth: libvirt refuses the same element with a wrong model or UUID.
    for (from, to) in [("vfio-pci", "vfio-pcie"), (uuid.as_str(), "not-a-uuid")] {
        let bad = one.stdout.replace(from, to);
        let (code, out) = define(&virsh, dir.path(), "vgpu-bad", &domain("vgpu-bad", &bad));
        assert_ne!(code, 0, "libvirt accepted a broken element:\n{bad}\n{out}");
    }
    let missing = s.run(&[
        "status",
        "--libvirt-xml",
        "00000000-0000-4000-8000-000000000000",
    ]);
    assert_eq!(missing.code, 1, "{missing:?}");
}

#[test]
fn vendor_vfio_pci_hostdevs_are_accepted_by_libvirt() {
    let Some(virsh) = need("virsh", INSTALL) else {
        return;
    };
    let s = ready_host(
        "l40s-vfio-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 1\n",
    );
    let live = vgpus(&s);
    assert!(!live.is_empty());
    let r = s.run(&["status", "--libvirt-xml"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(hostdevs(&r.stdout).len(), live.len(), "{r:?}");
    let dir = tempfile::tempdir().unwrap();
    let (code, dump) = define(&virsh, dir.path(), "vgpu-vf", &domain("vgpu-vf", &r.stdout));
    assert_eq!(code, 0, "libvirt rejected:\n{}\n{dump}", r.stdout);
    assert_eq!(
        dump.matches("type='pci' managed='no'").count(),
        live.len(),
        "{dump}"
    );
    // Each VF is named by its PCI address, as libvirt writes it back.
    for (_, vf) in &live {
        let (dom, rest) = vf.split_once(':').unwrap();
        let (bus, rest) = rest.split_once(':').unwrap();
        let (slot, func) = rest.split_once('.').unwrap();
        let want = format!(
            "<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{func}'/>"
        );
        assert!(dump.contains(&want), "{want} missing:\n{dump}");
    }
}
