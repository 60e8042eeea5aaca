//! The profile: what the operator wants this host to be. TOML, unknown keys rejected.
//!
//! The keys below are a contract shared by unattended setup, the wizard, `export` and the fleet
//! role: add keys, never rename these.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub host: HostPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuRequest>,
    /// PFs whose virtual functions `restore` enables at every boot even when no pinned vGPU sits
    /// on them (imported `sriov-manage -e` lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sriov: Vec<String>,
    /// PFs `restore` puts in mixed-size (heterogeneous) mode at every boot, after SR-IOV and
    /// before their first vGPU (pins of several types on one GPU; the mode does not persist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixed_size: Vec<String>,
    /// vGPUs pinned by setup or import: what `restore` recreates at every boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vgpus: Vec<SavedVgpu>,
    /// `[cloudpods]`: keep CloudPods' host.conf in step with the vGPUs (setup and restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudpods: Option<CloudpodsConfig>,
    /// `[nova]`: keep a nova.conf fragment for nova-compute in step with the vGPUs (setup and
    /// restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nova: Option<NovaConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPolicy {
    #[serde(default)]
    pub reboot: RebootPolicy,
    #[serde(default)]
    pub iommu: IommuPolicy,
    /// The vGPU scheduling policy for every GPU (None: leave the driver's), written as the
    /// driver's `RmPVMRL` module option ([`crate::edit::registry_dwords`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    /// The time slice in ms, with equal-share or fixed-share only (NVIDIA allows 1-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeslice_ms: Option<u32>,
}

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            reboot: RebootPolicy::Prompt,
            iommu: IommuPolicy::Auto,
            scheduler: None,
            timeslice_ms: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootPolicy {
    #[default]
    Prompt,
    Auto,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IommuPolicy {
    #[default]
    Auto,
    Skip,
}

/// NVIDIA's schedulers for time-sliced vGPUs (vGPU user guide, "Scheduling Policies for
/// Time-Sliced vGPUs").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    BestEffort,
    EqualShare,
    FixedShare,
}

impl Scheduler {
    /// The profile's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::BestEffort => "best-effort",
            Scheduler::EqualShare => "equal-share",
            Scheduler::FixedShare => "fixed-share",
        }
    }
}

/// `[driver]`: where the GRID host driver comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// A licensed portal link or a mirror. A credential: never shown in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A zip, `.run`, `.deb` or `.rpm` inside the host root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Allow a plain `http://` url (an internal mirror).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    /// Module signing key and certificate for Secure Boot hosts (paths inside the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_cert: Option<String>,
}

/// Where CloudPods' host agent reads its configuration.
pub const CLOUDPODS_HOST_CONF: &str = "/etc/yunion/host.conf";

fn default_host_conf() -> String {
    CLOUDPODS_HOST_CONF.to_string()
}

/// `[cloudpods]`: setup and restore set `nvidia_vgpu_pfs:` in `host_conf` to the parents of the
/// pinned vGPUs, and with `restart = true` restart the host agent after a change
/// (`kubectl -n onecloud rollout restart ds default-host`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudpodsConfig {
    /// The host agent's YAML configuration, inside the host root.
    #[serde(default = "default_host_conf")]
    pub host_conf: String,
    /// Restart the host agent's DaemonSet after host.conf changed.
    #[serde(default)]
    pub restart: bool,
}

impl Default for CloudpodsConfig {
    fn default() -> Self {
        CloudpodsConfig {
            host_conf: default_host_conf(),
            restart: false,
        }
    }
}

/// Where `[nova] conf` points by default: nova-compute reads every file in
/// `/etc/nova/nova.conf.d/` after nova.conf (oslo.config's `--config-dir`, as Nova's packages
/// start it).
pub const NOVA_CONF: &str = "/etc/nova/nova.conf.d/vgpu.conf";

fn default_nova_conf() -> String {
    NOVA_CONF.to_string()
}

/// `[nova]`: setup and restore write `conf`, a nova.conf fragment vgpuctl owns, with the pinned
/// vGPUs (`vgpuctl export --nova`), and with `restart = true` restart nova-compute after a
/// change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NovaConfig {
    /// The fragment's path inside the host root (nova-compute reads /etc/nova/nova.conf.d/).
    #[serde(default = "default_nova_conf")]
    pub conf: String,
    /// Restart nova-compute after the fragment changed.
    #[serde(default)]
    pub restart: bool,
}

impl Default for NovaConfig {
    fn default() -> Self {
        NovaConfig {
            conf: default_nova_conf(),
            restart: false,
        }
    }
}

/// `[[gpus]]`: vGPUs wanted on a set of GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// "all", a PCI address like "0000:e8:00.0", or a model like "A40".
    pub select: String,
    /// A name ("A40-24Q" or "NVIDIA A40-24Q") or an id ("nvidia-565").
    pub vgpu_type: String,
    /// vGPUs per selected GPU.
    pub count: u32,
    /// Optional fixed UUIDs, used in order.
    #[serde(default)]
    pub uuids: Vec<String>,
}

/// `[[vgpus]]`: one vGPU pinned in the active profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedVgpu {
    pub uuid: String,
    /// Kernel type id: "nvidia-565" (mdev), "565" (vendor VFIO), "mtty-2" (any mdev parent).
    pub type_id: String,
    /// Type name as the kernel reports it ("NVIDIA A40-24Q").
    pub type_name: String,
    /// The device that holds it: a VF or PF address, or any mdev parent name.
    pub parent: String,
    /// The physical GPU (PF address) the parent belongs to, when it is a PCI function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// "mdev" or "vendor-vfio".
    pub interface: String,
    /// A MIG-backed vGPU: the GPU instance profile ("1g.10gb") made for it before its type is
    /// written, at setup and at every boot. Absent in older pins (time-sliced vGPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gi_profile: Option<String>,
}
