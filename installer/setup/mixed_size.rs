//! Mixed-size (heterogeneous) mode in a setup plan: a GPU that several profile entries select
//! with different vGPU types holds vGPUs of different sizes, which NVIDIA allows only in
//! mixed-size mode (recorded-behaviour.md §4). Pure: the rules a profile must meet, the step
//! that turns the mode on, and the one creation step for all of the GPU's entries.

use crate::facts::{Gpu, Vgpu};
use crate::profile::{Profile, SavedVgpu, Scheduler};
use crate::vgpu::select;
use crate::vgpu_name;

use super::plan::PlanError;
use super::plan::{Action, SysfsCreate};

fn err(field: String, reason: String) -> PlanError {
    PlanError { field, reason }
}

pub use crate::vgpu::mixed_size::command;

/// Refuse, naming the field, what the driver would refuse or NVIDIA does not support: the same
/// type twice on one GPU (one entry says it), the fixed-share scheduler, a GPU or driver
/// without mixed-size mode (the loaded driver's own answer), and sizes whose framebuffers add
/// up to more than the GPU has.
pub fn check(profile: &Profile, gpu: &Gpu, entries: &[usize]) -> Result<(), PlanError> {
    let field = |i: usize, k: &str| format!("gpus[{i}].{k}");
    let mut types: Vec<(usize, select::ResolvedType)> = Vec::new();
    for &i in entries {
        let ty = select::resolve_type(gpu, &profile.gpus[i].vgpu_type)
            .map_err(|e| err(field(i, "vgpu_type"), e))?;
        if let Some((j, _)) = types
            .iter()
            .find(|(_, t)| vgpu_name::same(&t.name, &ty.name))
        {
            return Err(err(
                field(i, "select"),
                format!(
                    "{} is already selected by gpus[{j}] with the same type {}; give one entry \
                     the whole count",
                    gpu.address,
                    vgpu_name::short(&ty.name)
                ),
            ));
        }
        types.push((i, ty));
    }
    let names = || {
        types
            .iter()
            .map(|(i, t)| format!("gpus[{i}] {}", vgpu_name::short(&t.name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let second = entries[1];
    if profile.host.scheduler == Some(Scheduler::FixedShare) {
        return Err(err(
            "host.scheduler".into(),
            format!(
                "{} {} gets vGPUs of different types ({}), which needs mixed-size mode; NVIDIA \
                 supports mixed-size mode with the best-effort and equal-share schedulers only, \
                 not fixed-share",
                gpu.model.name,
                gpu.address,
                names()
            ),
        ));
    }
    if gpu.mixed_size.is_some_and(|m| !m.supported) {
        return Err(err(
            field(second, "select"),
            format!(
                "{} {} gets vGPUs of different types ({}), but its driver reports no mixed-size \
                 (heterogeneous) mode for it (nvidia-smi -q: Heterogenous Multi-vGPU, \
                 Heterogeneous Time-Slice Profiles; it needs a vGPU 17 or later driver and a GPU \
                 that supports it); in equal-size mode a GPU holds one type: put these entries \
                 on different GPUs",
                gpu.model.name,
                gpu.address,
                names()
            ),
        ));
    }
    let total = gpu.memory_gib().map(|g| u64::from(g) * 1024).or_else(|| {
        // The GPU table does not know it: its largest type's framebuffer is the whole GPU's.
        gpu.parents
            .iter()
            .flat_map(|p| &p.types)
            .filter_map(|t| t.description.framebuffer_mib)
            .max()
    });
    let want: u64 = types
        .iter()
        .map(|(i, t)| u64::from(profile.gpus[*i].count) * t.framebuffer_mib.unwrap_or(0))
        .sum();
    if let Some(total) = total.filter(|t| want > *t) {
        let last = *entries.last().unwrap_or(&second);
        return Err(err(
            field(last, "count"),
            format!(
                "{} on {} {} need {want} MiB of framebuffer; the GPU has {total} MiB",
                types
                    .iter()
                    .map(|(i, t)| format!(
                        "{} x {}",
                        profile.gpus[*i].count,
                        vgpu_name::short(&t.name)
                    ))
                    .collect::<Vec<_>>()
                    .join(" + "),
                gpu.model.name,
                gpu.address
            ),
        ));
    }
    Ok(())
}

/// The step turning mixed-size mode on, unless the driver says it is on. Refused when vGPUs are
/// on the GPU while it is off: the driver refuses the switch then (`In use by another client`).
pub fn turn_on(
    gpu: &Gpu,
    on_gpu: &[&Vgpu],
    entries: &[usize],
) -> Result<Option<(String, String, Action)>, PlanError> {
    if gpu.mixed_size.is_some_and(|m| m.enabled) {
        return Ok(None);
    }
    if let Some(v) = on_gpu.first() {
        return Err(err(
            format!("gpus[{}].vgpu_type", entries[1]),
            format!(
                "{} {} is in equal-size mode and holds {} vGPU(s) ({} on {} among them); \
                 mixed-size mode can be turned on only while the GPU holds none (the driver \
                 answers `In use by another client`): remove them, or reboot, then run setup \
                 again",
                gpu.model.name,
                gpu.address,
                on_gpu.len(),
                v.type_name,
                v.parent
            ),
        ));
    }
    Ok(Some((
        format!("mixed-size:{}", gpu.address),
        format!(
            "Turn on mixed-size mode on {} {} (after SR-IOV, before the first vGPU)",
            gpu.model.name, gpu.address
        ),
        Action::Run(command(&gpu.address)),
    )))
}

/// A mixed-size GPU's work across its entries: one creation step, so that its pins are saved
/// together (a GPU's pins are replaced as a whole by what exists).
#[derive(Default)]
pub struct Group {
    names: Vec<String>,
    present: Vec<SavedVgpu>,
    create: Vec<SysfsCreate>,
}

impl Group {
    pub fn add(&mut self, type_name: &str, present: Vec<SavedVgpu>, create: Vec<SysfsCreate>) {
        if !create.is_empty() {
            self.names.push(type_name.to_string());
        }
        self.present.extend(present);
        self.create.extend(create);
    }

    /// The vGPUs planned so far, as devices: their parents are taken for the next entry.
    pub fn planned(&self) -> Vec<Vgpu> {
        self.create
            .iter()
            .map(|c| Vgpu {
                uuid: Some(c.create.uuid.clone()),
                parent: c.create.parent.clone(),
                gpu: Some(c.create.gpu.clone()),
                type_id: c.create.type_id.clone(),
                type_name: c.create.type_name.clone(),
                interface: c.create.interface,
                in_use: false,
            })
            .collect()
    }

    /// `mixed_size`: the GPU runs in mixed-size mode; otherwise its types are MIG-backed,
    /// each vGPU on a GPU instance of its own profile.
    pub fn into_step(self, gpu: &Gpu, mixed_size: bool) -> Option<(String, String, Action)> {
        if self.create.is_empty() {
            return None;
        }
        let short: Vec<&str> = self.names.iter().map(|n| vgpu_name::short(n)).collect();
        Some((
            format!("vgpus:{}", gpu.address),
            format!(
                "Create {} vGPUs on {} {} ({})",
                short.join(" + "),
                gpu.model.name,
                gpu.address,
                if mixed_size {
                    "mixed-size mode"
                } else {
                    "MIG-backed, each on a GPU instance of its profile"
                }
            ),
            Action::CreateVgpus {
                gpu: gpu.address.clone(),
                model: gpu.model.name.clone(),
                type_name: short.join(" + "),
                present: self.present,
                create: self.create,
            },
        ))
    }
}
