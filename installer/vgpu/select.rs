//! Which GPUs a profile entry selects, and which vGPU type it names. Pure.

use crate::facts::{Gpu, HostFacts};
use crate::models;
use crate::vgpu_name;

/// Normalize a PCI address the way the kernel writes it (`0:e8:0.0` -> `0000:e8:00.0`).
pub fn normalize_address(s: &str) -> Option<String> {
    crate::pci::PciAddr::parse(s.trim())
        .ok()
        .map(|a| a.to_string())
}

/// The GPUs `select` names: "all" (every vGPU-capable GPU), a PCI address, or a model name.
pub fn select<'a>(facts: &'a HostFacts, select: &str) -> Result<Vec<&'a Gpu>, String> {
    let supported: Vec<&Gpu> = facts
        .gpus
        .iter()
        .filter(|g| g.model.vgpu_supported)
        .collect();
    let listing = || {
        facts
            .gpus
            .iter()
            .map(|g| format!("{} ({})", g.address, g.model.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if select.eq_ignore_ascii_case("all") {
        if supported.is_empty() {
            return Err(format!(
                "select = \"all\" but this host has no vGPU-capable GPU (GPUs: {})",
                if facts.gpus.is_empty() {
                    "none".to_string()
                } else {
                    listing()
                }
            ));
        }
        return Ok(supported);
    }
    if let Some(addr) = normalize_address(select) {
        return match facts.gpu(&addr) {
            Some(g) if g.model.vgpu_supported => Ok(vec![g]),
            Some(g) => Err(format!(
                "{addr} is a {}: {}",
                g.model.name,
                g.model.reason.clone().unwrap_or_default()
            )),
            None => Err(format!(
                "no NVIDIA GPU at {addr} on this host (GPUs: {})",
                if facts.gpus.is_empty() {
                    "none".to_string()
                } else {
                    listing()
                }
            )),
        };
    }
    let by_model: Vec<&Gpu> = supported
        .into_iter()
        .filter(|g| {
            g.model
                .model
                .map(|m| models::matches_name(m, select))
                .unwrap_or(false)
        })
        .collect();
    if by_model.is_empty() {
        return Err(format!(
            "no vGPU-capable GPU on this host matches {select:?} (GPUs: {})",
            if facts.gpus.is_empty() {
                "none".to_string()
            } else {
                listing()
            }
        ));
    }
    Ok(by_model)
}

/// A vGPU type resolved for one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedType {
    /// As the kernel names it: "NVIDIA A40-24Q".
    pub name: String,
    pub framebuffer_mib: Option<u64>,
    /// Per-GPU limit, when known.
    pub max_instance: Option<u32>,
    /// Resolved from the live sysfs listing (false: from the embedded catalog, before the driver).
    pub live: bool,
}

/// The number in a type id: `nvidia-565` -> 565, `vfio-pci-575` -> 575, `1145` -> 1145.
pub fn id_number(id: &str) -> Option<u32> {
    let digits: String = id
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prefix = &id[..id.len() - digits.len()];
    let plausible_prefix = prefix.is_empty()
        || prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if digits.is_empty() || !plausible_prefix || vgpu_name::parse(id).is_some() {
        return None;
    }
    digits.parse().ok()
}

/// Resolve `wanted` (a name like "A40-24Q" / "NVIDIA A40-24Q", or an id like "nvidia-565") on a
/// GPU: from its live type listing when the driver shows one, else from the embedded catalog.
pub fn resolve_type(gpu: &Gpu, wanted: &str) -> Result<ResolvedType, String> {
    // A MIG-backed type needs the GPU in MIG mode; its type is listed only once MIG mode is on
    // and a GPU instance of its profile exists (recorded-behaviour.md §5), so until then it is
    // the catalog's.
    let mig_type = known_type(gpu, wanted).filter(|t| t.mig_backed());
    if let Some(t) = mig_type {
        // Only the driver's own answer refuses: before the driver is loaded there is none, and
        // the type is checked again after its reboot.
        if gpu.mig_mode.is_some_and(|m| !m.capable) {
            let sliced: Vec<String> = catalog_types(gpu)
                .iter()
                .filter(|x| !x.mig_backed())
                .map(|x| vgpu_name::short(&x.name).to_string())
                .collect();
            return Err(format!(
                "{} is a MIG-backed vGPU type, but the driver reports no MIG mode on {} {}; \
                 choose a time-sliced type ({})",
                vgpu_name::short(&t.name),
                gpu.model.name,
                gpu.address,
                sliced.join(", ")
            ));
        }
    }
    let live: Vec<&crate::facts::VgpuType> = gpu
        .parents
        .iter()
        .flat_map(|p| p.types.iter().chain(p.current_type.iter()))
        .collect();
    if !live.is_empty() {
        let by_id =
            id_number(wanted).and_then(|n| live.iter().find(|t| id_number(&t.id) == Some(n)));
        let found = by_id.or_else(|| live.iter().find(|t| vgpu_name::same(&t.name, wanted)));
        if let Some(t) = found {
            let parsed = vgpu_name::parse(&t.name);
            return Ok(ResolvedType {
                name: t.name.clone(),
                framebuffer_mib: t
                    .description
                    .framebuffer_mib
                    .or(parsed.as_ref().map(|p| p.framebuffer_mib)),
                max_instance: live
                    .iter()
                    .filter(|x| x.name == t.name)
                    .find_map(|x| x.description.max_instance)
                    .or_else(|| catalog_max(gpu, &t.name)),
                live: true,
            });
        }
        if let Some(t) = mig_type {
            return Ok(catalog_resolved(t));
        }
        let mut names: Vec<&str> = live.iter().map(|t| vgpu_name::short(&t.name)).collect();
        names.sort();
        names.dedup();
        if let Some(why) = held_size_blocks(gpu, wanted, &live) {
            return Err(why);
        }
        return Err(format!(
            "unknown vGPU type {wanted:?} for {} {}; it offers: {}",
            gpu.model.name,
            gpu.address,
            names.join(", ")
        ));
    }
    match known_type(gpu, wanted) {
        Some(t) => Ok(catalog_resolved(t)),
        None => {
            let known = known_names(gpu);
            Err(if known.is_empty() {
                format!(
                    "cannot check vGPU type {wanted:?} for {} before its driver is loaded: no \
                     embedded type list for this model (it is checked again after the reboot)",
                    gpu.model.name
                )
            } else {
                format!(
                    "unknown vGPU type {wanted:?} for {}; known types: {}",
                    gpu.model.name,
                    known.join(", ")
                )
            })
        }
    }
}

/// Why a type of this GPU's model is missing from its live listing, when the reason is the
/// size it holds: in NVIDIA's default equal-size mode a GPU's vGPUs are all one framebuffer
/// size, and on vendor-specific VFIO its free VFs then list only types of that size
/// (recorded-behaviour.md §4). None when the type is not the model's, or the listing does not
/// read as one held size.
fn held_size_blocks(gpu: &Gpu, wanted: &str, live: &[&crate::facts::VgpuType]) -> Option<String> {
    let spec = known_type(gpu, wanted)?;
    let size = |t: &crate::facts::VgpuType| {
        t.description
            .framebuffer_mib
            .or_else(|| vgpu_name::parse(&t.name).map(|n| n.framebuffer_mib))
    };
    let mut sizes: Vec<u64> = live.iter().filter_map(|t| size(t)).collect();
    sizes.sort();
    sizes.dedup();
    let [held] = sizes[..] else {
        return None;
    };
    if held == spec.framebuffer_mib as u64 {
        return None;
    }
    let holding: Vec<&str> = {
        let mut v: Vec<&str> = gpu
            .parents
            .iter()
            .filter_map(|p| p.current_type.as_ref())
            .map(|t| vgpu_name::short(&t.name))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let offers: Vec<&str> = {
        let mut v: Vec<&str> = live.iter().map(|t| vgpu_name::short(&t.name)).collect();
        v.sort();
        v.dedup();
        v
    };
    let what = if holding.is_empty() {
        format!("vGPUs of {} MiB", held)
    } else {
        format!("{} vGPU(s)", holding.join(", "))
    };
    Some(format!(
        "{} exists on {}, but {} {} cannot take it now: it holds {what}, and in NVIDIA's default \
         equal-size mode a GPU's vGPUs are all one size, so it offers only {} beside them. To \
         place {} on this GPU, remove its vGPUs first (they must not be in use), or select a GPU \
         that holds none",
        vgpu_name::short(&spec.name),
        gpu.model.name,
        gpu.model.name,
        gpu.address,
        offers.join(", "),
        vgpu_name::short(&spec.name),
    ))
}

fn catalog_resolved(t: &crate::catalog::TypeSpec) -> ResolvedType {
    ResolvedType {
        name: t.name.clone(),
        framebuffer_mib: Some(t.framebuffer_mib as u64),
        max_instance: Some(t.max_instance),
        live: false,
    }
}

fn catalog_max(gpu: &Gpu, name: &str) -> Option<u32> {
    known_type(gpu, name).map(|t| t.max_instance)
}

/// The embedded catalog's key for a GPU: its type prefix ("A40"), else its name's first word
/// ("H100" for "H100 SXM5 80GB").
fn catalog_types(gpu: &Gpu) -> &'static [crate::catalog::TypeSpec] {
    let Some(m) = gpu.model.model else {
        return &[];
    };
    let by_prefix = crate::catalog::types_for(m.type_prefix);
    if !by_prefix.is_empty() {
        return by_prefix;
    }
    crate::catalog::types_for(m.name.split_whitespace().next().unwrap_or(""))
}

/// Does a host driver of `branch` offer a type of this name on this GPU, by the embedded
/// catalog (`vgpuctl_catalog::types_on_branch`)? None when the catalog has no table for the
/// GPU: then nobody can say before that driver is loaded.
pub fn offered_on_branch(gpu: &Gpu, branch: u32, name: &str) -> Option<bool> {
    let m = gpu.model.model?;
    crate::catalog::offered_on_branch(m.type_prefix, branch, name).or_else(|| {
        crate::catalog::offered_on_branch(
            m.name.split_whitespace().next().unwrap_or(""),
            branch,
            name,
        )
    })
}

/// A type of this GPU's model from the embedded catalog, by name or id.
pub fn known_type(gpu: &Gpu, wanted: &str) -> Option<&'static crate::catalog::TypeSpec> {
    let types = catalog_types(gpu);
    let n = id_number(wanted);
    types
        .iter()
        .find(|t| vgpu_name::same(&t.name, wanted) || Some(t.id) == n)
}

/// The short names of this GPU's known types ("A40-1B", ...).
pub fn known_names(gpu: &Gpu) -> Vec<String> {
    catalog_types(gpu)
        .iter()
        .map(|t| vgpu_name::short(&t.name).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize() {
        assert_eq!(
            normalize_address("0:e8:0.0").as_deref(),
            Some("0000:e8:00.0")
        );
        assert_eq!(
            normalize_address("e8:00.0").as_deref(),
            Some("0000:e8:00.0")
        );
        assert_eq!(
            normalize_address("0000:E8:04.3").as_deref(),
            Some("0000:e8:04.3")
        );
        assert_eq!(normalize_address("0000:e8:20.0"), None);
        assert_eq!(normalize_address("0000:e8:00.8"), None);
        assert_eq!(normalize_address("../../etc:00.0"), None);
        assert_eq!(normalize_address("A40"), None);
        assert_eq!(normalize_address("all"), None);
    }

    #[test]
    fn type_ids() {
        assert_eq!(id_number("nvidia-565"), Some(565));
        assert_eq!(id_number("vfio-pci-575"), Some(575));
        assert_eq!(id_number("1145"), Some(1145));
        assert_eq!(id_number("A40-24Q"), None);
        assert_eq!(id_number("NVIDIA A40-24Q"), None);
        assert_eq!(id_number("x/../565"), None);
    }
}
