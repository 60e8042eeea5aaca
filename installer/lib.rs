//! vgpuctl: bring up NVIDIA vGPU on KVM hosts and keep it up across reboots.
//!
//! The pipeline is observe -> plan -> show -> apply -> record (see README.md):
//! [`host`] is the only way to touch the host, [`facts`] observes it, [`check`] judges it,
//! [`setup`] plans and applies, [`vgpu`] creates and restores. The simulated host is its own
//! crate (installer/sim/), wired into the binary by installer/simulator.rs.

pub mod active;
/// The vGPU type catalog, its own crate (installer/catalog/) because the simulator reads it too.
pub use vgpuctl_catalog as catalog;
pub mod check;
pub mod cli;
pub mod cloudpods;
pub mod cmd;
pub mod driver;
pub mod edit;
pub mod exit;
pub mod facts;
pub mod fault;
pub mod gpu_group;
pub mod host;
pub mod import;
pub mod integrations;
pub mod interrupt;
pub mod kubevirt;
pub mod logging;
pub mod models;
pub mod nova;
pub mod nova_conf;
pub mod opener;
pub mod out;
pub mod pci;
pub mod pins;
pub mod platforms;
pub mod privilege;
pub mod profile;
pub mod profile_load;
pub mod proxmox;
pub mod setup;
pub mod state;
pub mod status;
pub mod sysfs_parse;
pub mod table;
pub mod vfio_persist;
pub mod vgpu;
pub mod vgpu_name;
pub mod wait;
pub mod wizard;
