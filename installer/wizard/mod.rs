//! The first-time bring-up wizard. Its only product is a [`Profile`]; the same pipeline as
//! unattended setup then runs it. It writes nothing before the plan's confirmation, so Esc or
//! Ctrl-C at any prompt cancels with the host untouched ([`prompt`], [`crate::interrupt`]).

pub mod answer;
pub mod next;
pub mod prompt;
pub mod rows;

use std::collections::BTreeMap;

use crate::check;
use crate::exit::Failure;
use crate::facts::{Gpu, HostFacts};
use crate::gpu_group;
use crate::profile::{DriverConfig, GpuRequest, HostPolicy, IommuPolicy, Profile, RebootPolicy};
use crate::vgpu::select;
use crate::vgpu_name;

/// What fits per GPU for a type: its max instances, bounded by the VFs.
fn fits(gpu: &Gpu, ty: &select::ResolvedType) -> u32 {
    // A pre-Ampere PF's advertised VFs are never made: they bound nothing.
    let vfs = gpu.sriov_totalvfs.filter(|t| *t > 0 && gpu.sriov_capable());
    match (ty.max_instance, vfs) {
        (Some(m), Some(v)) => m.min(v),
        (Some(m), None) => m,
        (None, Some(v)) => v,
        (None, None) => 1,
    }
}

fn summary(f: &HostFacts) -> Result<(), Failure> {
    let report = check::check(f);
    crate::outln!(
        "vgpuctl setup: the guided bring-up. Nothing changes before you confirm the plan.\n"
    );
    let (mut ok, mut todo) = (0, Vec::new());
    for x in &report.findings {
        match x.severity {
            check::Severity::Ok => ok += 1,
            check::Severity::Warn => todo.push(format!("  - {} -> {}", x.message, x.fix)),
            check::Severity::Blocker => {}
        }
    }
    crate::outln!("Ready: {ok} check(s) pass.");
    if !todo.is_empty() {
        crate::outln!(
            "Setup will take care of, or you should look at:\n{}",
            todo.join("\n")
        );
    }
    if !report.ready {
        for x in report
            .findings
            .iter()
            .filter(|x| x.severity == check::Severity::Blocker)
        {
            crate::outln!("BLOCKED: {}\n  fix: {}", x.message, x.fix);
        }
        return Err(Failure::failed(
            "this host cannot be set up until the blockers above are fixed; nothing was changed",
        ));
    }
    crate::outln!();
    Ok(())
}

/// What a host already set up holds, per GPU: its pinned type and how many (the wizard's
/// defaults there, so Enter through every question keeps the host as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub by_gpu: BTreeMap<String, (String, u32)>,
}

impl Current {
    /// From the pins (`/etc/vgpuctl/vgpus.toml`). A GPU pinned with several types (mixed-size
    /// mode) is taken by its most numerous one.
    pub fn from_pins(pins: &crate::pins::Pins) -> Current {
        let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
        for v in &pins.vgpus {
            let gpu = v.gpu.clone().unwrap_or_else(|| v.parent.clone());
            *counts
                .entry((gpu, vgpu_name::short(&v.type_name).to_string()))
                .or_default() += 1;
        }
        let mut by_gpu: BTreeMap<String, (String, u32)> = BTreeMap::new();
        for ((gpu, ty), n) in counts {
            let e = by_gpu.entry(gpu).or_insert((ty.clone(), 0));
            if n > e.1 {
                *e = (ty, n);
            }
        }
        Current { by_gpu }
    }

    pub fn load(host: &crate::host::Host) -> Current {
        crate::pins::load(host)
            .ok()
            .flatten()
            .map(|p| Current::from_pins(&p))
            .unwrap_or_default()
    }
}

fn pick_gpus<'a>(f: &'a HostFacts, current: &Current) -> Result<Vec<&'a Gpu>, Failure> {
    let items: Vec<String> = f
        .gpus
        .iter()
        .map(|g| {
            let mem = g
                .memory_gib()
                .map(|m| format!("{m} GiB"))
                .unwrap_or_else(|| "?".into());
            if g.model.vgpu_supported {
                let now = current
                    .by_gpu
                    .get(&g.address)
                    .map(|(t, n)| format!("  now: {n} × {t}"))
                    .unwrap_or_default();
                format!("{}  {}  {mem}  vGPU: yes{now}", g.address, g.model.name)
            } else {
                format!(
                    "{}  {}  {mem}  cannot be used (see above)",
                    g.address, g.model.name
                )
            }
        })
        .collect();
    // The reasons are sentences: above the picker, whole, where a row would have to cut them.
    for g in f.gpus.iter().filter(|g| !g.model.vgpu_supported) {
        crate::outln!(
            "{} {} cannot be used: {}",
            g.address,
            g.model.name,
            g.model.reason.clone().unwrap_or_default()
        );
    }
    // A host already set up starts from the GPUs it uses; a fresh one from every usable GPU.
    let defaults: Vec<bool> = f
        .gpus
        .iter()
        .map(|g| {
            g.model.vgpu_supported
                && (current.by_gpu.is_empty() || current.by_gpu.contains_key(&g.address))
        })
        .collect();
    let columns = prompt::columns();
    let items: Vec<String> = items
        .iter()
        .map(|i| rows::fit(i, columns.saturating_sub(rows::MARKER_COLUMNS + 4)))
        .collect();
    loop {
        let chosen = prompt::multi_select(
            "GPUs for vGPU (space toggles, enter accepts, Esc cancels)",
            &items,
            &defaults,
        )?;
        let bad: Vec<&Gpu> = chosen
            .iter()
            .map(|i| &f.gpus[*i])
            .filter(|g| !g.model.vgpu_supported)
            .collect();
        if let Some(g) = bad.first() {
            crate::outln!(
                "{} cannot be picked: {}",
                g.address,
                g.model.reason.clone().unwrap_or_default()
            );
            continue;
        }
        if chosen.is_empty() {
            crate::outln!("Pick at least one GPU.");
            continue;
        }
        let chosen: Vec<&Gpu> = chosen.into_iter().map(|i| &f.gpus[i]).collect();
        let models = gpu_group::group(chosen.iter().map(|g| (g.model.name.clone(), *g)));
        let said: Vec<String> = models.iter().map(|(_, gs)| label(f, gs)).collect();
        crate::outln!("GPUs for vGPU: {}", said.join("; "));
        return Ok(chosen);
    }
}

/// The GPUs one question is about, as the operator reads them: `0000:67:00.0 A40`, or
/// `6 × A40 0000:67:00.0, ...`.
fn label(f: &HostFacts, gpus: &[&Gpu]) -> String {
    let model = &gpus[0].model.name;
    let addrs: Vec<String> = gpus.iter().map(|g| g.address.clone()).collect();
    let of_model = f.gpus.iter().filter(|g| g.model.name == *model).count();
    gpu_group::label(model, &addrs, of_model == addrs.len())
}

/// One question per distinct choice: GPUs of one model that hold the same (or no) type now.
fn groups<'a>(gpus: &[&'a Gpu], current: &Current) -> Vec<Vec<&'a Gpu>> {
    gpu_group::group(gpus.iter().map(|g| {
        (
            (
                g.model.name.clone(),
                current.by_gpu.get(&g.address).cloned(),
            ),
            *g,
        )
    }))
    .into_iter()
    .map(|(_, v)| v)
    .collect()
}

/// The type for `gpus` (one model): from the live list when the driver shows one, else typed and
/// checked against what is known for the model (confirmed again from the live list after the
/// reboot).
fn pick_type(who: &str, gpu: &Gpu, default: Option<&str>) -> Result<(String, u32), Failure> {
    let mut live: Vec<crate::facts::VgpuType> = Vec::new();
    // A VF holding a vGPU lists its type as current, not as creatable: it is one of the choices.
    for p in &gpu.parents {
        for t in p.types.iter().chain(p.current_type.iter()) {
            if !live.iter().any(|x| x.name == t.name) {
                live.push(t.clone());
            }
        }
    }
    if !live.is_empty() {
        let found: Vec<(String, select::ResolvedType)> = live
            .iter()
            .filter_map(|t| {
                select::resolve_type(gpu, &t.name)
                    .ok()
                    .map(|r| (t.name.clone(), r))
            })
            .collect();
        let shown: Vec<rows::TypeRow> = found
            .iter()
            .map(|(n, r)| {
                let series = vgpu_name::parse(n).map(|p| p.series).unwrap_or('?');
                rows::TypeRow {
                    name: vgpu_name::short(n),
                    framebuffer_mib: r.framebuffer_mib.unwrap_or(0),
                    fits: fits(gpu, r),
                    series,
                    meaning: vgpu_name::series_meaning(series),
                }
            })
            .collect();
        let items = rows::render(&shown, prompt::columns());
        let start = default
            .and_then(|d| found.iter().position(|(n, _)| vgpu_name::same(n, d)))
            .unwrap_or(0);
        // A picker's prompt that wraps is left half-cleared on a narrow console: when the GPUs'
        // names make it too long, they go on a line of their own above it.
        let full = format!("vGPU type for {who} (from the driver's live list)");
        let question = if full.chars().count() + rows::MARKER_COLUMNS < prompt::columns() {
            full
        } else {
            crate::outln!("vGPU type for {who}:");
            "vGPU type (from the driver's live list)".to_string()
        };
        let i = prompt::select(&question, &items, start)?;
        let (name, r) = &found[i];
        return Ok((vgpu_name::short(name).to_string(), fits(gpu, r)));
    }
    let known = select::known_names(gpu);
    if !known.is_empty() {
        crate::outln!("Known {} types: {}", gpu.model.name, known.join(", "));
    }
    crate::outln!(
        "Series: A = virtual applications, B = virtual PC, C = compute, Q = RTX workstation."
    );
    let r = prompt::line(
        &format!("vGPU type for {who} (checked again from the live list after the reboot)"),
        default,
        false,
        |s| {
            select::resolve_type(gpu, s.trim()).map_err(|e| {
                match answer::nearest(s, &known).as_slice() {
                    [] => e,
                    near => format!(
                        "no type {:?} for {}: did you mean {}?",
                        s.trim(),
                        gpu.model.name,
                        or_list(near)
                    ),
                }
            })
        },
    )?;
    Ok((vgpu_name::short(&r.name).to_string(), fits(gpu, &r)))
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(v: &[&str]) -> String {
    match v {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn pick_count(who: &str, max: u32, default: u32) -> Result<u32, Failure> {
    let d = default.clamp(1, max).to_string();
    prompt::line(
        &format!("How many per GPU (1-{max}) on {who}"),
        Some(&d),
        false,
        |s| answer::count(s, max),
    )
}

/// The reason of a driver error without its `profile [driver] x:` prefix: at the prompt there is
/// no profile yet, the answer is the field.
fn at_prompt(e: crate::driver::DriverError) -> String {
    let msg = e.to_string();
    match msg.strip_prefix("profile [driver] ") {
        Some(rest) => rest
            .split_once(": ")
            .map(|(_, r)| r.to_string())
            .unwrap_or(rest.to_string()),
        None => msg,
    }
}

fn pick_driver(host: &crate::host::Host, allow_unverified: bool) -> Result<DriverConfig, Failure> {
    let how = prompt::select(
        "Where is the GRID host driver (NVIDIA-GRID-Linux-KVM-....zip)?",
        &[
            "a file on this host",
            "a download link from NVIDIA's licensing portal",
        ],
        0,
    )?;
    // Each answer gets the check a profile's [driver] section gets, at the prompt.
    let checked = |d: &DriverConfig| {
        crate::driver::validate(d, host, std::time::SystemTime::now()).map_err(at_prompt)
    };
    if how == 0 {
        let guess = host
            .list("root")
            .into_iter()
            .find(|n| n.starts_with("NVIDIA-GRID-Linux-KVM") && n.ends_with(".zip"))
            .map(|n| format!("/root/{n}"));
        let mut d = prompt::line(
            "Path of the driver file (inside the host root)",
            guess.as_deref(),
            false,
            |p| {
                let p = p.trim();
                if !p.starts_with('/') {
                    return Err("give an absolute path".to_string());
                }
                let d = DriverConfig {
                    path: Some(p.to_string()),
                    ..DriverConfig::default()
                };
                checked(&d).map(|_| d)
            },
        )?;
        let path = d.path.clone().unwrap_or_default();
        if prompt::confirm(
            "Compute the file's SHA-256 and pin it in the profile (a replay then checks the file)?",
            true,
        )? {
            let rel = path.trim_start_matches('/');
            let sha = crate::driver::hash_file(host, rel)
                .map_err(|e| Failure::usage(format!("{path}: {e:#}")))?;
            crate::outln!("SHA-256 of {path}: {sha}");
            d.sha256 = Some(sha);
        }
        return Ok(d);
    }
    let url = prompt::line(
        "Download link (input hidden; it is a credential)",
        None,
        true,
        |u| {
            let u = u.trim();
            link_ok(u)?;
            let d = DriverConfig {
                url: Some(u.to_string()),
                ..DriverConfig::default()
            };
            checked(&d).map(|_| u.to_string())
        },
    )?;
    let need = if allow_unverified {
        "enter to skip"
    } else {
        "required to verify the download, or run with --allow-unverified"
    };
    let sha = prompt::line(
        &format!("SHA-256 of the file, as the portal lists it ({need})"),
        None,
        false,
        |s| {
            if s.trim().is_empty() {
                return if allow_unverified {
                    Ok(None)
                } else {
                    Err("a download link needs the file's SHA-256 (or --allow-unverified)".into())
                };
            }
            let d = DriverConfig {
                url: Some(url.clone()),
                sha256: Some(s.to_string()),
                ..DriverConfig::default()
            };
            checked(&d).map(|v| v.sha256)
        },
    )?;
    Ok(DriverConfig {
        url: Some(url),
        sha256: sha,
        ..DriverConfig::default()
    })
}

/// A portal link must be https and unexpired; read its expiry at once.
pub fn link_ok(u: &str) -> Result<(), String> {
    if !u.starts_with("https://") {
        return Err("the link must start with https://".into());
    }
    if let Some(p) = crate::driver::link::token_problem(u) {
        return Err(p);
    }
    match crate::driver::link::portal_token(u) {
        Some(t) if t.is_expired(std::time::SystemTime::now()) => Err(format!(
            "this link expired at {}: get a fresh one from the licensing portal (ui.licensing.nvidia.com)",
            crate::driver::link::utc_string(t.expires_at())
        )),
        _ => Ok(()),
    }
}

fn pick_reboot() -> Result<RebootPolicy, Failure> {
    let i = prompt::select(
        "When the host needs its reboot",
        &[
            "ask me (prompt)",
            "reboot by itself and continue (auto)",
            "stop; I reboot later (never)",
        ],
        0,
    )?;
    Ok([
        RebootPolicy::Prompt,
        RebootPolicy::Auto,
        RebootPolicy::Never,
    ][i])
}

/// Ask for everything and return the profile. `resume`: a profile from before the reboot, whose
/// only open question is the type, now that the driver lists them.
pub fn ask(
    host: &crate::host::Host,
    f: &HostFacts,
    resume: Option<&Profile>,
    allow_unverified: bool,
) -> Result<Profile, Failure> {
    if let Some(prev) = resume {
        return ask_after_reboot(host, f, prev);
    }
    summary(f)?;
    let current = Current::load(host);
    let gpus = pick_gpus(f, &current)?;
    let all_supported = f.gpus.iter().filter(|g| g.model.vgpu_supported).count();
    let mut requests = Vec::new();
    let groups = groups(&gpus, &current);
    for group in &groups {
        let who = label(f, group);
        let now = current.by_gpu.get(&group[0].address);
        let (ty, max) = pick_type(&who, group[0], now.map(|(t, _)| t.as_str()))?;
        let count = pick_count(&who, max, now.map(|(_, n)| *n).unwrap_or(max.min(2)))?;
        let select: Vec<String> = if groups.len() == 1 && group.len() == all_supported {
            vec!["all".to_string()]
        } else {
            group.iter().map(|g| g.address.clone()).collect()
        };
        requests.extend(select.into_iter().map(|s| GpuRequest {
            select: s,
            vgpu_type: ty.clone(),
            count,
            uuids: Vec::new(),
        }));
    }
    let driver = if f.driver.installed() {
        None
    } else {
        Some(pick_driver(host, allow_unverified)?)
    };
    let reboot = pick_reboot()?;
    Ok(Profile {
        host: HostPolicy {
            reboot,
            iommu: IommuPolicy::Auto,
            ..HostPolicy::default()
        },
        driver,
        gpus: requests,
        ..Profile::default()
    })
}

/// One question after the reboot: (model, type, count), the requests it answers, their GPUs.
type Question<'a> = ((String, String, u32), Vec<usize>, Vec<&'a Gpu>);

/// After the reboot: the type again, from the live list, once per distinct choice (requests of
/// one model asking one type and count), naming the GPUs.
fn ask_after_reboot(
    host: &crate::host::Host,
    f: &HostFacts,
    prev: &Profile,
) -> Result<Profile, Failure> {
    crate::outln!("Continuing the setup you started before the reboot.");
    let mut f = f.clone();
    // An SR-IOV GPU lists its types only on its VFs. Enabling them is a change, so ask first
    // (setup enables them next anyway, and at every boot the restore unit does).
    let dark: Vec<String> = prev
        .gpus
        .iter()
        .filter_map(|r| select::select(&f, &r.select).ok())
        .flatten()
        .filter(|g| g.sriov_capable() && g.parents.iter().all(|p| p.types.is_empty()))
        .map(|g| g.address.clone())
        .collect();
    if !dark.is_empty() {
        let go = prompt::confirm(
            &format!(
                "Enable SR-IOV on {} GPU(s) now, to pick the type from the driver's live list?",
                dark.len()
            ),
            true,
        )?;
        if go {
            let _lock = crate::setup::lock::acquire(host, "wizard: enable SR-IOV")?;
            crate::interrupt::sriov_enabled();
            // Together, as setup and restore do: each GPU's wait for its listings overlaps.
            let bound = std::time::Duration::from_secs(120);
            let results: Vec<anyhow::Result<_>> = std::thread::scope(|s| {
                let running: Vec<_> = dark
                    .iter()
                    .map(|pf| s.spawn(move || crate::vgpu::sriov::enable(host, pf, bound)))
                    .collect();
                running
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
                    })
                    .collect()
            });
            for r in results {
                r?;
            }
            f = crate::facts::observe(host);
        }
    }
    let mut p = prev.clone();
    let mut asked: Vec<Question> = Vec::new();
    for (i, req) in p.gpus.iter().enumerate() {
        let gpus = select::select(&f, &req.select).map_err(Failure::usage)?;
        let Some(g) = gpus.first() else { continue };
        let key = (g.model.name.clone(), req.vgpu_type.clone(), req.count);
        match asked.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, reqs, all)) => {
                reqs.push(i);
                all.extend(gpus);
            }
            None => asked.push((key, vec![i], gpus)),
        }
    }
    for ((_, ty, count), reqs, gpus) in &asked {
        let who = label(&f, gpus);
        let (ty, max) = pick_type(&who, gpus[0], Some(ty))?;
        let count = if *count > max {
            pick_count(&who, max, max)?
        } else {
            *count
        };
        for i in reqs {
            p.gpus[*i].vgpu_type = ty.clone();
            p.gpus[*i].count = count;
        }
    }
    Ok(p)
}

/// Write the answers as a profile. The link is written only if the operator agrees (then 0600).
pub fn save(path: &std::path::Path, profile: &Profile, interactive: bool) -> Result<(), Failure> {
    let mut p = profile.clone();
    p.vgpus.clear();
    let mut mode = 0o644;
    if let Some(d) = p.driver.as_mut() {
        if d.url.is_some() {
            let keep = interactive
                && prompt::confirm(
                    "Write the download link into the profile? (it is a credential; the file will be 0600)",
                    false,
                )?;
            if keep {
                mode = 0o600;
            } else {
                d.url = Some("https://REPLACE-WITH-A-FRESH-PORTAL-LINK".into());
            }
        }
    }
    let text = format!(
        "# Written by the vgpuctl wizard. Replay on another host:\n#   vgpuctl setup --profile {} --yes\n{}",
        path.display(),
        toml::to_string_pretty(&p).map_err(Failure::from)?
    );
    crate::host::files::write_atomic(path, text.as_bytes(), mode)?;
    crate::outln!("Saved the profile to {}", path.display());
    Ok(())
}
