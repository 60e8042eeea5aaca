//! On Proxmox VE the vGPUs are Proxmox's: qemu-server creates a VM's vGPU itself when the VM
//! starts (`hostpciN: ...,mdev=<type>`; on vendor-specific VFIO it writes `current_vgpu_type`),
//! so a vGPU made beforehand takes the VF Proxmox would give the VM. There vgpuctl brings the
//! host up (IOMMU, driver, SR-IOV at every boot) and makes no vGPU, unless the profile asks for
//! some with `[[gpus]]` (or names its own `sriov` list). Pure.

use crate::facts::HostFacts;
use crate::profile::Profile;

/// The profile setup runs on this host: on Proxmox VE a profile asking for no vGPU and no
/// SR-IOV gets SR-IOV on every GPU that has it (enabled now, and at every boot by the restore
/// unit). None: the profile as it is.
pub fn effective(facts: &HostFacts, profile: &Profile) -> Option<Profile> {
    if !facts.os.proxmox || !profile.gpus.is_empty() || !profile.sriov.is_empty() {
        return None;
    }
    let sriov: Vec<String> = facts
        .gpus
        .iter()
        .filter(|g| g.sriov_capable())
        .map(|g| g.address.clone())
        .collect();
    Some(Profile {
        sriov,
        ..profile.clone()
    })
}

/// What the operator is told when [`effective`] applies.
pub fn note(p: &Profile) -> String {
    let gpus = if p.sriov.is_empty() {
        "no GPU here needs SR-IOV".to_string()
    } else {
        format!("SR-IOV on {} at every boot", p.sriov.join(", "))
    };
    format!(
        "Proxmox VE: vgpuctl brings the host up ({gpus}) and leaves the vGPUs to Proxmox, which \
         creates each VM's vGPU at VM start (hostpciN: ...,mdev=<type>); add [[gpus]] to the \
         profile to have vgpuctl create them instead."
    )
}
