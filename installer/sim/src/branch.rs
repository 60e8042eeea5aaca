//! Which driver branch the simulated host runs, and the vGPU types it offers on it. The driver's
//! files on disk (`State::driver`) and the module in memory (`State::loaded_driver`) differ
//! between an install and the next boot, as on a real host: the version files, `nvidia-smi` and
//! the type listings follow the loaded module. Type ids name a type on one branch only
//! (recorded-behaviour.md §1); the catalog crate's `types_on_branch` holds the rule (a guess).

use crate::models::Model;
use crate::state::State;
use vgpuctl_catalog::{self as catalog, TypeSpec};

/// The version of the loaded nvidia module, if it is loaded: the vGPU host driver loaded at the
/// last boot (a root built before `loaded_driver` existed: the installed one), else a
/// datacenter driver.
pub fn loaded_version(st: &State) -> Option<String> {
    if !st.modules.contains("nvidia") {
        return None;
    }
    st.loaded_driver
        .clone()
        .or_else(|| st.driver.clone())
        .or_else(|| st.datacenter_driver.clone())
}

/// The types the loaded driver offers on this model's GPUs (the catalog's table when no driver
/// is loaded: nothing is listed then anyway).
pub fn types(m: &Model, st: &State) -> &'static [TypeSpec] {
    match loaded_version(st).as_deref().and_then(catalog::branch_of) {
        Some(b) => catalog::types_on_branch(m.gpu, b),
        None => catalog::types_for(m.gpu),
    }
}
