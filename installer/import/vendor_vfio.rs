//! Vendor-specific VFIO lines of rc.local (`echo ID > /sys/bus/pci/devices/<VF>/nvidia/current_vgpu_type`):
//! which type the id names on this host, and the UUID vgpuctl pins it under.
//!
//! An id names a type only on one driver branch (recorded-behaviour.md §1: ids are not
//! contiguous and change across branches), so a pin carries the type's name as this host lists
//! it, and restore writes whatever id that name has on the driver it then finds.

/// A VF's vendor-VFIO attributes as read now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VfNow {
    /// `nvidia/creatable_vgpu_types`: (id, name) each.
    pub creatable: Vec<(String, String)>,
    /// `nvidia/current_vgpu_type` when not `0`.
    pub current: Option<String>,
}

/// The type a line's id names on this host: (id, name as listed).
///
/// `vf` is the VF's vendor-VFIO attributes now (`None`: it has none, or does not exist),
/// `siblings` the creatable lists of the other VFs of its GPU (a VF that holds a type lists no
/// creatable types, so the name of the type it holds is read from a sibling that offers it).
pub fn resolve(
    vf_addr: &str,
    vf: Option<&VfNow>,
    siblings: &[&[(String, String)]],
    id: &str,
) -> Result<(String, String), String> {
    let Some(vf) = vf else {
        return Err(format!(
            "{vf_addr} has no vendor-specific VFIO interface \
             (/sys/bus/pci/devices/{vf_addr}/nvidia/creatable_vgpu_types)"
        ));
    };
    let listed = |id: &str| {
        std::iter::once(vf.creatable.as_slice())
            .chain(siblings.iter().copied())
            .flatten()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
    };
    if let Some(cur) = &vf.current {
        if cur != id {
            return Err(format!(
                "VF {vf_addr} holds type id {cur} now, and the line writes {id}"
            ));
        }
        return listed(id).map(|n| (id.to_string(), n)).ok_or_else(|| {
            format!(
                "VF {vf_addr} holds type id {id}, but no VF of its GPU lists that id, so its \
                 name cannot be read on this host (ids differ between driver branches)"
            )
        });
    }
    match vf.creatable.iter().find(|(i, _)| i == id) {
        Some((i, n)) => Ok((i.clone(), n.clone())),
        None => {
            let offers: Vec<String> = vf
                .creatable
                .iter()
                .map(|(i, n)| format!("{i} {n}"))
                .collect();
            Err(format!(
                "type id {id} is not in {vf_addr}'s creatable_vgpu_types ({}); ids name types \
                 per driver branch",
                if offers.is_empty() {
                    "it lists none".to_string()
                } else {
                    format!("it offers {}", offers.join(", "))
                }
            ))
        }
    }
}

/// The UUID a vendor-VFIO vGPU imported from `vf` is pinned under (the kernel gives it none):
/// the one an existing vendor-VFIO pin on that VF has, else one derived from the VF address, so
/// that the dry run and the import name the same vGPU.
pub fn pin_uuid(vf: &str, existing: Option<&str>) -> String {
    if let Some(u) = existing {
        return u.to_string();
    }
    // FNV-1a over the address, two rounds for 16 bytes; shaped as a version-4 UUID.
    let fnv = |salt: u8| {
        std::iter::once(salt)
            .chain(vf.bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(1).to_le_bytes());
    bytes[8..].copy_from_slice(&fnv(2).to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .collect()
    }

    #[test]
    fn the_id_is_named_from_the_live_lists() {
        let free = VfNow {
            creatable: list(&[("1145", "NVIDIA L40S-1B"), ("2164", "NVIDIA L40S-3B")]),
            current: None,
        };
        let used = VfNow {
            creatable: vec![],
            current: Some("2164".into()),
        };
        assert_eq!(
            resolve("0000:41:00.5", Some(&free), &[], "2164").unwrap(),
            ("2164".into(), "NVIDIA L40S-3B".into())
        );
        // A VF holding the type lists none: its name comes from a sibling, never a table.
        let sib = [free.creatable.as_slice()];
        assert_eq!(
            resolve("0000:41:00.4", Some(&used), &sib, "2164")
                .unwrap()
                .1,
            "NVIDIA L40S-3B"
        );
        let e = resolve("0000:41:00.4", Some(&used), &[], "2164").unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
        let e = resolve("0000:41:00.4", Some(&used), &sib, "1145").unwrap_err();
        assert!(e.contains("holds type id 2164"), "{e}");
        let e = resolve("0000:41:00.5", Some(&free), &[], "1147").unwrap_err();
        assert!(e.contains("1145 NVIDIA L40S-1B"), "{e}");
        assert!(resolve("0000:41:00.6", None, &[], "1145").is_err());
    }

    #[test]
    fn pin_uuids_are_stable_per_vf() {
        let a = pin_uuid("0000:41:00.4", None);
        assert_eq!(a, pin_uuid("0000:41:00.4", None));
        assert_ne!(a, pin_uuid("0000:41:00.5", None));
        assert!(crate::pci::is_uuid(&a) && a == a.to_ascii_lowercase());
        assert_eq!(pin_uuid("0000:41:00.4", Some("x")), "x");
    }
}
