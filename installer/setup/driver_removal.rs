//! How to remove the installed host driver the way it was installed: the package manager's
//! removal for a driver setup installed from a `.deb` (apt-get) or `.rpm` (dnf), else the `.run`
//! installer's own uninstaller, else the kept `.run` with `--uninstall`. Shared by
//! `uninstall --all` and the driver upgrade.

use crate::driver::extract::choose_host_package;
use crate::driver::PackageKind;
use crate::facts::OsFamily;
use crate::host::{Cmd, Host};

/// The command that removes the driver setup installed, from what it kept among its downloads
/// (the same choice of package as the install's): for a package, its removal by name
/// ([`package_removal`]); for a `.run`, its own uninstaller (`nvidia-uninstall`, which it
/// installs), else the kept `.run` with `--uninstall`. None when neither is there.
/// `version`: the installed driver's, so that of several kept packages the one that installed it
/// is chosen (an upgrade keeps the new one beside it).
pub fn uninstaller(host: &Host, os: OsFamily, version: Option<&str>) -> Option<Cmd> {
    let dl = crate::driver::DOWNLOAD_DIR;
    // What the install chose among the kept packages: its file name and kind, and its path.
    let chosen: Option<(String, PackageKind, String)> = host
        .list(dl)
        .into_iter()
        .filter(|pkg| version.is_none_or(|v| pkg.contains(v)))
        .find_map(|pkg| {
            let dir = format!("{dl}/{pkg}/Host_Drivers");
            let names = host.list(&dir);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (i, kind) = choose_host_package(&refs, os)?;
            Some((names[i].clone(), kind, format!("/{dir}/{}", names[i])))
        });
    if let Some((file, kind @ (PackageKind::Deb | PackageKind::Rpm), _)) = &chosen {
        return package_removal(*kind, file);
    }
    if host.exists("usr/bin/nvidia-uninstall") {
        return Some(Cmd::new("/usr/bin/nvidia-uninstall").arg("--silent"));
    }
    let (_, _, run) = chosen?;
    Some(Cmd::new(run).arg("--uninstall").arg("--silent"))
}

/// The package manager's removal of the package a `.deb` / `.rpm` file installed (pure):
/// `apt-get remove -y NAME` (non-interactive) for a `.deb`, `dnf remove -y NAME` for an `.rpm`.
/// None when the file name gives no package name, or for a `.run`.
pub fn package_removal(kind: PackageKind, file: &str) -> Option<Cmd> {
    let name = package_name(file)?;
    match kind {
        PackageKind::Deb => Some(
            Cmd::new("apt-get")
                .args(["remove", "-y"])
                .arg(name)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        ),
        PackageKind::Rpm => Some(Cmd::new("dnf").args(["remove", "-y"]).arg(name)),
        PackageKind::Run => None,
    }
}

/// The name the package manager knows a package file's package by (pure). A `.deb` is named
/// `<name>_<version>_<arch>.deb` (Debian Policy §10.1, dpkg-name): the part before the first
/// `_` (`nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb` -> `nvidia-vgpu-ubuntu-550`). An `.rpm`
/// built with rpm's default `_rpmfilename` is `<NAME>-<VERSION>-<RELEASE>.<ARCH>.rpm`: the stem
/// less its arch and last two `-` fields (`NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm` ->
/// `NVIDIA-vGPU-rhel`). That NVIDIA keeps the default is a guess (no `rpm -qp --qf '%{NAME}'`
/// of it is recorded); were it wrong, dnf answers "No match for argument" and the removal fails
/// with that output, before the new driver is installed.
pub fn package_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next().unwrap_or(file);
    if let Some(stem) = base.strip_suffix(".deb") {
        let (name, _) = stem.split_once('_')?;
        return (!name.is_empty()).then(|| name.to_string());
    }
    let stem = base.strip_suffix(".rpm")?;
    let (nvr, _arch) = stem.rsplit_once('.')?;
    let (nv, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = nv.rsplit_once('-')?;
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deb_is_named_by_its_name_field_and_an_rpm_by_its_name() {
        // The file names NVIDIA ships (reference/nvidia-vgpu-host.md, step 5).
        assert_eq!(
            package_name("nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb").as_deref(),
            Some("nvidia-vgpu-ubuntu-550")
        );
        assert_eq!(
            package_name("/var/lib/vgpuctl/downloads/z/Host_Drivers/nvidia-vgpu-ubuntu-580_580.105.06_amd64.deb")
                .as_deref(),
            Some("nvidia-vgpu-ubuntu-580")
        );
        assert_eq!(
            package_name("NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm").as_deref(),
            Some("NVIDIA-vGPU-rhel")
        );
        for none in [
            "NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run",
            "nvidia.deb",
            "_1.0_amd64.deb",
            "x86_64.rpm",
            "a-b.x86_64.rpm",
        ] {
            assert_eq!(package_name(none), None, "{none}");
        }
    }

    #[test]
    fn apt_removes_a_deb_non_interactively_and_dnf_an_rpm() {
        let apt = package_removal(
            PackageKind::Deb,
            "nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
        )
        .unwrap();
        assert_eq!(apt.to_string(), "apt-get remove -y nvidia-vgpu-ubuntu-550");
        assert_eq!(
            apt.env,
            vec![("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string())]
        );
        let dnf = package_removal(
            PackageKind::Rpm,
            "NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm",
        )
        .unwrap();
        assert_eq!(dnf.to_string(), "dnf remove -y NVIDIA-vGPU-rhel");
        assert!(package_removal(PackageKind::Run, "a.run").is_none());
    }
}
