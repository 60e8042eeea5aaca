//! `vgpuctl export --proxmox` read as Proxmox reads `/etc/pve/mapping/pci.cfg`.
//!
//! The reader below follows Proxmox's own code (no Proxmox package installs on Debian: its
//! parser, libpve-guest-common-perl, is in Proxmox's repository only):
//! - `PVE::SectionConfig::parse_config` (proxmox/pve-common `src/PVE/SectionConfig.pm`): `#`
//!   lines are skipped, a section starts at a header line and ends at an empty line, each
//!   property is a line `^\s+(\S+)(\s+(.*\S))?\s*$`;
//! - `PVE::Mapping::PCI` (proxmox/pve-guest-common `src/PVE/Mapping/PCI.pm`): the header is the
//!   mapping id alone (`pve-configid`, `[a-z][a-z0-9_-]+`, any case), the properties are
//!   `description`, `mdev` (boolean), `live-migration-capable` (boolean) and `map` (required,
//!   repeatable), each `map` a property string with `node` (pve-node), `path`
//!   (`[a-f0-9]{4,}:[a-f0-9]{2}:[a-f0-9]{2}(\.[a-f0-9])?`, `;`-separated), `id` and
//!   `subsystem-id` (`XXXX:XXXX`), `iommugroup` (integer) and `description`; and `assert_valid`,
//!   which Proxmox runs at VM start: `id`, `subsystem-id` and `iommugroup` must equal the
//!   device's own.

mod common;
mod integrations_util;

use std::collections::BTreeSet;

use common::*;
use integrations_util::*;

#[derive(Debug)]
struct Mapping {
    id: String,
    mdev: bool,
    /// Each `map`: (key, value) pairs.
    maps: Vec<Vec<(String, String)>>,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_lower_hex(s: &str) -> bool {
    is_hex(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

fn is_vendor_device(s: &str) -> bool {
    matches!(s.split_once(':'), Some((v, d)) if v.len() == 4 && d.len() == 4 && is_hex(v) && is_hex(d))
}

/// `[a-f0-9]{4,}:[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?`
fn is_pci(s: &str) -> bool {
    let (dev, func) = match s.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (s, None),
    };
    let parts: Vec<&str> = dev.split(':').collect();
    parts.len() == 3
        && parts[0].len() >= 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| is_lower_hex(p))
        && func.is_none_or(|f| f.len() == 1 && is_lower_hex(f))
}

fn is_configid(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && s.len() >= 2
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_node(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_bool(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "0" | "1" | "yes" | "no" | "on" | "off" | "true" | "false"
    )
}

fn parse_map(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in v.split(',') {
        let (k, val) = part
            .split_once('=')
            .ok_or(format!("map {v:?}: {part:?} is not key=value"))?;
        if out.iter().any(|(o, _)| o == k) {
            return Err(format!("map {v:?}: {k} given twice"));
        }
        let ok = match k {
            "node" => is_node(val),
            "path" => val.split(';').all(is_pci),
            "id" | "subsystem-id" => is_vendor_device(val),
            "iommugroup" => val.parse::<i64>().is_ok(),
            "description" => val.len() <= 4096,
            _ => return Err(format!("map {v:?}: {k} is not a map property")),
        };
        if !ok {
            return Err(format!("map {v:?}: {k}={val:?} does not match its format"));
        }
        out.push((k.to_string(), val.to_string()));
    }
    for required in ["node", "path", "id"] {
        if !out.iter().any(|(k, _)| k == required) {
            return Err(format!("map {v:?}: lacks {required}"));
        }
    }
    Ok(out)
}

/// pci.cfg as PVE::SectionConfig and PVE::Mapping::PCI read it; any line they would warn about
/// or drop is an error here.
fn parse(text: &str) -> Result<Vec<Mapping>, String> {
    let mut out: Vec<Mapping> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let id = line.trim_end();
        if id.contains(char::is_whitespace) || !is_configid(id) {
            return Err(format!("{line:?} is not a mapping id (pve-configid)"));
        }
        if out.iter().any(|m| m.id == id) {
            return Err(format!("mapping {id} defined twice"));
        }
        let mut m = Mapping {
            id: id.to_string(),
            mdev: false,
            maps: Vec::new(),
        };
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            if !line.starts_with(char::is_whitespace) {
                return Err(format!("{id}: syntax error in {line:?}"));
            }
            let body = line.trim();
            let (k, v) = body
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .unwrap_or((body, ""));
            match k {
                "map" => m.maps.push(parse_map(v).map_err(|e| format!("{id}: {e}"))?),
                "mdev" | "live-migration-capable" => {
                    if !is_bool(v) {
                        return Err(format!("{id}: {k} {v:?} is not a boolean"));
                    }
                    if k == "mdev" {
                        m.mdev = matches!(v, "1" | "yes" | "on" | "true");
                    }
                }
                "description" => {}
                _ => return Err(format!("{id}: {k} is not a property of a PCI mapping")),
            }
        }
        if m.maps.is_empty() {
            return Err(format!("{id}: no map (required)"));
        }
        out.push(m);
    }
    Ok(out)
}

fn get<'a>(map: &'a [(String, String)], k: &str) -> Option<&'a str> {
    map.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str())
}

/// `assert_valid`: each path's ids and IOMMU group as the device reports them.
fn assert_valid(s: &Sim, m: &Mapping) {
    for map in &m.maps {
        let path = get(map, "path").unwrap();
        let rel = format!("sys/bus/pci/devices/{path}");
        let read = |f: &str| s.read(&format!("{rel}/{f}")).trim().replace("0x", "");
        assert_eq!(
            get(map, "id").unwrap(),
            format!("{}:{}", read("vendor"), read("device")),
            "{m:?}"
        );
        assert_eq!(
            get(map, "subsystem-id"),
            Some(format!("{}:{}", read("subsystem_vendor"), read("subsystem_device")).as_str()),
            "{m:?}"
        );
        let group = std::fs::read_link(s.root().join(&rel).join("iommu_group")).unwrap();
        assert_eq!(
            get(map, "iommugroup"),
            group.file_name().and_then(|n| n.to_str()),
            "{m:?}"
        );
    }
}

fn pinned_parents(s: &Sim) -> BTreeSet<String> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["parent"].as_str().unwrap().to_string())
        .collect()
}

/// Every mapped path, checked, with the node name.
fn mapped(s: &Sim, text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let maps = parse(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let mut paths = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for m in &maps {
        assert!(m.mdev, "{m:?}");
        assert_valid(s, m);
        for map in &m.maps {
            assert!(paths.insert(get(map, "path").unwrap().to_string()), "{m:?}");
            nodes.insert(get(map, "node").unwrap().to_string());
        }
    }
    (paths, nodes)
}

fn vfs_of(s: &Sim, pf: &str) -> BTreeSet<String> {
    let dir = s.root().join(format!("sys/bus/pci/devices/{pf}"));
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            name.starts_with("virtfn").then(|| {
                std::fs::read_link(e.path())
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

#[test]
fn proxmox_host_maps_every_free_vf_with_its_own_ids() {
    let s = ready_host(
        "proxmox-l4-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L4-6Q\"\ncount = 1\n",
    );
    let r = s.run(&["export", "--proxmox"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (paths, nodes) = mapped(&s, &r.stdout);
    // Proxmox names nodes by their host name, up to the first dot.
    let host = s.read("etc/hostname");
    assert_eq!(
        nodes,
        BTreeSet::from([host.trim().split('.').next().unwrap().to_string()])
    );
    // Every VF but the one vgpuctl pins a vGPU on (Proxmox must not write its type).
    let pinned = pinned_parents(&s);
    assert_eq!(pinned.len(), 1);
    let vfs = vfs_of(&s, "0000:01:00.0");
    assert!(vfs.len() > 1);
    let free: BTreeSet<String> = vfs.difference(&pinned).cloned().collect();
    assert_eq!(paths, free, "{}", r.stdout);

    // Malformed mappings fail the reader: a bad id, a header glued to the previous section, an
    // unknown property, an upper-case path.
    let text = r.stdout;
    for bad in [
        text.replacen("vgpu-l4", "4-vgpu-l4", 1),
        text.replace("\tmdev 1", "\tmdev yes please"),
        text.replace("\tmdev 1", "\tmediated 1"),
        text.replacen("path=0000:01:", "path=0000:01-", 1),
        text.replacen(",id=", ",ids=", 1)
            .replacen("map id=", "map ids=", 1),
        format!("{text}{text}"),
    ] {
        assert!(parse(&bad).is_err(), "accepted:\n{bad}");
    }
}

#[test]
fn sriov_mdev_host_maps_the_vfs_of_each_gpu_with_vfs() {
    let s = ready_host(
        "a40x8-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n",
    );
    let r = s.run(&[
        "export",
        "--proxmox",
        "-o",
        s.root().join("pci.cfg").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = s.read("pci.cfg");
    let (paths, _) = mapped(&s, &text);
    let vfs = vfs_of(&s, "0000:e8:00.0");
    let pinned = pinned_parents(&s);
    assert_eq!(pinned.len(), 2);
    assert!(pinned.is_subset(&vfs));
    let free: BTreeSet<String> = vfs.difference(&pinned).cloned().collect();
    assert_eq!(paths, free, "{text}");
    assert_eq!(parse(&text).unwrap()[0].id, "vgpu-a40-0000-e8-00-0");
}

/// `check` on Proxmox says who does what, and warns where a VM's hostpci with mdev= may take a
/// VF that holds a vGPU vgpuctl pins (both would write that VF's vGPU type).
#[test]
fn check_on_proxmox_names_each_sides_vfs_and_the_vms_that_would_fight() {
    let s = ready_host(
        "proxmox-l4-ready",
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L4-6Q\"\ncount = 1\n",
    );
    let pinned = pinned_parents(&s).into_iter().next().unwrap();
    let free = vfs_of(&s, "0000:01:00.0")
        .into_iter()
        .find(|v| *v != pinned)
        .unwrap();
    // The mappings vgpuctl prints, plus one an operator made by hand holding the pinned VF.
    let exported = s.run(&["export", "--proxmox"]).stdout;
    let node = s.read("etc/hostname").trim().to_string();
    write(
        &s.root().join("etc/pve/mapping/pci.cfg"),
        &format!(
            "{exported}\nhand-made\n\tmap id=10de:27b8,node={node},path={pinned};{free}\n\tmdev 1\n"
        ),
    );
    let vm = |id: &str, line: &str| {
        write(
            &s.root().join(format!("etc/pve/qemu-server/{id}.conf")),
            &format!("boot: order=scsi0\ncores: 4\n{line}\nmemory: 8192\n"),
        )
    };
    vm(
        "101",
        &format!("hostpci0: {pinned},mdev=nvidia-1157,pcie=1"),
    );
    vm(
        "102",
        "hostpci0: mapping=vgpu-l4-0000-01-00-0,mdev=nvidia-1157",
    );
    vm("103", "hostpci1: mapping=hand-made,mdev=nvidia-1157");
    vm(
        "104",
        &format!("hostpci0: {}", pinned.trim_start_matches("0000:")),
    );
    write(
        &s.root()
            .join("etc/systemd/system/multi-user.target.wants/pve-nvidia-sriov@ALL.service"),
        "",
    );
    let before = s.hash();
    let j = s.json(&["check", "--json"]);
    assert_eq!(s.hash(), before, "check changed the host");
    let findings = j["findings"].as_array().unwrap();
    let find = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {findings:?}"))
    };
    let roles = find("proxmox.roles");
    assert_eq!(roles["severity"], "ok");
    assert!(
        roles["message"]
            .as_str()
            .unwrap()
            .contains("vgpuctl-restore.service enables SR-IOV and recreates 1 pinned vGPU(s)"),
        "{roles}"
    );
    assert_eq!(find("proxmox.sriov.ALL")["severity"], "ok");
    let direct = find(&format!("proxmox.vf.101.hostpci0.{pinned}"));
    assert_eq!(direct["severity"], "warn", "{direct}");
    assert!(
        direct["message"].as_str().unwrap().contains("cannot start"),
        "{direct}"
    );
    let mapped = find(&format!("proxmox.vf.103.hostpci1.{pinned}"));
    assert_eq!(mapped["severity"], "warn", "{mapped}");
    assert!(
        mapped["fix"].as_str().unwrap().contains("remove"),
        "{mapped}"
    );
    let passthrough = find(&format!("proxmox.vf.104.hostpci0.{pinned}"));
    assert_eq!(passthrough["severity"], "ok", "{passthrough}");
    // vgpuctl's own mappings never hold a pinned VF: VM 102 is not named.
    assert!(
        !findings
            .iter()
            .any(|f| f["id"].as_str().unwrap().starts_with("proxmox.vf.102.")),
        "{findings:?}"
    );
    // Not Proxmox: nothing of it.
    let other = Sim::new("a40x8-ready");
    let j = other.json(&["check", "--json"]);
    assert!(
        !j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"].as_str().unwrap().starts_with("proxmox.")),
        "{j}"
    );
}
