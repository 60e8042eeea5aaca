//! How to remove the installed host driver the way it was installed: the `.run` installer's own
//! uninstaller, else the kept `.run` with `--uninstall`. A driver that came from a package (apt,
//! dnf) has no such command here: its removal is not built. Shared by `uninstall --all` and the
//! driver upgrade.

use crate::driver::extract::choose_host_package;
use crate::driver::PackageKind;
use crate::host::{Cmd, Host};

/// The .run installer's own uninstaller (`nvidia-uninstall`, which it installs), else the
/// installer vgpuctl ran, kept among its downloads, with `--uninstall`. None when setup installed
/// a package instead (the same choice of package as the install's): its removal is not built.
/// `version`: the installed driver's, so that of several kept packages the one that installed it
/// is chosen (an upgrade keeps the new one beside it).
pub fn uninstaller(host: &Host, os: crate::facts::OsFamily, version: Option<&str>) -> Option<Cmd> {
    let dl = crate::driver::DOWNLOAD_DIR;
    // What the install chose among the kept packages: a .run (its path) or a package (None).
    let chosen: Option<Option<String>> = host
        .list(dl)
        .into_iter()
        .filter(|pkg| version.is_none_or(|v| pkg.contains(v)))
        .find_map(|pkg| {
            let dir = format!("{dl}/{pkg}/Host_Drivers");
            let names = host.list(&dir);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (i, kind) = choose_host_package(&refs, os)?;
            Some((kind == PackageKind::Run).then(|| format!("/{dir}/{}", names[i])))
        });
    if chosen == Some(None) {
        return None;
    }
    if host.exists("usr/bin/nvidia-uninstall") {
        return Some(Cmd::new("/usr/bin/nvidia-uninstall").arg("--silent"));
    }
    let run = chosen.flatten()?;
    Some(Cmd::new(run).arg("--uninstall").arg("--silent"))
}
