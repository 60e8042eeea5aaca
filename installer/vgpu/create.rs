//! Reading back what a vGPU creation made, on either kernel interface (the writes themselves are
//! the plan's: `setup::plan::SysfsCreate`, run by `setup::apply`).

use crate::facts::vgpus::{vendor_dir, MDEV_DEVICES};
use crate::host::Host;
use crate::vgpu_name;

/// Is the mdev `uuid` present, and with which type name?
pub fn mdev_type_of(host: &Host, uuid: &str) -> Option<String> {
    let base = format!("{MDEV_DEVICES}/{uuid}");
    if !host.exists(&base) {
        return None;
    }
    Some(
        host.read_trim(&format!("{base}/mdev_type/name"))
            .or_else(|| host.link_name(&format!("{base}/mdev_type")))
            .unwrap_or_default(),
    )
}

/// The type id set on a vendor-VFIO VF (None when free or not a vendor-VFIO VF).
pub fn vendor_current(host: &Host, vf: &str) -> Option<String> {
    host.read_trim(&format!("{}/current_vgpu_type", vendor_dir(vf)))
        .filter(|s| s != "0" && !s.is_empty())
}

/// Type names compare without the vendor prefix; a generic mdev type may only have its dir name.
pub fn name_matches(actual: &str, wanted: &str) -> bool {
    vgpu_name::same(actual, wanted) || actual == wanted
}
