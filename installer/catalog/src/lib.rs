//! The time-sliced vGPU types NVIDIA's host driver offers per GPU model: pure data + lookups.
//!
//! Sources and confidence, per model:
//! - A40: exactly the 22 types (ids 555..576) of the seed's `mdev_supported_types` listing; the
//!   seed shows no C-series types on this host, so none are listed.
//! - A10: ids 588..605, exactly as a real host lists them (OpenNebula PCI monitor output:
//!   `588 (NVIDIA A10-1B), ..., 605 (NVIDIA A10-24A)`); no C series there either.
//! - T4: ids as mdev hosts list them (`nvidia-222` GRID T4-1B ... `nvidia-234` GRID T4-16Q,
//!   `nvidia-321` GRID T4-16C; names keep NVIDIA's older "GRID" prefix, as guests report
//!   "GRID T4-16Q").
//! - L40S: 1145 = L40S-1B and 1147 = L40S-1Q are from a real host on 580.x; the rest follow
//!   NVIDIA's usual order (B, Q, A, then C) *inferred* from there.
//! - RTX PRO 6000 Blackwell (Server Edition, 96 GB; driver 580): names are
//!   `NVIDIA RTX Pro 6000 Blackwell DC-<GB><series>`, spaces included (recorded-behaviour.md §0).
//!   1518 = DC-2B, 1519 = DC-3Q, 1521 = DC-4Q and 1540 = DC-48Q with their max instances (32, 32,
//!   24, 2) are from `nvidia-smi vgpu -s -v` on a real card, driver 580.105.06 (a test fixture in
//!   bigstack-oss/cubecos); 1519 = 0x5ef DC-3Q is also in its gpu module. The ids run with gaps
//!   (1520 is not one of these), so the blocks below keep them; the other Q sizes (96 GB's
//!   divisors from 3 GB, as no more than 32 vGPUs fit one GPU) and their ids are *inferred*.
//! - L4, H100: sizes are NVIDIA's documented ones, ids are *inferred* (a consistent range that
//!   does not collide with the known ones). Real code must read ids from the host, never this.
//!
//! `framebuffer` is GB * 1024 MiB, `max_instance` is GPU memory / size, capped at 32 on SR-IOV
//! GPUs (one vGPU per VF, 32 VFs); per-series display values follow NVIDIA's descriptions
//! (B: 4 heads, frl 45, 5120x2880 as the seed; Q: 4 heads, frl 60, 7680x4320; A: 1 head,
//! frl 60, 1280x1024; C: 1 head, frl 60, 4096x2160).

use std::sync::OnceLock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    /// Numeric type id: mdev type directory `nvidia-<id>`, vendor VFIO `current_vgpu_type`.
    pub id: u32,
    /// As the kernel's `name` file reports it: "NVIDIA A40-24Q".
    pub name: String,
    /// 'A', 'B', 'C' or 'Q'.
    pub series: char,
    pub framebuffer_mib: u32,
    /// Per physical GPU.
    pub max_instance: u32,
    pub num_heads: u32,
    pub frl_config: u32,
    pub max_resolution: &'static str,
}

impl TypeSpec {
    /// The mdev `description` line, in the seed's format.
    pub fn description(&self) -> String {
        format!(
            "num_heads={}, frl_config={}, framebuffer={}M, max_resolution={}, max_instance={}",
            self.num_heads,
            self.frl_config,
            self.framebuffer_mib,
            self.max_resolution,
            self.max_instance
        )
    }

    /// "A40-24Q": the name without its vendor prefix ("NVIDIA " or "GRID ").
    pub fn short_name(&self) -> &str {
        self.name
            .strip_prefix("NVIDIA ")
            .or_else(|| self.name.strip_prefix("GRID "))
            .unwrap_or(&self.name)
    }
}

/// One GPU model's type table.
#[derive(Debug)]
pub struct ModelTypes {
    /// Short model name: "A40", "T4", "L40S", "A10", "L4", "H100".
    pub model: &'static str,
    pub memory_gb: u32,
    pub types: Vec<TypeSpec>,
}

/// (model, name prefix in type names, GPU memory GB, SR-IOV, [(first id, [type sizes+series])]).
/// Ids run consecutively through each block.
type Block = (u32, &'static [&'static str]);
struct Def {
    model: &'static str,
    prefix: &'static str,
    memory_gb: u32,
    sriov: bool,
    blocks: &'static [Block],
}

const DEFS: &[Def] = &[
    Def {
        model: "A40",
        prefix: "NVIDIA A40",
        memory_gb: 48,
        sriov: true,
        blocks: &[(
            555,
            &[
                "1B", "2B", "1Q", "2Q", "3Q", "4Q", "6Q", "8Q", "12Q", "16Q", "24Q", "48Q", "1A",
                "2A", "3A", "4A", "6A", "8A", "12A", "16A", "24A", "48A",
            ],
        )],
    },
    Def {
        model: "A10",
        prefix: "NVIDIA A10",
        memory_gb: 24,
        sriov: true,
        blocks: &[(
            588,
            &[
                "1B", "2B", "1Q", "2Q", "3Q", "4Q", "6Q", "8Q", "12Q", "24Q", "1A", "2A", "3A",
                "4A", "6A", "8A", "12A", "24A",
            ],
        )],
    },
    Def {
        model: "T4",
        prefix: "GRID T4",
        memory_gb: 16,
        sriov: false,
        blocks: &[
            (222, &["1B", "2B", "2B4"]),
            (225, &["1A", "2A", "4A", "8A", "16A"]),
            (230, &["1Q", "2Q", "4Q", "8Q", "16Q"]),
            (252, &["1B4"]),
            (319, &["4C", "8C", "16C"]),
        ],
    },
    Def {
        model: "L40S",
        prefix: "NVIDIA L40S",
        memory_gb: 48,
        sriov: true,
        blocks: &[(
            1145,
            &[
                "1B", "2B", "1Q", "2Q", "3Q", "4Q", "6Q", "8Q", "12Q", "16Q", "24Q", "48Q", "1A",
                "2A", "3A", "4A", "6A", "8A", "12A", "16A", "24A", "48A", "4C", "6C", "8C", "12C",
                "16C", "24C", "48C",
            ],
        )],
    },
    Def {
        model: "RTX Pro 6000 Blackwell DC",
        prefix: "NVIDIA RTX Pro 6000 Blackwell DC",
        memory_gb: 96,
        sriov: true,
        blocks: &[
            (1518, &["2B", "3Q"]),
            (1521, &["4Q", "6Q", "8Q", "12Q", "16Q", "24Q", "32Q"]),
            (1540, &["48Q", "96Q"]),
        ],
    },
    Def {
        model: "L4",
        prefix: "NVIDIA L4",
        memory_gb: 24,
        sriov: true,
        // Ids inferred (see the module comment).
        blocks: &[(
            930,
            &[
                "1B", "2B", "1Q", "2Q", "3Q", "4Q", "6Q", "8Q", "12Q", "24Q", "1A", "2A", "3A",
                "4A", "6A", "8A", "12A", "24A", "4C", "6C", "8C", "12C", "24C",
            ],
        )],
    },
    Def {
        model: "H100",
        prefix: "NVIDIA H100XM",
        memory_gb: 80,
        sriov: true,
        // Compute-only GPU: C series; ids inferred.
        blocks: &[(1010, &["4C", "5C", "8C", "10C", "16C", "20C", "40C", "80C"])],
    },
];

fn build(def: &Def) -> ModelTypes {
    let mut types = Vec::new();
    for (first, sizes) in def.blocks {
        for (i, size) in sizes.iter().enumerate() {
            let digits: String = size.chars().take_while(|c| c.is_ascii_digit()).collect();
            let gb: u32 = digits.parse().expect("size in the table");
            let series = size[digits.len()..].chars().next().expect("series letter");
            let (num_heads, frl_config, max_resolution) = match series {
                'B' => (4, 45, "5120x2880"),
                'Q' => (4, 60, "7680x4320"),
                'A' => (1, 60, "1280x1024"),
                _ => (1, 60, "4096x2160"),
            };
            let mut max_instance = def.memory_gb / gb;
            if def.sriov {
                max_instance = max_instance.min(32);
            }
            types.push(TypeSpec {
                id: first + i as u32,
                name: format!("{}-{size}", def.prefix),
                series,
                framebuffer_mib: gb * 1024,
                max_instance,
                num_heads,
                frl_config,
                max_resolution,
            });
        }
    }
    ModelTypes {
        model: def.model,
        memory_gb: def.memory_gb,
        types,
    }
}

fn all() -> &'static [ModelTypes] {
    static ALL: OnceLock<Vec<ModelTypes>> = OnceLock::new();
    ALL.get_or_init(|| DEFS.iter().map(build).collect())
}

/// Short model names the catalog knows.
pub fn models() -> Vec<&'static str> {
    all().iter().map(|m| m.model).collect()
}

/// The types of a model ("A40", case-insensitive); empty for an unknown model.
pub fn types_for(model: &str) -> &'static [TypeSpec] {
    all()
        .iter()
        .find(|m| m.model.eq_ignore_ascii_case(model))
        .map(|m| m.types.as_slice())
        .unwrap_or(&[])
}

/// Find a type by name ("A40-24Q", "NVIDIA A40-24Q", "GRID T4-16Q") or id ("565",
/// "nvidia-565", "vfio-pci-565").
pub fn find(model: &str, name_or_id: &str) -> Option<&'static TypeSpec> {
    let q = name_or_id.trim();
    let id = q
        .strip_prefix("nvidia-")
        .or_else(|| q.strip_prefix("vfio-pci-"))
        .unwrap_or(q)
        .parse::<u32>()
        .ok();
    types_for(model).iter().find(|t| {
        Some(t.id) == id || t.name.eq_ignore_ascii_case(q) || t.short_name().eq_ignore_ascii_case(q)
    })
}

/// Find a type by id across all models (the simulator's sysfs holds ids only).
pub fn by_id(id: u32) -> Option<(&'static str, &'static TypeSpec)> {
    all()
        .iter()
        .find_map(|m| m.types.iter().find(|t| t.id == id).map(|t| (m.model, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's listing, verbatim (`for i in * ; do echo $i, `cat $i/name` ...`).
    const SEED: &str = "nvidia-555, NVIDIA A40-1B 1
nvidia-556, NVIDIA A40-2B 1
nvidia-557, NVIDIA A40-1Q 1
nvidia-558, NVIDIA A40-2Q 1
nvidia-559, NVIDIA A40-3Q 1
nvidia-560, NVIDIA A40-4Q 1
nvidia-561, NVIDIA A40-6Q 1
nvidia-562, NVIDIA A40-8Q 1
nvidia-563, NVIDIA A40-12Q 1
nvidia-564, NVIDIA A40-16Q 1
nvidia-565, NVIDIA A40-24Q 1
nvidia-566, NVIDIA A40-48Q 1
nvidia-567, NVIDIA A40-1A 1
nvidia-568, NVIDIA A40-2A 1
nvidia-569, NVIDIA A40-3A 1
nvidia-570, NVIDIA A40-4A 1
nvidia-571, NVIDIA A40-6A 1
nvidia-572, NVIDIA A40-8A 1
nvidia-573, NVIDIA A40-12A 1
nvidia-574, NVIDIA A40-16A 1
nvidia-575, NVIDIA A40-24A 1
nvidia-576, NVIDIA A40-48A 1";

    #[test]
    fn a40_matches_the_seed_exactly() {
        let types = types_for("A40");
        assert_eq!(types.len(), 22);
        for (line, t) in SEED.lines().zip(types) {
            let (dir, rest) = line.split_once(", ").unwrap();
            assert_eq!(dir, format!("nvidia-{}", t.id));
            assert_eq!(rest.rsplit_once(' ').unwrap().0, t.name);
        }
        assert_eq!(
            find("a40", "A40-1B").unwrap().description(),
            "num_heads=4, frl_config=45, framebuffer=1024M, max_resolution=5120x2880, max_instance=32"
        );
        assert_eq!(find("A40", "NVIDIA A40-24Q").unwrap().max_instance, 2);
        assert_eq!(find("A40", "vfio-pci-575").unwrap().name, "NVIDIA A40-24A");
    }

    #[test]
    fn known_real_ids_hold() {
        assert_eq!(find("L40S", "1145").unwrap().name, "NVIDIA L40S-1B");
        assert_eq!(find("L40S", "1147").unwrap().name, "NVIDIA L40S-1Q");
        assert_eq!(find("A10", "597").unwrap().name, "NVIDIA A10-24Q");
        assert_eq!(find("T4", "nvidia-231").unwrap().short_name(), "T4-2Q");
        assert_eq!(find("T4", "nvidia-321").unwrap().short_name(), "T4-16C");
        assert_eq!(find("T4", "T4-1B").unwrap().max_instance, 16);
        assert!(find("A40", "A40-5Q").is_none());
        assert!(types_for("GeForce").is_empty());
        // RTX PRO 6000 Blackwell, driver 580.105.06: (id, name, max instances) as listed.
        let bw = "RTX Pro 6000 Blackwell DC";
        for (id, name, max) in [
            ("1518", "NVIDIA RTX Pro 6000 Blackwell DC-2B", 32),
            ("1519", "NVIDIA RTX Pro 6000 Blackwell DC-3Q", 32),
            ("1521", "NVIDIA RTX Pro 6000 Blackwell DC-4Q", 24),
            ("1540", "NVIDIA RTX Pro 6000 Blackwell DC-48Q", 2),
        ] {
            let t = find(bw, id).unwrap();
            assert_eq!((t.name.as_str(), t.max_instance), (name, max));
        }
        assert!(find(bw, "1520").is_none(), "the ids have gaps");
        assert_eq!(
            find(bw, "rtx pro 6000 blackwell dc-4q").unwrap().id,
            1521,
            "names with spaces match whole, any case"
        );
    }

    #[test]
    fn ids_are_unique_across_models() {
        let mut ids: Vec<u32> = models()
            .iter()
            .flat_map(|m| types_for(m).iter().map(|t| t.id))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert_eq!(by_id(1147).unwrap().0, "L40S");
    }
}
