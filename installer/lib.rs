//! vgpuctl: bring up NVIDIA vGPU on KVM hosts and keep it up across reboots.
//!
//! The pipeline is observe -> plan -> show -> apply -> record (see README.md):
//! [`host`] is the only way to touch the host, [`facts`] observes it, [`check`] judges it.

pub mod catalog;
pub mod fault;
pub mod host;
pub mod profile;
pub mod sim;
