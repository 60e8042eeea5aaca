//! MIG-backed vGPUs' commands and the GPU instance listing they read back
//! (recorded-behaviour.md §5). The GPU is named by its PCI address: nvidia-smi's `-i` takes an
//! index, a UUID or a PCI bus id, and an address cannot name another GPU.

use crate::host::Cmd;

/// `nvidia-smi -i <gpu> -mig 1`: MIG mode on (at once on Hopper; pending until the GPU's reset
/// on Ampere).
pub fn mode_on(gpu: &str) -> Cmd {
    Cmd::new("nvidia-smi")
        .arg("-i")
        .arg(gpu)
        .arg("-mig")
        .arg("1")
}

/// `nvidia-smi mig -i <gpu> -cgi <p>,<p>,... -C`: one GPU instance per profile named, each with
/// its compute instance.
pub fn create_instances(gpu: &str, profiles: &[String]) -> Cmd {
    Cmd::new("nvidia-smi")
        .arg("mig")
        .arg("-i")
        .arg(gpu)
        .arg("-cgi")
        .arg(profiles.join(","))
        .arg("-C")
}

pub use crate::facts::mig::{list_instances, parse_instances, GpuInstance};

/// The GPU instance profile ("1g.10gb") a MIG-backed type needs, from the embedded catalog; None
/// for a time-sliced type or one the catalog does not know.
pub fn gi_profile_of(type_name: &str) -> Option<&'static str> {
    crate::catalog::models().into_iter().find_map(|m| {
        let t = crate::catalog::types_for(m)
            .iter()
            .find(|t| crate::vgpu_name::same(&t.name, type_name))?;
        let id = t.gi_profile?;
        crate::catalog::gi_profiles(m)
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_name_their_profile() {
        assert_eq!(gi_profile_of("NVIDIA A100D-1-10C"), Some("1g.10gb"));
        assert_eq!(gi_profile_of("A100D-2-20C"), Some("2g.20gb"));
        assert_eq!(gi_profile_of("NVIDIA A100D-20C"), None);
    }
}
