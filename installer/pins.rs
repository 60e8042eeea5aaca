//! The pins, `/etc/vgpuctl/vgpus.toml`: every vGPU setup or import made, with its UUID, GPU,
//! parent, type and interface, plus the PFs whose SR-IOV is enabled at every boot. `restore`
//! recreates exactly these. A state file written by vgpuctl, apart from the copy of the
//! operator's profile (`/etc/vgpuctl/profile.toml`, [`crate::active`]).
//!
//! Releases before this file kept the pins in the profile copy (`sriov = [...]` and
//! `[[vgpus]]`). [`load`] still reads them there when `vgpus.toml` does not exist (read-only
//! commands never write), and [`migrate`], called by the commands that change the host, moves
//! them: `vgpus.toml` first, then the profile copy without them. While `vgpus.toml` exists it
//! alone holds the pins, so a run killed between the two writes neither loses nor doubles one.

use anyhow::{Context, Result};

use crate::host::{Host, WriteOpts};
use crate::profile::{Profile, SavedVgpu};

pub const PATH: &str = "etc/vgpuctl/vgpus.toml";

/// What `restore` brings back at every boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// PFs whose VFs are enabled even when no pinned vGPU sits on them (imported
    /// `sriov-manage -e` lines, a profile's `sriov`).
    pub sriov: Vec<String>,
    /// GPUs (PFs) whose pins hold vGPUs of different types: restore turns mixed-size mode on for
    /// them after SR-IOV and before their first vGPU. Absent from files written before it.
    pub mixed_size: Vec<String>,
    pub vgpus: Vec<SavedVgpu>,
}

/// The file's schema: the same keys as a profile's pins, so the same validation applies (its
/// entries become sysfs paths at boot).
#[derive(serde::Serialize)]
struct File<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    sriov: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    mixed_size: &'a [String],
    #[serde(skip_serializing_if = "<[SavedVgpu]>::is_empty")]
    vgpus: &'a [SavedVgpu],
}

/// The pins: from `vgpus.toml`, or, on a host set up by an older release that has no such file,
/// from the profile copy. `None`: neither file exists (nothing was ever set up or imported).
pub fn load(host: &Host) -> Result<Option<Pins>> {
    if let Some(p) = load_file(host)? {
        return Ok(Some(p));
    }
    Ok(crate::active::load(host)?.map(|a| legacy(&a)))
}

/// Whether the pins still live in the profile copy (an older release's layout).
pub fn legacy_layout(host: &Host) -> bool {
    !host.exists(PATH) && host.exists(crate::active::PATH)
}

fn legacy(active: &Profile) -> Pins {
    Pins {
        sriov: active.sriov.clone(),
        mixed_size: active.mixed_size.clone(),
        vgpus: active.vgpus.clone(),
    }
}

fn load_file(host: &Host) -> Result<Option<Pins>> {
    let text = match host.read(PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format!("cannot read /{PATH}")),
    };
    parse(&text).map(Some)
}

/// Parse and validate the file's text (same rules and field names as a profile's pins).
pub fn parse(text: &str) -> Result<Pins> {
    let file = format!("/{PATH}");
    let bad = |e: String| {
        anyhow::anyhow!("{e}: not a valid vgpuctl pins file; fix it or restore it from a backup")
    };
    let p = Profile::parse(text, &file).map_err(|e| bad(e.to_string()))?;
    let only_pins = Profile {
        sriov: p.sriov.clone(),
        mixed_size: p.mixed_size.clone(),
        vgpus: p.vgpus.clone(),
        ..Profile::default()
    };
    if p != only_pins {
        return Err(bad(format!(
            "{file}: holds profile keys ([host], [driver], [[gpus]], [cloudpods], [nova]); only `sriov` \
             and [[vgpus]] belong here"
        )));
    }
    Ok(legacy(&p))
}

pub fn render(pins: &Pins) -> Result<String> {
    let body = toml::to_string_pretty(&File {
        sriov: &pins.sriov,
        mixed_size: &pins.mixed_size,
        vgpus: &pins.vgpus,
    })?;
    Ok(format!(
        "# vgpuctl pins: the vGPUs (UUID, GPU, parent, type, interface, and for a MIG-backed\n\
         # vGPU its GPU instance profile) and the SR-IOV PFs (and mixed-size GPUs) that\n\
         # vgpuctl-restore.service recreates at every boot. State written by `vgpuctl setup` and\n\
         # `vgpuctl import`; to change it, change the profile and run setup.\n{body}"
    ))
}

/// Save atomically. Returns whether the file changed.
pub fn save(host: &Host, pins: &Pins) -> Result<bool> {
    host.write_file(PATH, render(pins)?.as_bytes(), WriteOpts::state())
}

/// Add or replace pins by UUID, keeping the order of first appearance.
pub fn pin(pins: &mut Pins, vgpus: impl IntoIterator<Item = SavedVgpu>) {
    for v in vgpus {
        match pins.vgpus.iter_mut().find(|s| s.uuid == v.uuid) {
            Some(s) => *s = v,
            None => pins.vgpus.push(v),
        }
    }
}

/// Drop the pins `gone` says, keeping the rest in order.
pub fn unpin(pins: &mut Pins, gone: impl Fn(&SavedVgpu) -> bool) {
    pins.vgpus.retain(|v| !gone(v));
}

/// Add SR-IOV PFs not listed yet.
pub fn enable_sriov<'a>(pins: &mut Pins, pfs: impl IntoIterator<Item = &'a String>) {
    for s in pfs {
        if !pins.sriov.contains(s) {
            pins.sriov.push(s.clone());
        }
    }
}

/// Record, for each of `gpus`, whether its pins hold vGPUs of more than one type (then it runs in
/// mixed-size mode, recorded-behaviour.md §4), unless they are all MIG-backed (GPU instances of
/// several profiles; a MIG-enabled GPU has no mixed-size mode); other GPUs' records are kept.
pub fn mark_mixed_size<'a>(pins: &mut Pins, gpus: impl IntoIterator<Item = &'a str>) {
    for gpu in gpus {
        let mut types: Vec<&str> = Vec::new();
        for v in pins.vgpus.iter().filter(|v| v.gpu.as_deref() == Some(gpu)) {
            if !types
                .iter()
                .any(|t| crate::vgpu_name::same(t, &v.type_name))
            {
                types.push(&v.type_name);
            }
        }
        let all_mig = pins
            .vgpus
            .iter()
            .filter(|v| v.gpu.as_deref() == Some(gpu))
            .all(|v| v.gi_profile.is_some());
        let mixed = types.len() > 1 && !all_mig;
        let listed = pins.mixed_size.iter().any(|g| g == gpu);
        if mixed && !listed {
            pins.mixed_size.push(gpu.to_string());
        } else if !mixed && listed {
            pins.mixed_size.retain(|g| g != gpu);
        }
    }
    pins.mixed_size.sort();
}

/// Move pins an older release left in the profile copy into `vgpus.toml`; for commands that
/// change the host, under the lock. Returns whether anything moved.
///
/// Order: `vgpus.toml` is written (atomically) first, then the profile copy without the pins.
/// Killed in between, both files hold them; `vgpus.toml` then wins ([`load`] never reads the
/// copy's pins while it exists) and the next run only strips the copy, never writing the copy's
/// older pins over `vgpus.toml`.
pub fn migrate(host: &Host) -> Result<bool> {
    let Some(active) = crate::active::load(host)? else {
        return Ok(false);
    };
    if active.vgpus.is_empty() && active.sriov.is_empty() {
        return Ok(false);
    }
    if load_file(host)?.is_none() {
        save(host, &legacy(&active))?;
    }
    crate::active::save(host, &active)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_of(uuid: &str) -> SavedVgpu {
        SavedVgpu {
            uuid: uuid.into(),
            type_id: "nvidia-566".into(),
            type_name: "NVIDIA A40-24Q".into(),
            parent: "0000:e8:00.4".into(),
            gpu: Some("0000:e8:00.0".into()),
            interface: "mdev".into(),
            gi_profile: None,
        }
    }

    #[test]
    fn render_parses_back() {
        let p = Pins {
            sriov: vec!["0000:c1:00.0".into()],
            mixed_size: vec!["0000:e8:00.0".into()],
            vgpus: vec![pin_of("2f82ee72-3ac5-4615-9c0b-327c12e8c83d")],
        };
        let text = render(&p).unwrap();
        assert!(text.starts_with("# vgpuctl pins"), "{text}");
        assert_eq!(parse(&text).unwrap(), p);
        assert_eq!(
            parse(&render(&Pins::default()).unwrap()).unwrap(),
            Pins::default()
        );
    }

    #[test]
    fn profile_keys_are_refused() {
        let e = parse("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/vgpuctl/vgpus.toml") && e.contains("[[gpus]]"),
            "{e}"
        );
        let e = parse("[[vgpus]]\nuuid = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("vgpus[0]"), "{e}");
    }

    #[test]
    fn pin_replaces_by_uuid_and_unpin_drops() {
        let mut p = Pins::default();
        pin(&mut p, [pin_of("a"), pin_of("b")]);
        let mut moved = pin_of("a");
        moved.parent = "0000:e8:00.5".into();
        pin(&mut p, [moved.clone()]);
        assert_eq!(p.vgpus, [moved, pin_of("b")]);
        unpin(&mut p, |v| v.uuid == "a");
        assert_eq!(p.vgpus, [pin_of("b")]);
    }

    #[test]
    fn mixed_size_is_marked_by_the_types_pinned_and_old_files_read() {
        let (a, b) = (
            "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
            "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
        );
        let mut p = Pins::default();
        let mut small = pin_of(b);
        small.type_name = "NVIDIA A40-1B".into();
        small.type_id = "nvidia-555".into();
        small.parent = "0000:e8:00.5".into();
        pin(&mut p, [pin_of(a), small]);
        mark_mixed_size(&mut p, ["0000:e8:00.0"]);
        assert_eq!(p.mixed_size, ["0000:e8:00.0"]);
        let text = render(&p).unwrap();
        assert!(text.contains("mixed_size = [\"0000:e8:00.0\"]"), "{text}");
        assert_eq!(parse(&text).unwrap(), p);
        unpin(&mut p, |v| v.uuid == b);
        mark_mixed_size(&mut p, ["0000:e8:00.0"]);
        assert!(p.mixed_size.is_empty());
        // A file written before the key existed still reads.
        let old = "sriov = [\"0000:e8:00.0\"]\n";
        assert!(parse(old).unwrap().mixed_size.is_empty());
    }
}
