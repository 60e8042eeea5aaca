//! The GRUB defaults as `/bin/sh` sees them: the files are copied into a private directory
//! and sourced the way `grub-mkconfig` does (the main file, then `grub.d/*.cfg` in glob order),
//! and the two command-line variables are printed. Used before an edit is applied on the
//! running system, to judge the edit by the shell that will read it, and by the tests. Never
//! run for a test root or a simulated host: the files may run commands (`lsb_release`).

use std::io;
use std::process::Command;

const SCRIPT: &str = r#"d=$1
. "$d/grub"
for x in "$d"/grub.d/*.cfg; do
  if [ -e "$x" ]; then . "$x"; fi
done
printf '%s\001%s' "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"
"#;

/// `(GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT)` after sourcing `files` (main file first,
/// then drop-ins by path; only their base names are used).
pub fn source(files: &[(&str, &[u8])]) -> io::Result<(String, String)> {
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
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("sh")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.rsplit_once('\u{1}') {
        Some((l, d)) => Ok((l.to_string(), d.to_string())),
        None => Err(io::Error::other(format!(
            "/bin/sh could not source the GRUB defaults: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
