use std::path::Path;

use crate::exit::{Exit, Failure};
use crate::host::{Host, WriteOpts};

pub fn run(host: &Host, mdevctl: bool, output: Option<&Path>) -> Result<Exit, Failure> {
    let active = crate::active::load(host)?;
    // Read-only: pins an older release left in the profile copy are read there, not moved.
    let pins = crate::pins::load(host)?;
    if mdevctl {
        crate::cmd::require_root(host, "export --mdevctl")?;
        let _lock = crate::setup::lock::acquire(host, "export --mdevctl")?;
        let Some(pins) = pins else {
            return Err(Failure::failed(
                "no pins (/etc/vgpuctl/vgpus.toml) and no active profile: nothing to export",
            ));
        };
        let defs = crate::integrations::mdevctl_defs(&pins);
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
    let p = crate::integrations::export_profile(&facts, active.as_ref(), pins.as_ref());
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
