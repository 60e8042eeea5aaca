use std::path::Path;

use crate::exit::{Exit, Failure};
use crate::host::{Host, WriteOpts};

pub fn run(host: &Host, mdevctl: bool, output: Option<&Path>) -> Result<Exit, Failure> {
    let active = crate::active::load(host)?;
    if mdevctl {
        crate::privilege::require_root(host, "export --mdevctl")?;
        let _lock = crate::setup::lock::acquire(host, "export --mdevctl")?;
        let Some(profile) = active else {
            return Err(Failure::failed(
                "no active profile (/etc/vgpuctl/profile.toml): nothing to export",
            ));
        };
        let defs = crate::integrations::mdevctl_defs(&profile);
        for d in &defs {
            let (path, text) = crate::integrations::render_mdevctl(d);
            host.write_file(&path, text.as_bytes(), WriteOpts::default())?;
            crate::outln!("wrote /{path}");
        }
        crate::outln!(
            "{} mdevctl definition(s), start manual (vgpuctl-restore.service creates them at boot)",
            defs.len()
        );
        return Ok(Exit::Ok);
    }
    let facts = crate::facts::observe(host);
    let p = crate::integrations::export_profile(&facts, active.as_ref());
    let text = format!(
        "# Exported by vgpuctl from the live host: `vgpuctl setup --profile FILE` recreates it.\n{}",
        toml::to_string_pretty(&p).map_err(Failure::from)?
    );
    match output {
        Some(path) => {
            crate::host::files::write_atomic(path, text.as_bytes(), 0o644)?;
            eprintln!("wrote {}", path.display());
        }
        None => crate::out!("{text}"),
    }
    Ok(Exit::Ok)
}
