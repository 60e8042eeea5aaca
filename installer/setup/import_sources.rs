//! Observe what `vgpuctl import` reads besides the host facts: `/etc/rc.local`, the mdevctl
//! definitions, and the type listing of every parent they name (mdev type directories, or a
//! vendor-VFIO VF's `nvidia/` attributes and its siblings' lists). The plan is made from this alone.

use std::collections::BTreeMap;

use crate::facts::gpus::{virtfns, PCI_DEVICES};
use crate::facts::vgpus::{mdev_types_dir, read_mdev_types, vendor_dir};
use crate::host::Host;
use crate::sysfs_parse::parse_creatable;

use crate::import::vendor_vfio::VfNow;
use crate::import::{mdevctl, rclocal};

pub const RC_LOCAL: &str = "etc/rc.local";
pub const MDEVCTL_DIR: &str = "etc/mdevctl.d";

/// One parent an import source names, as it is on the host now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParentNow {
    /// It exists (a PCI function or an mdev parent).
    pub exists: bool,
    /// Its mdev type listing, (directory, name) each, when it has one.
    pub types: Option<Vec<(String, String)>>,
    /// The GPU it belongs to (its PF, or itself for an NVIDIA PF).
    pub gpu: Option<String>,
    /// Its vendor-specific VFIO attributes (`nvidia/`), when it has them.
    pub vendor: Option<VfNow>,
    /// The creatable lists of the other VFs of its GPU (vendor VFIO): the name of a type a VF
    /// holds is read there, as the holding VF lists none.
    pub sibling_types: Vec<Vec<(String, String)>>,
}

/// A VF's `nvidia/` attributes; `None` when it has no `creatable_vgpu_types`.
fn vendor_now(host: &Host, vf: &str) -> Option<VfNow> {
    let dir = vendor_dir(vf);
    let listing = host.read(&format!("{dir}/creatable_vgpu_types")).ok()?;
    Some(VfNow {
        creatable: parse_creatable(&listing)
            .into_iter()
            .map(|t| (t.id.to_string(), t.name))
            .collect(),
        current: host
            .read_trim(&format!("{dir}/current_vgpu_type"))
            .filter(|c| !c.trim_start_matches('0').is_empty()),
    })
}

#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub rc_local: Option<String>,
    /// rc.local's permission bits, kept when it is rewritten.
    pub rc_mode: u32,
    pub rc_items: Vec<rclocal::RcLine>,
    /// mdevctl definitions: (file under the root, its text, parsed or why not).
    pub mdevctl: Vec<(String, String, Result<mdevctl::MdevctlDef, String>)>,
    pub parents: BTreeMap<String, ParentNow>,
}

fn parent_now(host: &Host, parent: &str) -> ParentNow {
    let types = mdev_types_dir(host, parent).map(|d| {
        read_mdev_types(host, &d)
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect()
    });
    let gpu = host
        .link_name(&format!("{PCI_DEVICES}/{parent}/physfn"))
        .or_else(|| {
            let vendor = host.read_trim(&format!("{PCI_DEVICES}/{parent}/vendor"));
            (vendor.as_deref() == Some("0x10de")).then(|| parent.to_string())
        });
    let vendor = vendor_now(host, parent);
    let sibling_types = match (&vendor, &gpu) {
        (Some(_), Some(pf)) => virtfns(host, pf)
            .iter()
            .filter(|vf| *vf != parent)
            .filter_map(|vf| vendor_now(host, vf).map(|v| v.creatable))
            .filter(|c| !c.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    ParentNow {
        exists: host.exists(&format!("{PCI_DEVICES}/{parent}"))
            || host.exists(&format!("sys/class/mdev_bus/{parent}")),
        types,
        gpu,
        vendor,
        sibling_types,
    }
}

pub fn observe(host: &Host) -> Sources {
    let rc_local = host.read(RC_LOCAL).ok();
    let rc_items = rc_local.as_deref().map(rclocal::parse).unwrap_or_default();
    let rc_mode = host
        .path(RC_LOCAL)
        .metadata()
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o755);
    let mut mdevctl_defs = Vec::new();
    for parent in host.list(MDEVCTL_DIR) {
        for uuid in host.list(&format!("{MDEVCTL_DIR}/{parent}")) {
            let path = format!("{MDEVCTL_DIR}/{parent}/{uuid}");
            let Ok(text) = host.read(&path) else { continue };
            let def = mdevctl::parse(&parent, &uuid, &text).map_err(|e| e.to_string());
            mdevctl_defs.push((path, text, def));
        }
    }
    let mut named: Vec<String> = rc_items
        .iter()
        .filter_map(|it| match &it.item {
            rclocal::RcItem::Vgpu { parent, .. } => Some(parent.clone()),
            rclocal::RcItem::VendorVgpu { vf, .. } => Some(vf.clone()),
            _ => None,
        })
        .chain(
            mdevctl_defs
                .iter()
                .filter_map(|(_, _, d)| d.as_ref().ok().map(|d| d.parent.clone())),
        )
        .collect();
    named.sort();
    named.dedup();
    let parents = named
        .into_iter()
        .map(|p| {
            let now = parent_now(host, &p);
            (p, now)
        })
        .collect();
    Sources {
        rc_local,
        rc_mode,
        rc_items,
        mdevctl: mdevctl_defs,
        parents,
    }
}
