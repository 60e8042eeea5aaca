//! A GPU's MIG-backed entries in a setup plan: one or several MIG-backed types on one GPU, each
//! vGPU on a GPU instance of its type's profile (recorded-behaviour.md §5; stackhpc's 3 x
//! A100D-2-20C + 1 x A100D-1-10C on one A100 80GB). Pure: the rules a profile must meet before
//! any change, and the steps creating the GPU instances still missing, larger ones first.

use crate::facts::{Gpu, Vgpu};
use crate::profile::Profile;
use crate::vgpu::{mig, mig_fit, select};
use crate::vgpu_name;

use super::plan::{Action, PlanError};

fn err(field: String, reason: String) -> PlanError {
    PlanError { field, reason }
}

/// The GPU instances a GPU's entries need: per profile, how many, in creation order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigGroup {
    /// The catalog model whose placement rules apply ("A100D").
    pub model: &'static str,
    pub wanted: Vec<(String, u32)>,
    /// The MIG-backed types the entries ask for (full names).
    pub types: Vec<String>,
}

/// None when no entry of this GPU asks a MIG-backed type. Refused, naming the field: a
/// MIG-backed type next to a time-sliced one (a GPU in MIG mode lists only MIG-backed types,
/// and MIG mode has no mixed-size mode), one type in two entries, and a mix whose GPU
/// instances do not fit NVIDIA's placement rules.
pub fn check(
    profile: &Profile,
    gpu: &Gpu,
    entries: &[usize],
) -> Result<Option<MigGroup>, PlanError> {
    let field = |i: usize, k: &str| format!("gpus[{i}].{k}");
    let kinds: Vec<(usize, Option<&'static str>, String)> = entries
        .iter()
        .map(|&i| {
            let asked = &profile.gpus[i].vgpu_type;
            let t = select::known_type(gpu, asked).filter(|t| t.mig_backed());
            let name = t.map_or(asked.clone(), |t| t.name.clone());
            (i, t.and_then(|t| mig::gi_profile_of(&t.name)), name)
        })
        .collect();
    let Some((mi, _, mig_name)) = kinds.iter().find(|k| k.1.is_some()) else {
        return Ok(None);
    };
    if let Some((ti, _, ts_name)) = kinds.iter().find(|k| k.1.is_none()) {
        return Err(err(
            field(*ti.max(mi), "vgpu_type"),
            format!(
                "{} {} gets the MIG-backed type {} (gpus[{mi}]) and the time-sliced type {} \
                 (gpus[{ti}]); a GPU in MIG mode holds only MIG-backed vGPUs, each on its GPU \
                 instance, and has no mixed-size mode: put the time-sliced type on another GPU",
                gpu.model.name,
                gpu.address,
                vgpu_name::short(mig_name),
                vgpu_name::short(ts_name)
            ),
        ));
    }
    let mut types: Vec<String> = Vec::new();
    let mut wanted: Vec<(String, u32)> = Vec::new();
    for (i, gi, name) in &kinds {
        if let Some(j) = kinds
            .iter()
            .find(|(j, _, other)| j < i && vgpu_name::same(other, name))
            .map(|k| k.0)
        {
            return Err(err(
                field(*i, "select"),
                format!(
                    "{} is already selected by gpus[{j}] with the same type {}; give one entry \
                     the whole count",
                    gpu.address,
                    vgpu_name::short(name)
                ),
            ));
        }
        let gi = gi.expect("all MIG-backed here").to_string();
        let n = profile.gpus[*i].count;
        match wanted.iter_mut().find(|(p, _)| *p == gi) {
            Some((_, c)) => *c += n,
            None => wanted.push((gi, n)),
        }
        types.push(name.clone());
    }
    let mut order: Vec<String> = wanted.iter().map(|(p, _)| p.clone()).collect();
    mig_fit::creation_order(&mut order);
    let wanted: Vec<(String, u32)> = order
        .into_iter()
        .map(|p| {
            let n = wanted.iter().find(|(q, _)| *q == p).map_or(0, |w| w.1);
            (p, n)
        })
        .collect();
    let Some(model) = mig_fit::model_of(mig_name) else {
        return Ok(None);
    };
    if let Err(why) = mig_fit::fits(model, &[], &wanted) {
        let last = *entries.last().expect("a group has an entry");
        return Err(err(
            field(last, "count"),
            format!(
                "{} on {} {} do not fit: {why}",
                asked(profile, &kinds),
                gpu.model.name,
                gpu.address
            ),
        ));
    }
    Ok(Some(MigGroup {
        model,
        wanted,
        types,
    }))
}

/// "3 x A100D-2-20C + 1 x A100D-1-10C".
fn asked(profile: &Profile, kinds: &[(usize, Option<&'static str>, String)]) -> String {
    kinds
        .iter()
        .map(|(i, _, n)| format!("{} x {}", profile.gpus[*i].count, vgpu_name::short(n)))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The steps creating the GPU instances the group still lacks, larger profiles first (each
/// read back by its step). Instances there count unless a vGPU of a type no entry asks holds
/// them. Refused when those missing no longer fit next to the instances there (the driver
/// would answer `Insufficient Resources` after the earlier ones were made).
pub fn instance_steps(
    gpu: &Gpu,
    group: &MigGroup,
    vgpus: &[Vgpu],
    last_entry: usize,
) -> Result<Vec<(String, String, Action)>, PlanError> {
    let foreign = |p: &str| {
        vgpus
            .iter()
            .filter(|v| v.gpu.as_deref() == Some(gpu.address.as_str()))
            .filter(|v| !group.types.iter().any(|t| vgpu_name::same(t, &v.type_name)))
            .filter(|v| mig::gi_profile_of(&v.type_name) == Some(p))
            .count() as u32
    };
    let mut missing: Vec<(String, u32, u32)> = Vec::new();
    for (p, n) in &group.wanted {
        let there = gpu.gpu_instances.iter().filter(|g| g.profile == *p).count() as u32;
        let usable = there.saturating_sub(foreign(p));
        if *n > usable {
            missing.push((p.clone(), n - usable, there + n - usable));
        }
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let occupied: Vec<mig_fit::Occupied> = gpu
        .gpu_instances
        .iter()
        .map(|g| mig_fit::Occupied {
            profile: g.profile.clone(),
            start: g.start,
            size: g.size,
        })
        .collect();
    let more: Vec<(String, u32)> = missing.iter().map(|(p, n, _)| (p.clone(), *n)).collect();
    mig_fit::fits(group.model, &occupied, &more).map_err(|why| {
        err(
            format!("gpus[{last_entry}].count"),
            format!(
                "the GPU instances still missing on {} {} do not fit next to the {} there: \
                 {why}; free them (nvidia-smi mig -i {} -dgi) or reboot, then run setup again",
                gpu.model.name,
                gpu.address,
                gpu.gpu_instances.len(),
                gpu.address
            ),
        )
    })?;
    let several = missing.len() > 1;
    Ok(missing
        .into_iter()
        .map(|(p, count, total)| {
            (
                if several {
                    format!("gpu-instances:{}:{p}", gpu.address)
                } else {
                    format!("gpu-instances:{}", gpu.address)
                },
                format!(
                    "Create {count} GPU instance(s) of {p} on {} {}",
                    gpu.model.name, gpu.address
                ),
                Action::CreateGpuInstances {
                    gpu: gpu.address.clone(),
                    profile: p,
                    count,
                    total,
                },
            )
        })
        .collect())
}
