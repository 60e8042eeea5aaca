//! vgpuctl: bring up NVIDIA vGPU on KVM hosts and keep it up across reboots.
//!
//! The pipeline is observe -> plan -> show -> apply -> record (see README.md):
//! [`host`] is the only way to touch the host, [`facts`] observes it, [`check`] judges it.

pub mod catalog;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod exit;
pub mod facts;
pub mod fault;
pub mod host;
pub mod logging;
pub mod models;
pub mod profile;
pub mod sim;
pub mod sysfs_parse;
pub mod vgpu_name;
pub mod active;
pub mod vgpu;
pub mod wait;
pub mod status;
pub mod setup;
