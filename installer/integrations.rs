//! Where the vGPUs go next: libvirt `<hostdev>` elements, mdevctl definitions, and a profile
//! captured from the live host. Pure functions of facts and the active profile.

use crate::facts::{HostFacts, Interface};
use crate::import::mdevctl::{self, MdevctlDef};
use crate::pci::PciAddr;
use crate::pins::Pins;
use crate::profile::{GpuRequest, Profile, SavedVgpu};
use crate::status::Status;
use crate::vgpu_name;

/// The libvirt `<hostdev>` for one vGPU: the mdev form with its UUID, or, on NVIDIA's
/// vendor-specific VFIO interface, the VF itself as a PCI device (libvirt must not rebind it:
/// managed='no').
pub fn hostdev_xml(uuid: Option<&str>, parent: &str, interface: Interface) -> Option<String> {
    match interface {
        Interface::Mdev => Some(format!(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci' managed='no'>\n  <source>\n    <address uuid='{}'/>\n  </source>\n</hostdev>\n",
            uuid?
        )),
        Interface::VendorVfio => {
            let a = PciAddr::parse(parent).ok()?;
            Some(format!(
                "<hostdev mode='subsystem' type='pci' managed='no'>\n  <source>\n    <address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{:x}'/>\n  </source>\n</hostdev>\n",
                a.domain, a.bus, a.device, a.function
            ))
        }
        Interface::None => None,
    }
}

/// `<hostdev>` elements for every vGPU in a status (or only `only`), each after an XML comment
/// naming it.
pub fn libvirt_xml(status: &Status, only: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    let rows = status
        .gpus
        .iter()
        .flat_map(|g| g.vgpus.iter().map(move |v| (g.interface.as_str(), v)))
        .chain(status.other_mdevs.iter().map(|v| ("mdev", v)));
    for (iface, v) in rows {
        if only.is_some_and(|u| v.uuid.as_deref() != Some(u)) {
            continue;
        }
        let interface = if iface == "vendor-vfio" {
            Interface::VendorVfio
        } else {
            Interface::Mdev
        };
        if let Some(x) = hostdev_xml(v.uuid.as_deref(), &v.parent, interface) {
            out.push_str(&format!(
                "<!-- {} {} on {} -->\n{x}",
                v.uuid.as_deref().unwrap_or("vGPU"),
                vgpu_name::short(&v.type_name),
                v.parent
            ));
        }
    }
    if out.is_empty() {
        return Err(match only {
            Some(u) => format!("no vGPU with UUID {u} on this host (see `vgpuctl status`)"),
            None => "no vGPUs on this host".into(),
        });
    }
    Ok(out)
}

/// mdevctl definitions for the pinned mdev vGPUs, started manually (our unit starts them at the
/// right time: mdevctl's udev autostart fires before NVIDIA's types are ready).
pub fn mdevctl_defs(pins: &Pins) -> Vec<MdevctlDef> {
    pins.vgpus
        .iter()
        .filter(|v| v.interface == "mdev")
        .map(|v| MdevctlDef {
            parent: v.parent.clone(),
            uuid: v.uuid.clone(),
            mdev_type: v.type_id.clone(),
            autostart: false,
            attrs: Vec::new(),
        })
        .collect()
}

pub fn render_mdevctl(def: &MdevctlDef) -> (String, String) {
    (mdevctl::def_path(def), mdevctl::render(def))
}

/// An exported profile's text: a header saying how to replay it, and, when the profile names no
/// driver (an active profile never keeps the licensed link), a commented `[driver]` section to
/// fill in for a fresh host, placed after `[host]` where uncommenting it gives valid TOML.
pub fn exported_text(body: &str, has_driver: bool, loaded_version: Option<&str>) -> String {
    let mut out = String::from(
        "# Exported by vgpuctl from the live host: `vgpuctl setup --profile FILE` recreates it.\n",
    );
    if has_driver {
        out.push_str(body);
        return out;
    }
    out.push_str(
        "# On a host whose vGPU driver is installed it runs as it is; a fresh host needs the\n\
         # [driver] section below filled in (export never writes a download link).\n",
    );
    let running = loaded_version
        .map(|v| format!(" (this host runs {v})"))
        .unwrap_or_default();
    let driver = format!(
        "\n# [driver]\n\
         # The licensed GRID host package{running}: a local file,\n\
         # path = \"/root/NVIDIA-GRID-Linux-KVM-VERSION.zip\"\n\
         # or a download link with the package's SHA-256:\n\
         # url = \"https://...\"\n\
         # sha256 = \"...\"\n"
    );
    // After the [host] table: the next table header, else the end.
    let lines: Vec<&str> = body.lines().collect();
    let host = lines.iter().position(|l| *l == "[host]");
    let next = host.and_then(|h| {
        lines[h + 1..]
            .iter()
            .position(|l| l.starts_with('['))
            .map(|k| h + 1 + k)
    });
    match next {
        Some(at) => {
            let head = lines[..at].join("\n");
            out.push_str(head.trim_end());
            out.push('\n');
            out.push_str(&driver);
            out.push('\n');
            out.push_str(&lines[at..].join("\n"));
            out.push('\n');
        }
        None => {
            out.push_str(body.trim_end());
            out.push('\n');
            out.push_str(&driver);
        }
    }
    out
}

/// The live host as a profile setup accepts: one `[[gpus]]` per GPU and type it has vGPUs of (the type,
/// its count, its UUIDs), plus the pins, so a hand-made host can be captured and replayed.
pub fn export_profile(facts: &HostFacts, active: Option<&Profile>, pins: Option<&Pins>) -> Profile {
    let all = facts.vgpus();
    let mut p = Profile {
        host: active.map(|a| a.host.clone()).unwrap_or_default(),
        cloudpods: active.and_then(|a| a.cloudpods.clone()),
        nova: active.and_then(|a| a.nova.clone()),
        ..Profile::default()
    };
    for g in &facts.gpus {
        let on: Vec<_> = all
            .iter()
            .filter(|v| v.gpu.as_deref() == Some(g.address.as_str()))
            .collect();
        // One entry per type, in the order the GPU lists its vGPUs: a GPU holding several
        // types (mixed-size mode) exports one entry for each.
        let mut types: Vec<String> = Vec::new();
        for v in &on {
            if !types.iter().any(|t| vgpu_name::same(&v.type_name, t)) {
                types.push(vgpu_name::short(&v.type_name).to_string());
            }
        }
        let pin_uuid = |v: &crate::facts::Vgpu| {
            v.uuid.clone().or_else(|| {
                pins.and_then(|a| {
                    a.vgpus
                        .iter()
                        .find(|s| s.parent == v.parent)
                        .map(|s| s.uuid.clone())
                })
            })
        };
        for type_name in types {
            let same: Vec<_> = on
                .iter()
                .filter(|v| vgpu_name::same(&v.type_name, &type_name))
                .collect();
            let uuids: Vec<String> = same.iter().filter_map(|v| pin_uuid(v)).collect();
            p.gpus.push(GpuRequest {
                select: g.address.clone(),
                vgpu_type: type_name,
                count: same.len() as u32,
                uuids: if uuids.len() == same.len() {
                    uuids.clone()
                } else {
                    Vec::new()
                },
            });
            for v in same {
                if let Some(uuid) = pin_uuid(v) {
                    p.vgpus.push(SavedVgpu {
                        uuid,
                        type_id: v.type_id.clone(),
                        type_name: v.type_name.clone(),
                        parent: v.parent.clone(),
                        gpu: Some(g.address.clone()),
                        interface: v.interface.as_str().to_string(),
                        gi_profile: crate::vgpu::mig::gi_profile_of(&v.type_name).map(String::from),
                    });
                }
            }
        }
    }
    p
}
