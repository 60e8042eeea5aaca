//! vGPUs: selection and placement (pure), SR-IOV, reading back creations, the restore report.
pub mod create;
pub mod mig;
pub mod mig_fit;
pub mod mixed_size;
pub mod place;
pub mod restore;
pub mod select;
pub mod sriov;
