//! vGPUs: selection and placement (pure), SR-IOV, creation, restore at boot.
pub mod create;
pub mod place;
pub mod restore;
pub mod select;
pub mod sriov;
