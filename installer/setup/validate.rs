//! The one validation pass setup makes before any change (issue 12, item 5): every field of
//! every section is checked against this host, whether or not the host still needs the step the
//! field is for. A profile that would fail at step 12 (after GRUB, the initramfs and vfio-pci
//! were changed) fails here, exit 2, with the file, line and field named.
//!
//! What is checked here that the loader cannot (it needs the host):
//! - `[driver]`: a url needs a pinned sha256 (or `--allow-unverified`), even on a host whose
//!   driver is installed; the link's token must be well formed. Only what is consumed by the
//!   install itself (the file at `path` still there, the link not yet expired) is not required
//!   once the driver is installed: those are the step's inputs, not the profile's shape.
//! - `gpus[N].uuids`: go with exactly one GPU, and none is already a live vGPU elsewhere.
//! - `vgpus[N].uuid`: not live on another parent than the pin names.
//! - `[cloudpods] host_conf`: an existing, readable file in a shape its editor can keep.
//! - `[nova] conf`: a file (not a directory) in a directory that exists (nova-compute's).

use std::io::ErrorKind;
use std::time::SystemTime;

use crate::driver::DriverError;
use crate::facts::HostFacts;
use crate::host::Host;
use crate::profile::Profile;
use crate::profile_load::{Located, ProfileError, UUIDS_ONE_GPU};
use crate::vgpu::select;

/// Check everything; the first problem, located in the profile's file.
pub fn validate(
    host: &Host,
    f: &HostFacts,
    profile: &Profile,
    src: &Located,
    allow_unverified: bool,
) -> Result<(), ProfileError> {
    check_driver(host, f, profile, allow_unverified).map_err(|(k, r)| src.error(k, r))?;
    check_uuids(f, profile).map_err(|(k, r)| src.error(&k, r))?;
    check_cloudpods(host, profile).map_err(|r| src.error("cloudpods.host_conf", r))?;
    if let Some(c) = &profile.nova {
        crate::nova_conf::check(host, c).map_err(|r| src.error("nova.conf", r))?;
    }
    Ok(())
}

/// The profile field a driver error is about, and its reason without the `profile [driver] x:`
/// prefix (the located error names the field itself).
fn driver_field(e: &DriverError) -> (&'static str, String) {
    let field = match e {
        DriverError::Field { field, .. } | DriverError::MissingFile { field, .. } => *field,
        DriverError::LinkExpired { .. }
        | DriverError::HttpNotAllowed { .. }
        | DriverError::Unverified { .. } => "url",
        DriverError::SecureBootNoKeys => "signing_key",
    };
    let msg = e.to_string();
    let reason = msg
        .strip_prefix(&format!("profile [driver] {field}: "))
        .map(str::to_string)
        .unwrap_or(msg);
    (field, reason)
}

fn check_driver(
    host: &Host,
    f: &HostFacts,
    profile: &Profile,
    allow_unverified: bool,
) -> Result<(), (&'static str, String)> {
    let at = |(k, r): (&'static str, String)| -> (&'static str, String) {
        (
            match k {
                "url" => "driver.url",
                "path" => "driver.path",
                "sha256" => "driver.sha256",
                "signing_key" => "driver.signing_key",
                "signing_cert" => "driver.signing_cert",
                _ => "driver",
            },
            r,
        )
    };
    let installed = f.driver.installed();
    let Some(d) = &profile.driver else {
        if installed {
            return Ok(());
        }
        return Err((
            "driver",
            "the vGPU host driver is not installed and the profile has no [driver] section: add \
             `path = \"/root/NVIDIA-GRID-Linux-KVM-....zip\"` or a licensed `url`"
                .into(),
        ));
    };
    match crate::driver::validate(d, host, SystemTime::now()) {
        Ok(_) => {}
        // The install's own inputs: needed only while the driver still has to be installed.
        Err(DriverError::MissingFile { .. } | DriverError::LinkExpired { .. }) if installed => {}
        Err(e) => return Err(at(driver_field(&e))),
    }
    if d.url.is_some() && d.sha256.is_none() && !allow_unverified {
        let e = DriverError::Unverified { url: String::new() };
        return Err(("driver.sha256", driver_field(&e).1));
    }
    Ok(())
}

fn check_uuids(f: &HostFacts, profile: &Profile) -> Result<(), (String, String)> {
    let live = f.vgpus();
    let live_as = |u: &str| {
        live.iter()
            .find(|v| v.uuid.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(u)))
    };
    for (i, req) in profile.gpus.iter().enumerate() {
        if req.uuids.is_empty() {
            continue;
        }
        // An unknown select is the planner's error, with its own message.
        let Ok(gpus) = select::select(f, &req.select) else {
            continue;
        };
        if gpus.len() > 1 {
            let list: Vec<&str> = gpus.iter().map(|g| g.address.as_str()).collect();
            return Err((
                format!("gpus[{i}].uuids"),
                format!(
                    "{UUIDS_ONE_GPU} (select = {:?} picks {})",
                    req.select,
                    list.join(", ")
                ),
            ));
        }
        let Some(gpu) = gpus.first() else { continue };
        for (j, u) in req.uuids.iter().enumerate() {
            if let Some(v) = live_as(u) {
                if v.gpu.as_deref() != Some(gpu.address.as_str()) {
                    return Err((
                        format!("gpus[{i}].uuids[{j}]"),
                        format!(
                            "{u} is already a live vGPU on {}{}, not on {}: a UUID names one \
                             device; pick another UUID or remove that vGPU first",
                            v.parent,
                            v.gpu
                                .as_deref()
                                .filter(|g| *g != v.parent)
                                .map(|g| format!(" (GPU {g})"))
                                .unwrap_or_default(),
                            gpu.address
                        ),
                    ));
                }
            }
        }
    }
    for (i, pin) in profile.vgpus.iter().enumerate() {
        if let Some(v) = live_as(&pin.uuid) {
            if v.parent != pin.parent {
                return Err((
                    format!("vgpus[{i}].uuid"),
                    format!(
                        "{} is already a live vGPU on {}, but the profile pins it on {}",
                        pin.uuid, v.parent, pin.parent
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_cloudpods(host: &Host, profile: &Profile) -> Result<(), String> {
    let Some(c) = &profile.cloudpods else {
        return Ok(());
    };
    let path = &c.host_conf;
    let rel = path.trim_start_matches('/');
    if host.is_dir(rel) {
        return Err(format!(
            "{path} is a directory; give the CloudPods host agent's configuration file, e.g. \
             /etc/yunion/host.conf"
        ));
    }
    let text = match host.read(rel) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!(
                "{path} does not exist: is the CloudPods host agent installed on this host? \
                 Install it first, or set host_conf to its configuration file"
            ))
        }
        Err(e) => return Err(format!("cannot read {path}: {e}")),
    };
    // The shape is judged now, not after the vGPUs were made: any list works for that.
    crate::edit::hostconf::set_pfs(&text, &[])
        .map(|_| ())
        .map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_name_their_field() {
        let (k, r) = driver_field(&DriverError::Field {
            field: "sha256",
            problem: "3 characters".into(),
        });
        assert_eq!((k, r.as_str()), ("sha256", "3 characters"));
        let (k, r) = driver_field(&DriverError::HttpNotAllowed {
            url: "http://m/x".into(),
        });
        assert_eq!(k, "url");
        assert!(r.starts_with("http://m/x is plain http"), "{r}");
        let (k, _) = driver_field(&DriverError::MissingFile {
            field: "path",
            path: "/root/x.zip".into(),
            root: "/".into(),
        });
        assert_eq!(k, "path");
    }
}
