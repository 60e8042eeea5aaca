//! The GRUB defaults as `/bin/sh` sees them: the files are copied into a private directory
//! and sourced the way `grub-mkconfig` does (the main file, then `grub.d/*.cfg` in glob order),
//! and the two command-line variables are printed. Used before an edit is applied on the
//! running system, to judge the edit by the shell that will read it, and by the tests. Never
//! run for a test root or a simulated host: the files may run commands (`lsb_release`).

use std::io;

use crate::host::{Cmd, RunOutput};

const SCRIPT: &str = r#"d=$1
. "$d/grub"
for x in "$d"/grub.d/*.cfg; do
  if [ -e "$x" ]; then . "$x"; fi
done
printf '%s\001%s' "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"
"#;

/// The one place vgpuctl runs a shell, and on purpose: the question is what `/bin/sh` makes of
/// these files. The script is a constant; the directory is its only argument (`$1`).
pub const SHELL: &str = "/bin/sh";

/// `(GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT)` after sourcing `files` (main file first,
/// then drop-ins by path; only their base names are used). `run` runs the program (the host's
/// `Host::run` in the product).
pub fn source(
    files: &[(&str, &[u8])],
    run: &dyn Fn(&Cmd) -> anyhow::Result<RunOutput>,
) -> io::Result<(String, String)> {
    let dir = tempfile::Builder::new().prefix("vgpuctl-grub-").tempdir()?;
    std::fs::create_dir(dir.path().join("grub.d"))?;
    for (i, (name, bytes)) in files.iter().enumerate() {
        let base = name.rsplit('/').next().unwrap_or(name);
        let p = if i == 0 {
            dir.path().join("grub")
        } else {
            dir.path().join("grub.d").join(base)
        };
        std::fs::write(p, bytes)?;
    }
    let cmd = Cmd::new(SHELL)
        .args(["-c", SCRIPT, "sh"])
        .arg(dir.path().display().to_string());
    let out = run(&cmd).map_err(|e| io::Error::other(format!("{e:#}")))?;
    let text = &out.stdout;
    match text.rsplit_once('\u{1}') {
        Some((l, d)) => Ok((l.to_string(), d.to_string())),
        None => Err(io::Error::other(format!(
            "/bin/sh could not source the GRUB defaults: {}",
            out.stderr.trim()
        ))),
    }
}
