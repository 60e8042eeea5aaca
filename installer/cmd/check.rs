use crate::exit::{Exit, Failure};
use crate::host::Host;

pub fn run(host: &Host, json: bool) -> Result<Exit, Failure> {
    let facts = crate::facts::observe(host);
    let mut report = crate::check::check(&facts);
    report
        .findings
        .push(crate::check::scheduler_finding(&scheduler_facts(host)));
    let pinned = crate::pins::load(host)
        .ok()
        .flatten()
        .map(|p| p.mixed_size)
        .unwrap_or_default();
    report
        .findings
        .extend(crate::check::mixed_size_findings(&facts, &pinned));
    if facts.os.proxmox {
        report.findings.extend(proxmox_findings(host, &facts));
    }
    report.findings.extend(crate::check::mig_findings(
        &facts,
        &wanted_types(host, &facts),
    ));
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", crate::check::render(&report, &facts));
    }
    Ok(if report.ready { Exit::Ok } else { Exit::Failed })
}

/// The scheduling policy's three sources: the loaded driver, modprobe.d, the active profile.
fn scheduler_facts(host: &Host) -> crate::check::SchedulerFacts {
    use crate::edit::registry_dwords as rd;
    let wanted = crate::active::load(host).ok().flatten().and_then(|p| {
        p.host
            .scheduler
            .map(|s| rd::rmpvmrl(s, p.host.timeslice_ms))
    });
    crate::check::SchedulerFacts {
        loaded: host
            .read(rd::PROC_PARAMS)
            .ok()
            .as_deref()
            .and_then(rd::loaded),
        configured: rd::configured(&crate::setup::observe::modprobe_d(host)),
        wanted,
    }
}

/// Proxmox VE's side of the GPUs against vgpuctl's pins.
fn proxmox_findings(host: &Host, facts: &crate::facts::HostFacts) -> Vec<crate::check::Finding> {
    let node = crate::facts::system::hostname(host)
        .and_then(|h| crate::proxmox::node_name(&h))
        .unwrap_or_default();
    let px = crate::facts::proxmox::observe(host, &node);
    let pins: Vec<(String, String, String, String)> = crate::pins::load(host)
        .ok()
        .flatten()
        .map(|p| {
            p.vgpus
                .into_iter()
                .map(|v| {
                    let gpu = v.gpu.unwrap_or_else(|| v.parent.clone());
                    (v.parent, gpu, v.uuid, v.type_name)
                })
                .collect()
        })
        .unwrap_or_default();
    crate::check::proxmox_findings(&px, &pins, facts.restore_unit_enabled)
}

/// The vGPU types the active profile asks for, per selected GPU, with whether each is MIG-backed
/// (by the GPU's catalog; a type it does not know is left out: setup names that one).
fn wanted_types(host: &Host, facts: &crate::facts::HostFacts) -> Vec<crate::check::WantedType> {
    let Some(profile) = crate::active::load(host).ok().flatten() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for req in &profile.gpus {
        for gpu in crate::vgpu::select::select(facts, &req.select).unwrap_or_default() {
            if let Some(t) = crate::vgpu::select::known_type(gpu, &req.vgpu_type) {
                out.push((
                    gpu.address.clone(),
                    crate::vgpu_name::short(&t.name).to_string(),
                    t.mig_backed(),
                ));
            }
        }
    }
    out
}
