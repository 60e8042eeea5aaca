use std::path::Path;

use crate::exit::{Exit, Failure};
use crate::host::{Host, WriteOpts};

/// `-o PATH` is written only as a regular file in a directory that exists: a symlink, FIFO,
/// device or directory there is refused (replacing it could break the system that owns it), and
/// no directory is created that was not asked for.
pub fn check_output(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_file() {
                return Ok(());
            } else if t.is_symlink() {
                "a symlink"
            } else if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_block_device() || t.is_char_device() {
                "a device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            Err(Failure::usage(format!(
                "export -o {shown}: {shown} is {what}; export writes only regular files: \
                 give the path of a new or regular file (or omit -o to print the profile)"
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if dir.is_dir() {
                Ok(())
            } else {
                Err(Failure::usage(format!(
                    "export -o {shown}: the directory {} does not exist (export creates no \
                     directories)",
                    dir.display()
                )))
            }
        }
        Err(e) => Err(Failure::usage(format!("export -o {shown}: {e}"))),
    }
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A profile `setup --profile` replays (the default).
    Profile,
    Mdevctl,
    /// What OpenStack Nova, KubeVirt or Proxmox VE needs.
    Platform(crate::platforms::Platform),
}

pub fn run(host: &Host, format: Format, output: Option<&Path>) -> Result<Exit, Failure> {
    if let Some(path) = output {
        check_output(path)?;
    }
    let active = crate::active::load(host)?;
    // Read-only: pins an older release left in the profile copy are read there, not moved.
    let pins = crate::pins::load(host)?;
    if let Format::Platform(platform) = format {
        let text =
            crate::platforms::render(host, platform, pins.as_ref()).map_err(Failure::failed)?;
        return write_text(output, &text);
    }
    if format == Format::Mdevctl {
        crate::privilege::require_root(host, "export --mdevctl")?;
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
    let text = crate::integrations::exported_text(
        &toml::to_string_pretty(&p).map_err(Failure::from)?,
        p.driver.is_some(),
        facts.driver.loaded_version.as_deref(),
    );
    write_text(output, &text)
}

/// `text` to `-o FILE` (atomically) or to standard output.
fn write_text(output: Option<&Path>, text: &str) -> Result<Exit, Failure> {
    match output {
        Some(path) => {
            crate::host::files::replace_atomic(path, text.as_bytes(), 0o644)?;
            eprintln!("wrote {}", path.display());
        }
        None => crate::out!("{text}"),
    }
    Ok(Exit::Ok)
}
