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
//! - A100 PCIe 80GB (type prefix `A100D`) and H200 SXM5 141GB (`H200X`): the time-sliced C
//!   series and the MIG-backed types (`<GPU>-<slices>-<GB>C`, `...CME` with media extensions,
//!   recorded-behaviour.md §0/§5), with framebuffer, max vGPUs per GPU and GPU instance profile
//!   from NVIDIA's "NVIDIA vGPU Types by Hardware" tables (AI Enterprise infra docs: Ampere
//!   "MIG-Backed NVIDIA vGPU (C-Series) for NVIDIA A100 PCIe 80GB", Hopper "MIG-Backed NVIDIA
//!   vGPU for Compute for NVIDIA H200 SXM5 141GB" and its time-sliced table). A100D ids
//!   692..703 and 707 are recorded (stackhpc/ansible-collection-linux `roles/vgpu/README.md`,
//!   `mdev_supported_types` of an A100 80GB PCIe on driver 525: nvidia-699 GRID A100D-1-10C ...
//!   nvidia-707 GRID A100D-1-10CME); 704 = A100D-1-20C is *inferred* (the gap). Every H200X id
//!   is *inferred*. The GPU instance profiles (`nvidia-smi mig -lgip`) are in [`gi_profiles`].
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
    /// MIG-backed types: the GPU instance profile id (`nvidia-smi mig -lgip` ID column) one
    /// vGPU of this type needs. None for time-sliced types.
    pub gi_profile: Option<u32>,
}

impl TypeSpec {
    /// A MIG-backed type: it lives in a GPU instance of `gi_profile` (recorded-behaviour §5).
    pub fn mig_backed(&self) -> bool {
        self.gi_profile.is_some()
    }

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
                gi_profile: None,
            });
        }
    }
    ModelTypes {
        model: def.model,
        memory_gb: def.memory_gb,
        types,
    }
}

/// A type given whole, as NVIDIA's tables list it: (id, size+series, framebuffer GB, max vGPUs
/// per GPU, GPU instance profile id for a MIG-backed type).
type Listed = (u32, &'static str, u32, u32, Option<u32>);

/// (model, name prefix, GPU memory GB, types): GPUs whose tables do not follow the computed rule
/// (MIG-backed types; framebuffers and maxima as NVIDIA prints them).
const LISTED: &[(&str, &str, u32, &[Listed])] = &[
    (
        "A100D",
        "NVIDIA A100D",
        80,
        &[
            (692, "4C", 4, 20, None),
            (693, "8C", 8, 10, None),
            (694, "10C", 10, 8, None),
            (695, "16C", 16, 5, None),
            (696, "20C", 20, 4, None),
            (697, "40C", 40, 2, None),
            (698, "80C", 80, 1, None),
            (699, "1-10C", 10, 7, Some(19)),
            (700, "2-20C", 20, 3, Some(14)),
            (701, "3-40C", 40, 2, Some(9)),
            (702, "4-40C", 40, 1, Some(5)),
            (703, "7-80C", 80, 1, Some(0)),
            (704, "1-20C", 20, 4, Some(15)),
            (707, "1-10CME", 10, 1, Some(20)),
        ],
    ),
    (
        "H200X",
        "NVIDIA H200X",
        141,
        // Every id inferred (see the module comment); framebuffers as NVIDIA's table prints
        // them (144 GB for the whole GPU's types).
        &[
            (1710, "4C", 4, 32, None),
            (1711, "7C", 7, 20, None),
            (1712, "8C", 8, 16, None),
            (1713, "14C", 14, 10, None),
            (1714, "17C", 17, 8, None),
            (1715, "28C", 28, 5, None),
            (1716, "35C", 35, 4, None),
            (1717, "70C", 71, 2, None),
            (1718, "141C", 144, 1, None),
            (1719, "1-18C", 18, 7, Some(19)),
            (1720, "1-18CME", 18, 1, Some(20)),
            (1721, "1-35C", 35, 4, Some(15)),
            (1722, "2-35C", 35, 3, Some(14)),
            (1723, "3-71C", 72, 2, Some(9)),
            (1724, "4-71C", 72, 1, Some(5)),
            (1725, "7-141C", 144, 1, Some(0)),
        ],
    ),
];

fn build_listed(
    (model, prefix, memory_gb, listed): &(&'static str, &'static str, u32, &[Listed]),
) -> ModelTypes {
    let types = listed
        .iter()
        .map(|(id, size, gb, max, gi)| TypeSpec {
            id: *id,
            name: format!("{prefix}-{size}"),
            series: 'C',
            framebuffer_mib: gb * 1024,
            max_instance: *max,
            num_heads: 1,
            frl_config: 60,
            max_resolution: "4096x2160",
            gi_profile: *gi,
        })
        .collect();
    ModelTypes {
        model,
        memory_gb: *memory_gb,
        types,
    }
}

fn all() -> &'static [ModelTypes] {
    static ALL: OnceLock<Vec<ModelTypes>> = OnceLock::new();
    ALL.get_or_init(|| {
        DEFS.iter()
            .map(build)
            .chain(LISTED.iter().map(build_listed))
            .collect()
    })
}

/// A GPU instance profile as `nvidia-smi mig -lgip` lists it (recorded-behaviour §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiProfile {
    /// The ID column (`-cgi 19`).
    pub id: u32,
    /// "1g.10gb", "1g.10gb+me" (shown as `MIG 1g.10gb`).
    pub name: &'static str,
    /// Memory slices (of 8) it takes, and where it may start: its placements.
    pub size: u32,
    pub starts: &'static [u32],
    /// Instances at most per GPU (the Total of `Free/Total`).
    pub max: u32,
    /// The `Memory GiB` column, as printed.
    pub memory_gib: &'static str,
    pub sm: u32,
    pub dec: u32,
    pub enc: u32,
    pub ce: u32,
    pub jpeg: u32,
    pub ofa: u32,
}

const fn gip(
    id: u32,
    name: &'static str,
    size: u32,
    starts: &'static [u32],
    max: u32,
    memory_gib: &'static str,
    [sm, dec, enc, ce, jpeg, ofa]: [u32; 6],
) -> GiProfile {
    GiProfile {
        id,
        name,
        size,
        starts,
        max,
        memory_gib,
        sm,
        dec,
        enc,
        ce,
        jpeg,
        ofa,
    }
}

const ONE: &[u32] = &[0, 1, 2, 3, 4, 5, 6];
const TWO: &[u32] = &[0, 2, 4, 6];
const TWO_G: &[u32] = &[0, 2, 4];
const HALF: &[u32] = &[0, 4];
const WHOLE: &[u32] = &[0];

/// A100 80GB: ids, names, memory and engine counts as public `nvidia-smi mig -lgip` captures
/// of A100 80GB cards print them (the NVIDIA MIG user guide's A100 profile table, 80GB names);
/// placements are the MIG user guide's A100 placement diagram.
const A100_80GB: &[GiProfile] = &[
    gip(19, "1g.10gb", 1, ONE, 7, "9.50", [14, 0, 0, 1, 0, 0]),
    gip(20, "1g.10gb+me", 1, ONE, 1, "9.50", [14, 1, 0, 1, 1, 1]),
    gip(15, "1g.20gb", 2, TWO, 4, "19.50", [14, 1, 0, 1, 0, 0]),
    gip(14, "2g.20gb", 2, TWO_G, 3, "19.50", [28, 1, 0, 2, 0, 0]),
    gip(9, "3g.40gb", 4, HALF, 2, "39.25", [42, 2, 0, 3, 0, 0]),
    gip(5, "4g.40gb", 4, WHOLE, 1, "39.25", [56, 2, 0, 4, 0, 0]),
    gip(0, "7g.80gb", 8, WHOLE, 1, "79.00", [98, 5, 0, 7, 1, 1]),
];

/// H200 141GB: names, sizes and instance counts from the MIG user guide's H200 table; 1g.18gb,
/// 1g.18gb+me, 2g.35gb and 7g.141gb rows as a public `-lgip` capture prints them; the memory
/// and engine columns of 1g.35gb, 3g.71gb and 4g.71gb are *inferred* (from H100's rows).
const H200_141GB: &[GiProfile] = &[
    gip(19, "1g.18gb", 1, ONE, 7, "16.00", [16, 1, 0, 1, 1, 0]),
    gip(20, "1g.18gb+me", 1, ONE, 1, "16.00", [16, 1, 0, 1, 1, 1]),
    gip(15, "1g.35gb", 2, TWO, 4, "32.50", [26, 1, 0, 1, 1, 0]),
    gip(14, "2g.35gb", 2, TWO_G, 3, "32.50", [32, 2, 0, 2, 2, 0]),
    gip(9, "3g.71gb", 4, HALF, 2, "69.75", [60, 3, 0, 3, 3, 0]),
    gip(5, "4g.71gb", 4, WHOLE, 1, "69.75", [64, 4, 0, 4, 4, 0]),
    gip(0, "7g.141gb", 8, WHOLE, 1, "140.00", [132, 7, 0, 8, 7, 1]),
];

/// The GPU instance profiles of a model ("A100D", "H200X"); empty for a GPU without MIG.
pub fn gi_profiles(model: &str) -> &'static [GiProfile] {
    if model.eq_ignore_ascii_case("A100D") {
        A100_80GB
    } else if model.eq_ignore_ascii_case("H200X") {
        H200_141GB
    } else {
        &[]
    }
}

/// A profile of a model by id ("19"), short name ("1g.10gb") or full name ("MIG 1g.10gb").
pub fn find_gi_profile(model: &str, q: &str) -> Option<&'static GiProfile> {
    let q = q.trim();
    let short = q.strip_prefix("MIG ").unwrap_or(q);
    let id = q.parse::<u32>().ok();
    gi_profiles(model)
        .iter()
        .find(|p| Some(p.id) == id || p.name.eq_ignore_ascii_case(short))
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

/// The driver branch whose ids a model's table holds: the branch the simulated hosts run
/// (550, the seed's 17.x; 580 for the RTX PRO 6000 Blackwell and the H200, whose `-ready` hosts
/// run 580.105.06, the version of the recorded Blackwell ids).
pub fn table_branch(model: &str) -> u32 {
    if model.eq_ignore_ascii_case("RTX Pro 6000 Blackwell DC")
        || model.eq_ignore_ascii_case("H200X")
    {
        580
    } else {
        550
    }
}

/// A driver version's branch, its first number: "580.105.06" -> 580.
pub fn branch_of(version: &str) -> Option<u32> {
    version.trim().split('.').next()?.parse().ok()
}

/// The types a host driver of `branch` offers for `model`, with that branch's ids. Type ids name
/// a type on one branch only (recorded-behaviour.md §1), but no two branches' listings of one
/// GPU are recorded, so the rule for another branch is *a guess*, kept simple and visible: a
/// branch newer than the table's ([`table_branch`]) numbers each type `id + (branch - table)`
/// (so a stale id names another type there, or none) and no longer offers the table's 1 GB
/// A-series type (`-1A`), so that a type can go away across an upgrade. The table's branch, or
/// an older one, is the table itself.
pub fn types_on_branch(model: &str, branch: u32) -> &'static [TypeSpec] {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let table = table_branch(model);
    if branch <= table {
        return types_for(model);
    }
    type Branches = HashMap<(String, u32), &'static [TypeSpec]>;
    static CACHE: OnceLock<Mutex<Branches>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (model.to_ascii_lowercase(), branch);
    if let Some(t) = cache.get(&key) {
        return t;
    }
    let shift = branch - table;
    let types: Vec<TypeSpec> = types_for(model)
        .iter()
        .filter(|t| !(t.series == 'A' && t.framebuffer_mib == 1024 && !t.mig_backed()))
        .map(|t| TypeSpec {
            id: t.id + shift,
            ..t.clone()
        })
        .collect();
    let leaked: &'static [TypeSpec] = Box::leak(types.into_boxed_slice());
    cache.insert(key, leaked);
    leaked
}

/// Is a type of this name (with or without its vendor prefix, any case) offered for `model` by a
/// driver of `branch`? `None` when the catalog has no table for the model.
pub fn offered_on_branch(model: &str, branch: u32, name: &str) -> Option<bool> {
    if types_for(model).is_empty() {
        return None;
    }
    let q = name.trim();
    let short = q
        .strip_prefix("NVIDIA ")
        .or_else(|| q.strip_prefix("GRID "))
        .unwrap_or(q);
    Some(
        types_on_branch(model, branch)
            .iter()
            .any(|t| t.name.eq_ignore_ascii_case(q) || t.short_name().eq_ignore_ascii_case(short)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_branch_renumbers_and_drops_the_1a_type() {
        let old = find("A40", "A40-24Q").unwrap();
        let new = types_on_branch("A40", 580);
        let t = new.iter().find(|t| t.name == "NVIDIA A40-24Q").unwrap();
        assert_eq!(t.id, old.id + 30);
        assert!(!new.iter().any(|t| t.name == "NVIDIA A40-1A"));
        assert_eq!(offered_on_branch("A40", 580, "A40-1A"), Some(false));
        assert_eq!(offered_on_branch("A40", 550, "a40-1a"), Some(true));
        assert_eq!(
            offered_on_branch("L40S", 580, "NVIDIA L40S-12Q"),
            Some(true)
        );
        assert_eq!(offered_on_branch("NoSuchGpu", 580, "X-1Q"), None);
        // The table's own branch (580 for the Blackwell) is the table.
        assert_eq!(
            types_on_branch("RTX Pro 6000 Blackwell DC", 580),
            types_for("RTX Pro 6000 Blackwell DC")
        );
        assert_eq!(branch_of("580.105.06"), Some(580));
    }

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
    fn mig_backed_types_follow_nvidia_tables() {
        // stackhpc's recorded A100 80GB PCIe listing (driver 525): id and name.
        for (id, name) in [
            (692, "A100D-4C"),
            (698, "A100D-80C"),
            (699, "A100D-1-10C"),
            (700, "A100D-2-20C"),
            (701, "A100D-3-40C"),
            (702, "A100D-4-40C"),
            (703, "A100D-7-80C"),
            (707, "A100D-1-10CME"),
        ] {
            assert_eq!(find("A100D", &id.to_string()).unwrap().short_name(), name);
        }
        // NVIDIA's table: framebuffer, max per GPU and the profile each one needs.
        let t = find("A100D", "A100D-1-10C").unwrap();
        assert_eq!(
            (t.framebuffer_mib, t.max_instance, t.gi_profile),
            (10240, 7, Some(19))
        );
        assert_eq!(find_gi_profile("A100D", "19").unwrap().name, "1g.10gb");
        let t = find("H200X", "NVIDIA H200X-1-18C").unwrap();
        assert_eq!((t.framebuffer_mib, t.max_instance), (18 * 1024, 7));
        let p = find_gi_profile("H200X", &t.gi_profile.unwrap().to_string()).unwrap();
        assert_eq!((p.name, p.max), ("1g.18gb", 7));
        assert_eq!(find_gi_profile("H200X", "MIG 3g.71gb").unwrap().id, 9);
        assert!(!find("H200X", "H200X-35C").unwrap().mig_backed());
        // Every MIG-backed type names a profile of its GPU, and no more vGPUs than it fits.
        for m in ["A100D", "H200X"] {
            for t in types_for(m).iter().filter(|t| t.mig_backed()) {
                let p = find_gi_profile(m, &t.gi_profile.unwrap().to_string()).unwrap();
                assert_eq!(p.max, t.max_instance, "{}", t.name);
            }
        }
        assert!(gi_profiles("A40").is_empty());
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
