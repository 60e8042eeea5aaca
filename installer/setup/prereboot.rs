//! Steps before the reboot: IOMMU on the kernel command line, nouveau, vfio-pci, the driver.
//! Returns the steps and the reasons a reboot is (still) needed.

use crate::exit::Failure;
use crate::facts::HostFacts;
use crate::host::Host;
use crate::profile::Profile;

use super::plan::Plan;

pub fn plan(
    _host: &Host,
    f: &HostFacts,
    _profile: &Profile,
) -> Result<(Plan, Vec<String>), Failure> {
    let mut reasons = Vec::new();
    if f.driver.installed() && f.driver.loaded_version.is_none() {
        reasons.push("the vGPU host driver is installed but not loaded".to_string());
    }
    Ok((Plan::default(), reasons))
}
