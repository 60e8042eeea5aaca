//! MIG on the simulated GPUs (recorded-behaviour.md §5): MIG mode (`nvidia-smi -i N -mig 0|1`),
//! GPU instances (`nvidia-smi mig -lgip / -cgi [-C] / -lgi / -dci / -dgi`) and where each one is
//! placed. The placement and id rules are pure functions of the GPU's instances; the commands
//! change the state under the kernel's lock and print what nvidia-smi prints.

use std::collections::BTreeMap;

use anyhow::Result;

use super::kernel::SimKernel;
use super::models::{Mig, Model};
use super::programs::normalize_addr;
use super::state::{GpuInstance, State};
use crate::seam::RunOutput;
use vgpuctl_catalog::{self as catalog, GiProfile};

/// Where the driver tries to place a new instance of a size, first to last. Fitted to the
/// recorded out-of-order ids (rapidsai/dask-cuda issue 583: seven 1g instances came out 9, 7,
/// 8, 11, ...; a public capture: a first 2g instance at 4:2 with id 5; a first 3g instance at
/// 0:4, leaving three 1g placements, `7/7` to `3/7`). *A guess* beyond those: NVIDIA's real choice also weighs what is already placed,
/// so an order that leaves no room for a later larger profile (a 1g before a 4g) is refused
/// here where a real driver might fit it; NVIDIA's guide advises creating larger ones first.
fn preference(size: u32) -> &'static [u32] {
    match size {
        1 => &[2, 0, 1, 4, 3, 5, 6],
        2 => &[4, 2, 0, 6],
        4 => &[0, 4],
        _ => &[0],
    }
}

/// The id of the instance at a placement: the GPU's memory slices as a tree (whole 0, halves
/// 1-2, quarters 3-6, eighths 7-14), the layout the recorded ids fit (4g at 0:4 is id 1, a 1g
/// at 6:1 is id 13).
pub fn instance_id(start: u32, size: u32) -> u32 {
    match size {
        8 => 0,
        4 => 1 + start / 4,
        2 => 3 + start / 2,
        _ => 7 + start,
    }
}

fn overlaps(g: &GpuInstance, start: u32, size: u32) -> bool {
    g.start < start + size && start < g.start + g.size
}

/// Where a new instance of `p` goes among `existing` (one GPU's), or None when it does not fit
/// ("Insufficient Resources"): its profile's maximum, then the first free placement.
pub fn place(p: &GiProfile, existing: &[&GpuInstance]) -> Option<(u32, u32)> {
    if existing.iter().filter(|g| g.profile == p.id).count() as u32 >= p.max {
        return None;
    }
    preference(p.size)
        .iter()
        .copied()
        .filter(|s| p.starts.contains(s))
        .find(|s| !existing.iter().any(|g| overlaps(g, *s, p.size)))
        .map(|s| (s, instance_id(s, p.size)))
}

/// How many more instances of `p` fit now (`-lgip`'s Free).
pub fn free_count(pf: &str, p: &GiProfile, existing: &[&GpuInstance]) -> u32 {
    let mut all: Vec<GpuInstance> = existing.iter().map(|g| (*g).clone()).collect();
    let mut n = 0;
    loop {
        let refs: Vec<&GpuInstance> = all.iter().collect();
        let Some((start, id)) = place(p, &refs) else {
            return n;
        };
        all.push(GpuInstance {
            pf: pf.to_string(),
            id,
            profile: p.id,
            start,
            size: p.size,
            compute: false,
        });
        n += 1;
    }
}

/// Per profile, the instances of one GPU no vGPU holds yet.
pub fn free_instances(st: &State, pf: &str) -> BTreeMap<u32, u32> {
    let mut free = BTreeMap::new();
    for g in st.gpu_instances.iter().filter(|g| g.pf == pf) {
        let held = st
            .vgpus
            .iter()
            .any(|v| v.pf == pf && v.gpu_instance == Some(g.id));
        if !held {
            *free.entry(g.profile).or_insert(0) += 1;
        }
    }
    free
}

/// A free instance of `profile` on `pf` for a new vGPU, in creation order.
pub fn free_instance(st: &State, pf: &str, profile: u32) -> Option<u32> {
    st.gpu_instances
        .iter()
        .filter(|g| g.pf == pf && g.profile == profile)
        .map(|g| g.id)
        .find(|id| {
            !st.vgpus
                .iter()
                .any(|v| v.pf == pf && v.gpu_instance == Some(*id))
        })
}

/// nvidia-smi's bus id of a GPU: `00000000:17:00.0`.
pub fn bus_id(pf: &str) -> String {
    format!("0000{}", pf.to_uppercase())
}

fn value_of<'a>(a: &[&'a str], flags: &[&str]) -> Option<&'a str> {
    a.iter()
        .position(|x| flags.contains(x))
        .and_then(|i| a.get(i + 1))
        .copied()
}

/// The GPUs `-i` names (an index, a PCI bus id, or a comma list of them), or every GPU.
/// Err: the argument names none.
pub fn targets(m: &Model, a: &[&str]) -> std::result::Result<Vec<(usize, String)>, String> {
    let Some(spec) = value_of(a, &["-i", "--id"]) else {
        return Ok(m
            .pfs
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.to_string()))
            .collect());
    };
    spec.split(',')
        .map(|g| {
            let g = g.trim();
            let i = match g.parse::<usize>() {
                Ok(i) => (i < m.pfs.len()).then_some(i),
                Err(_) => normalize_addr(g).and_then(|p| m.pfs.iter().position(|x| *x == p)),
            };
            i.map(|i| (i, m.pfs[i].to_string()))
                .ok_or_else(|| format!("No devices were found matching {g}\n"))
        })
        .collect()
}

fn mode_word(on: bool) -> &'static str {
    if on {
        "Enabled"
    } else {
        "Disabled"
    }
}

/// `mig.mode.current` / `mig.mode.pending` as nvidia-smi prints them (`[N/A]` without MIG).
pub fn mode_values(m: &Model, st: &State, pf: &str) -> (String, String) {
    if m.mig == Mig::None {
        return ("[N/A]".into(), "[N/A]".into());
    }
    (
        mode_word(st.mig_current.contains(pf)).into(),
        mode_word(st.mig_pending.contains(pf)).into(),
    )
}

/// The `nvidia-smi -q` block of a MIG-capable GPU (the layout of `-q`'s `MIG Mode` section).
pub fn q_block(m: &Model, st: &State, pf: &str) -> String {
    if m.mig == Mig::None {
        return String::new();
    }
    let (cur, pend) = mode_values(m, st, pf);
    format!(
        "    MIG Mode\n        Current{:27}: {cur}\n        Pending{:27}: {pend}\n",
        "", ""
    )
}

/// A GPU reset or a boot applies the pending mode where it persists; where it does not
/// (Hopper), a boot turns MIG off. Instances never survive either.
pub fn at_boot(m: &Model, st: &mut State) {
    st.gpu_instances.clear();
    match m.mig {
        Mig::PendingUntilReset => st.mig_current = st.mig_pending.clone(),
        Mig::AtOnce | Mig::None => {
            st.mig_current.clear();
            st.mig_pending.clear();
        }
    }
}

fn output(status: i32, stdout: String, stderr: String) -> Result<RunOutput> {
    Ok(RunOutput {
        status,
        stdout,
        stderr,
    })
}

/// `nvidia-smi -i N -mig 0|1`. Refused while a vGPU exists on the GPU, and `-mig 0` while its
/// VFs are enabled (recorded, cubecos) or GPU instances exist; the refusal's wording and exit
/// status 255 are *guesses*, as is `Not Supported` with exit 3 on a GPU without MIG.
pub(crate) fn set_mode(k: &SimKernel, a: &[&str]) -> Result<RunOutput> {
    let m = k.model;
    let on = match value_of(a, &["-mig", "--multi-instance-gpu"]) {
        Some("1") => true,
        Some("0") => false,
        v => {
            return output(
                2,
                String::new(),
                format!("Invalid value for -mig: {}\n", v.unwrap_or("")),
            )
        }
    };
    let gpus = match targets(m, a) {
        Ok(g) => g,
        Err(e) => return output(6, String::new(), e),
    };
    let verb = if on { "enable" } else { "disable" };
    let (mut out, mut err, mut status) = (String::new(), String::new(), 0);
    k.with(|st| {
        for (_, pf) in &gpus {
            let bus = bus_id(pf);
            if m.mig == Mig::None {
                err.push_str(&format!(
                    "Unable to {verb} MIG Mode for GPU {bus}: Not Supported\n"
                ));
                status = 3;
                continue;
            }
            let vfs_on = st.numvfs.get(pf).copied().unwrap_or(0) > 0;
            let busy = st.vgpus.iter().any(|v| v.pf == *pf)
                || (!on && (vfs_on || st.gpu_instances.iter().any(|g| g.pf == *pf)));
            if busy {
                err.push_str(&format!(
                    "Unable to {verb} MIG Mode for GPU {bus}: In use by another client\n"
                ));
                status = 255;
                continue;
            }
            let set = |s: &mut std::collections::BTreeSet<String>| {
                if on {
                    s.insert(pf.clone());
                } else {
                    s.remove(pf);
                }
            };
            set(&mut st.mig_pending);
            let now = m.mig == Mig::AtOnce || st.mig_current.contains(pf) == on;
            if now {
                set(&mut st.mig_current);
                out.push_str(&format!("{} MIG Mode for GPU {bus}\n", mode_word(on)));
            } else {
                // The vGPU manager holds the GPU, so nvidia-smi cannot reset it now: the mode
                // waits for a reset or a reboot. Wording as a public capture of an A100 printed
                // it (seansiddens/mps-test README), reason included.
                out.push_str(&format!(
                    "Warning: MIG mode is in pending {verb} state for GPU {bus}:Not Supported\n\
                     Reboot the system or try nvidia-smi --gpu-reset to make MIG mode effective on GPU {bus}\n"
                ));
            }
            k.render_gpu(st, pf)?;
        }
        Ok(())
    })?;
    out.push_str("All done.\n");
    output(status, out, err)
}

/// The GPUs of `gpus` in MIG mode now.
fn mig_on<'a>(st: &State, gpus: &'a [(usize, String)]) -> Vec<&'a (usize, String)> {
    gpus.iter()
        .filter(|(_, pf)| st.mig_current.contains(pf))
        .collect()
}

const NO_MIG: &str = "No MIG-enabled devices found.\n";

/// `nvidia-smi mig ...`: `-lgip`, `-cgi LIST [-C]`, `-lgi`, `-dci`, `-dgi [-gi IDS]`, each for
/// `-i N` or every MIG-enabled GPU. Formats are those of public captures (A100 and H200
/// `-lgip`, `-lgi`, `-cgi ... -C`); messages for a refusal and the exit statuses are *guesses*
/// (nvidia-smi's documented codes: 6 not found, 255 other).
pub(crate) fn smi_mig(k: &SimKernel, a: &[&str]) -> Result<RunOutput> {
    let m = k.model;
    let gpus = match targets(m, a) {
        Ok(g) => g,
        Err(e) => return output(6, String::new(), e),
    };
    let has = |f: &[&str]| a.iter().any(|x| f.contains(x));
    if has(&["-lgip", "--list-gpu-instance-profiles"]) {
        let st = k.with(|st| Ok(st.clone()))?;
        let on = mig_on(&st, &gpus);
        if on.is_empty() {
            return output(6, String::new(), NO_MIG.into());
        }
        return output(0, list_profiles(m, &st, &on), String::new());
    }
    if has(&["-lgi", "--list-gpu-instances"]) {
        let st = k.with(|st| Ok(st.clone()))?;
        let on = mig_on(&st, &gpus);
        if on.is_empty() {
            return output(6, String::new(), NO_MIG.into());
        }
        return Ok(list_instances(&st, &on));
    }
    if let Some(list) = value_of(a, &["-cgi", "--create-gpu-instance"]) {
        let compute = has(&["-C", "--default-compute-instance"]);
        return create(k, &gpus, list, compute);
    }
    if has(&["-dci", "--destroy-compute-instance"]) {
        return destroy(k, &gpus, value_of(a, &["-gi", "--gpu-instance-id"]), true);
    }
    if has(&["-dgi", "--destroy-gpu-instance"]) {
        return destroy(k, &gpus, value_of(a, &["-gi", "--gpu-instance-id"]), false);
    }
    output(
        2,
        String::new(),
        "nvidia-smi mig: the vgpuctl simulator plays -lgip, -cgi [-C], -lgi, -dci, -dgi\n".into(),
    )
}

fn rule(w: usize) -> String {
    format!("+{}+\n", "-".repeat(w - 2))
}

fn list_profiles(m: &Model, st: &State, gpus: &[&(usize, String)]) -> String {
    let mut out = rule(79);
    out.push_str(
        "| GPU instance profiles:                                                      |\n\
         | GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |\n\
         |                              Free/Total   GiB              CE    JPEG  OFA  |\n",
    );
    out.push_str(&format!("|{}|\n", "=".repeat(77)));
    for (i, pf) in gpus {
        let existing: Vec<&GpuInstance> = st.gpu_instances.iter().filter(|g| g.pf == *pf).collect();
        for p in catalog::gi_profiles(m.gpu) {
            let free = free_count(pf, p, &existing);
            out.push_str(&format!(
                "|{i:>4}  {:<16}{:>4}{:>8}        {:<11}No{:>7}{:>6}{:>6}   |\n",
                format!("MIG {}", p.name),
                p.id,
                format!("{free}/{}", p.max),
                p.memory_gib,
                p.sm,
                p.dec,
                p.enc,
            ));
            out.push_str(&format!("|{:>62}{:>6}{:>6}   |\n", p.ce, p.jpeg, p.ofa));
            out.push_str(&rule(79));
        }
    }
    out
}

fn list_instances(st: &State, gpus: &[&(usize, String)]) -> RunOutput {
    let mut rows = Vec::new();
    for (i, pf) in gpus {
        let mut gis: Vec<&GpuInstance> = st.gpu_instances.iter().filter(|g| g.pf == *pf).collect();
        // As the captures list them: by placement, last slice first.
        gis.sort_by_key(|g| std::cmp::Reverse(g.start));
        for g in gis {
            let name = profile_name(st, g);
            rows.push(format!(
                "|{i:>4}  {:<13}{:>6}{:>9}{:>13}     |\n",
                format!("MIG {name}"),
                g.profile,
                g.id,
                format!("{}:{}", g.start, g.size)
            ));
        }
    }
    if rows.is_empty() {
        return RunOutput::failed(6, "No GPU instances found: Not Found\n");
    }
    let mut out = rule(54);
    out.push_str(
        "| GPU instances:                                     |\n\
         | GPU   Name          Profile  Instance   Placement  |\n\
         |                       ID       ID       Start:Size |\n",
    );
    out.push_str(&format!("|{}|\n", "=".repeat(52)));
    for r in rows {
        out.push_str(&r);
        out.push_str(&rule(54));
    }
    RunOutput::ok(out)
}

fn profile_name(st: &State, g: &GpuInstance) -> String {
    let gpu = super::models::parse(&st.model)
        .map(|(m, _)| m.gpu)
        .unwrap_or("");
    catalog::gi_profiles(gpu)
        .iter()
        .find(|p| p.id == g.profile)
        .map(|p| p.name.to_string())
        .unwrap_or_else(|| g.profile.to_string())
}

/// The profile id of a GPU instance's default compute instance, as the captures show it
/// (`MIG 3g.20gb (ID  2)`, `MIG 4g.40gb (ID  3)`: the compute slice count less one; 7g is 4).
fn compute_profile(p: &GiProfile) -> u32 {
    let g: u32 = p
        .name
        .split('g')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    if g >= 7 {
        4
    } else {
        g - 1
    }
}

/// `-cgi LIST [-C]`: one instance per list item (an id, `1g.10gb` or `MIG 1g.10gb`), on each
/// target GPU in MIG mode, in order; an item that does not fit stops that GPU's list (those
/// made before it stay, as nvidia-smi creates them one by one).
fn create(k: &SimKernel, gpus: &[(usize, String)], list: &str, compute: bool) -> Result<RunOutput> {
    let m = k.model;
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    let (mut out, mut err, mut status) = (String::new(), String::new(), 0);
    k.with(|st| {
        let on: Vec<(usize, String)> = mig_on(st, gpus).into_iter().cloned().collect();
        if on.is_empty() {
            err.push_str(NO_MIG);
            status = 6;
            return Ok(());
        }
        for (i, pf) in &on {
            for item in &items {
                let Some(p) = catalog::find_gi_profile(m.gpu, item) else {
                    err.push_str(&format!(
                        "Unable to create a GPU instance on GPU {i:>2} using profile {item}: Not Found\n"
                    ));
                    status = 6;
                    break;
                };
                let existing: Vec<&GpuInstance> =
                    st.gpu_instances.iter().filter(|g| g.pf == *pf).collect();
                let Some((start, id)) = place(p, &existing) else {
                    err.push_str(&format!(
                        "Unable to create a GPU instance on GPU {i:>2} using profile {}: Insufficient Resources\n",
                        p.id
                    ));
                    status = 255;
                    break;
                };
                st.gpu_instances.push(GpuInstance {
                    pf: pf.clone(),
                    id,
                    profile: p.id,
                    start,
                    size: p.size,
                    compute,
                });
                out.push_str(&format!(
                    "Successfully created GPU instance ID {id:>2} on GPU {i:>2} using profile MIG {} (ID {:>2})\n",
                    p.name, p.id
                ));
                if compute {
                    out.push_str(&format!(
                        "Successfully created compute instance ID  0 on GPU {i:>2} GPU instance ID {id:>2} using profile MIG {} (ID {:>2})\n",
                        p.name,
                        compute_profile(p)
                    ));
                }
            }
            k.render_gpu(st, pf)?;
        }
        Ok(())
    })?;
    if status != 0 && !err.contains(NO_MIG) {
        err.push_str(&format!(
            "Failed to create GPU instances: {}\n",
            if status == 6 {
                "Not Found"
            } else {
                "Insufficient Resources"
            }
        ));
    }
    output(status, out, err)
}

/// `-dci` / `-dgi [-gi IDS]`: destroy the compute instances, or the GPU instances, of the target
/// GPUs (all, or the ids given). A GPU instance with a compute instance or a vGPU in it is
/// refused (`In use by another client`, *a guess* at the wording).
fn destroy(
    k: &SimKernel,
    gpus: &[(usize, String)],
    ids: Option<&str>,
    compute_only: bool,
) -> Result<RunOutput> {
    let wanted: Option<Vec<u32>> =
        ids.map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let (mut out, mut err, mut status) = (String::new(), String::new(), 0);
    k.with(|st| {
        let on: Vec<(usize, String)> = mig_on(st, gpus).into_iter().cloned().collect();
        if on.is_empty() {
            err.push_str(NO_MIG);
            status = 6;
            return Ok(());
        }
        for (i, pf) in &on {
            let ids: Vec<u32> = st
                .gpu_instances
                .iter()
                .filter(|g| g.pf == *pf)
                .filter(|g| wanted.as_ref().is_none_or(|w| w.contains(&g.id)))
                .map(|g| g.id)
                .collect();
            for id in ids {
                let held = st
                    .vgpus
                    .iter()
                    .any(|v| v.pf == *pf && v.gpu_instance == Some(id));
                let g = st
                    .gpu_instances
                    .iter_mut()
                    .find(|g| g.pf == *pf && g.id == id)
                    .expect("listed above");
                if compute_only {
                    if g.compute {
                        g.compute = false;
                        out.push_str(&format!(
                            "Successfully destroyed compute instance ID  0 from GPU {i:>2} GPU instance ID {id:>2}\n"
                        ));
                    }
                    continue;
                }
                if held || g.compute {
                    err.push_str(&format!(
                        "Unable to destroy GPU instance ID {id:>2} from GPU {i:>2}: In use by another client\n"
                    ));
                    status = 255;
                    continue;
                }
                st.gpu_instances.retain(|g| !(g.pf == *pf && g.id == id));
                out.push_str(&format!(
                    "Successfully destroyed GPU instance ID {id:>2} from GPU {i:>2}\n"
                ));
            }
            k.render_gpu(st, pf)?;
        }
        Ok(())
    })?;
    if out.is_empty() && status == 0 {
        let what = if compute_only { "compute" } else { "GPU" };
        err.push_str(&format!("No {what} instances found: Not Found\n"));
        status = 6;
    }
    output(status, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gi(profile: u32, start: u32, size: u32) -> GpuInstance {
        GpuInstance {
            pf: "0000:17:00.0".into(),
            id: instance_id(start, size),
            profile,
            start,
            size,
            compute: false,
        }
    }

    #[test]
    fn seven_1g_instances_come_out_in_the_recorded_order_and_no_eighth() {
        let p = catalog::find_gi_profile("A100D", "1g.10gb").unwrap();
        let mut made: Vec<GpuInstance> = Vec::new();
        let mut ids = Vec::new();
        while let Some((start, id)) = place(p, &made.iter().collect::<Vec<_>>()) {
            made.push(gi(p.id, start, p.size));
            ids.push(id);
        }
        // rapidsai/dask-cuda issue 583: 9, 7, 8, 11, ...
        assert_eq!(ids[..4], [9, 7, 8, 11]);
        assert_eq!(ids.len(), 7);
        let refs: Vec<&GpuInstance> = made.iter().collect();
        let whole = catalog::find_gi_profile("A100D", "7g.80gb").unwrap();
        assert_eq!(free_count("0000:17:00.0", whole, &refs), 0);
    }

    #[test]
    fn free_counts_follow_the_placements() {
        let a = |n: &str| catalog::find_gi_profile("A100D", n).unwrap();
        let pf = "0000:17:00.0";
        assert_eq!(free_count(pf, a("2g.20gb"), &[]), 3);
        assert_eq!(free_count(pf, a("1g.10gb+me"), &[]), 1);
        let (start, _) = place(a("3g.40gb"), &[]).unwrap();
        let three = gi(9, start, 4);
        // One 3g.40gb takes half the memory: 1g.10gb goes from 7/7 to 3/7, no 4g or 7g fits.
        assert_eq!(free_count(pf, a("1g.10gb"), &[&three]), 3);
        assert_eq!(free_count(pf, a("4g.40gb"), &[&three]), 0);
        assert_eq!(free_count(pf, a("3g.40gb"), &[&three]), 1);
        assert_eq!(free_count(pf, a("7g.80gb"), &[&three]), 0);
    }
}
