//! The first-time bring-up wizard. Its only product is a [`Profile`]; the same pipeline as
//! unattended setup then runs it. It writes nothing before the plan's confirmation, so Ctrl-C or
//! Esc at any prompt leaves the host untouched.

use dialoguer::{theme::ColorfulTheme, Confirm, Input, MultiSelect, Password, Select};

use crate::check;
use crate::exit::Failure;
use crate::facts::{Gpu, HostFacts};
use crate::profile::{DriverConfig, GpuRequest, HostPolicy, IommuPolicy, Profile, RebootPolicy};
use crate::vgpu::select;
use crate::vgpu_name;

fn cancelled(e: impl std::fmt::Display) -> Failure {
    Failure::usage(format!("wizard cancelled ({e}); nothing was changed"))
}

fn theme() -> ColorfulTheme {
    ColorfulTheme::default()
}

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

fn pick_gpus(f: &HostFacts) -> Result<Vec<&Gpu>, Failure> {
    let items: Vec<String> = f
        .gpus
        .iter()
        .map(|g| {
            let mem = g
                .memory_gib()
                .map(|m| format!("{m} GiB"))
                .unwrap_or_else(|| "?".into());
            if g.model.vgpu_supported {
                format!("{}  {}  {mem}  vGPU: yes", g.address, g.model.name)
            } else {
                format!(
                    "{}  {}  {mem}  cannot be used: {}",
                    g.address,
                    g.model.name,
                    g.model.reason.clone().unwrap_or_default()
                )
            }
        })
        .collect();
    let defaults: Vec<bool> = f.gpus.iter().map(|g| g.model.vgpu_supported).collect();
    loop {
        let chosen = MultiSelect::with_theme(&theme())
            .with_prompt("GPUs for vGPU (space toggles, enter accepts)")
            .items(&items)
            .defaults(&defaults)
            .interact()
            .map_err(cancelled)?;
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
        return Ok(chosen.into_iter().map(|i| &f.gpus[i]).collect());
    }
}

/// The type: from the live list when the driver shows one, else typed and checked against what
/// is known for the model (confirmed again from the live list after the reboot).
fn pick_type(gpu: &Gpu, default: Option<&str>) -> Result<(String, u32), Failure> {
    let mut live: Vec<crate::facts::VgpuType> = Vec::new();
    for p in &gpu.parents {
        for t in &p.types {
            if !live.iter().any(|x| x.name == t.name) {
                live.push(t.clone());
            }
        }
    }
    if !live.is_empty() {
        let rows: Vec<(String, select::ResolvedType)> = live
            .iter()
            .filter_map(|t| {
                select::resolve_type(gpu, &t.name)
                    .ok()
                    .map(|r| (t.name.clone(), r))
            })
            .collect();
        let items: Vec<String> = rows
            .iter()
            .map(|(n, r)| {
                let series = vgpu_name::parse(n).map(|p| p.series).unwrap_or('?');
                format!(
                    "{:<16} {:>6} MiB  up to {:>2} per GPU  {series}: {}",
                    vgpu_name::short(n),
                    r.framebuffer_mib.unwrap_or(0),
                    fits(gpu, r),
                    vgpu_name::series_meaning(series)
                )
            })
            .collect();
        let start = default
            .and_then(|d| rows.iter().position(|(n, _)| vgpu_name::same(n, d)))
            .unwrap_or(0);
        let i = Select::with_theme(&theme())
            .with_prompt("vGPU type (from the driver's live list)")
            .items(&items)
            .default(start)
            .interact()
            .map_err(cancelled)?;
        let (name, r) = &rows[i];
        return Ok((vgpu_name::short(name).to_string(), fits(gpu, r)));
    }
    let known = select::known_names(gpu);
    if !known.is_empty() {
        crate::outln!("Known {} types: {}", gpu.model.name, known.join(", "));
    }
    crate::outln!(
        "Series: A = virtual applications, B = virtual PC, C = compute, Q = RTX workstation."
    );
    let gpu_c = gpu.clone();
    let name: String = Input::with_theme(&theme())
        .with_prompt("vGPU type (checked again from the live list after the reboot)")
        .with_initial_text(default.unwrap_or(""))
        .validate_with(move |s: &String| select::resolve_type(&gpu_c, s).map(|_| ()))
        .interact_text()
        .map_err(cancelled)?;
    let r = select::resolve_type(gpu, &name).map_err(Failure::usage)?;
    Ok((vgpu_name::short(&r.name).to_string(), fits(gpu, &r)))
}

fn pick_count(max: u32, default: u32) -> Result<u32, Failure> {
    Input::<u32>::with_theme(&theme())
        .with_prompt(format!("How many per GPU (1-{max})"))
        .default(default.clamp(1, max))
        .validate_with(move |n: &u32| {
            if (1..=max).contains(n) {
                Ok(())
            } else {
                Err(format!(
                    "{n} does not fit: at most {max} of this type per GPU"
                ))
            }
        })
        .interact_text()
        .map_err(cancelled)
}

fn pick_driver(host: &crate::host::Host) -> Result<DriverConfig, Failure> {
    let how = Select::with_theme(&theme())
        .with_prompt("Where is the GRID host driver (NVIDIA-GRID-Linux-KVM-....zip)?")
        .items([
            "a file on this host",
            "a download link from NVIDIA's licensing portal",
        ])
        .default(0)
        .interact()
        .map_err(cancelled)?;
    let mut d = DriverConfig::default();
    if how == 0 {
        let guess = host
            .list("root")
            .into_iter()
            .find(|n| n.starts_with("NVIDIA-GRID-Linux-KVM") && n.ends_with(".zip"))
            .map(|n| format!("/root/{n}"))
            .unwrap_or_default();
        let h = host.clone();
        let path: String = Input::with_theme(&theme())
            .with_prompt("Path (inside the host root)")
            .with_initial_text(guess)
            .validate_with(move |p: &String| {
                if !p.starts_with('/') {
                    Err("give an absolute path".to_string())
                } else if h.checked_path(p).map(|x| x.is_file()).unwrap_or(false) {
                    Ok(())
                } else {
                    Err(format!("{p} does not exist"))
                }
            })
            .interact_text()
            .map_err(cancelled)?;
        d.path = Some(path);
    } else {
        let url = Password::with_theme(&theme())
            .with_prompt("Download link (input hidden; it is a credential)")
            .validate_with(|u: &String| link_ok(u))
            .interact()
            .map_err(cancelled)?;
        d.url = Some(url);
    }
    let sha: String = Input::with_theme(&theme())
        .with_prompt("SHA-256 of the file (optional, enter to skip)")
        .allow_empty(true)
        .validate_with(|s: &String| {
            if s.is_empty() || (s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())) {
                Ok(())
            } else {
                Err("64 hex digits, or nothing".to_string())
            }
        })
        .interact_text()
        .map_err(cancelled)?;
    if !sha.is_empty() {
        d.sha256 = Some(sha.to_ascii_lowercase());
    }
    Ok(d)
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
    let i = Select::with_theme(&theme())
        .with_prompt("When the host needs its reboot")
        .items([
            "ask me (prompt)",
            "reboot by itself and continue (auto)",
            "stop; I reboot later (never)",
        ])
        .default(0)
        .interact()
        .map_err(cancelled)?;
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
) -> Result<Profile, Failure> {
    if let Some(prev) = resume {
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
            let go = Confirm::with_theme(&theme())
                .with_prompt(format!(
                    "Enable SR-IOV on {} GPU(s) now, to pick the type from the driver's live list?",
                    dark.len()
                ))
                .default(true)
                .interact()
                .map_err(cancelled)?;
            if go {
                let _lock = crate::setup::lock::acquire(host, "wizard: enable SR-IOV")?;
                for pf in &dark {
                    crate::vgpu::sriov::enable(host, pf, std::time::Duration::from_secs(120))?;
                }
                f = crate::facts::observe(host);
            }
        }
        let mut p = prev.clone();
        for req in &mut p.gpus {
            let gpus = select::select(&f, &req.select).map_err(Failure::usage)?;
            let Some(g) = gpus.first() else { continue };
            let (ty, max) = pick_type(g, Some(&req.vgpu_type))?;
            req.vgpu_type = ty;
            if req.count > max {
                req.count = pick_count(max, max)?;
            }
        }
        return Ok(p);
    }
    summary(f)?;
    let gpus = pick_gpus(f)?;
    let (ty, max) = pick_type(gpus[0], None)?;
    let count = pick_count(max, max.min(2))?;
    let driver = if f.driver.installed() {
        None
    } else {
        Some(pick_driver(host)?)
    };
    let reboot = pick_reboot()?;
    let all_supported: Vec<&Gpu> = f.gpus.iter().filter(|g| g.model.vgpu_supported).collect();
    let select = if gpus.len() == all_supported.len() {
        vec!["all".to_string()]
    } else {
        gpus.iter().map(|g| g.address.clone()).collect()
    };
    Ok(Profile {
        host: HostPolicy {
            reboot,
            iommu: IommuPolicy::Auto,
        },
        driver,
        gpus: select
            .into_iter()
            .map(|s| GpuRequest {
                select: s,
                vgpu_type: ty.clone(),
                count,
                uuids: Vec::new(),
            })
            .collect(),
        ..Profile::default()
    })
}

/// Write the answers as a profile. The link is written only if the operator agrees (then 0600).
pub fn save(path: &std::path::Path, profile: &Profile, interactive: bool) -> Result<(), Failure> {
    let mut p = profile.clone();
    p.vgpus.clear();
    let mut mode = 0o644;
    if let Some(d) = p.driver.as_mut() {
        if d.url.is_some() {
            let keep = interactive
                && Confirm::with_theme(&theme())
                    .with_prompt("Write the download link into the profile? (it is a credential; the file will be 0600)")
                    .default(false)
                    .interact()
                    .unwrap_or(false);
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
