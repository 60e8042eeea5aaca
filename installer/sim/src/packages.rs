//! The NVIDIA vGPU host driver as a distribution package: the name the package manager knows it
//! by, and its removal (`apt-get remove|purge -y NAME`, `dnf remove -y NAME`). The install itself
//! is `programs::package_install`; it records the name in the state, as dpkg/rpm keep it in their
//! databases.

use std::path::Path;

use anyhow::Result;

use super::kernel::SimKernel;
use crate::seam::RunOutput;

/// The package name a package file installs under.
/// Debian: the name field of the file name, before the first `_` (Debian Policy §10.1 /
/// dpkg-name: `<name>_<version>_<arch>.deb`): `nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb` ->
/// `nvidia-vgpu-ubuntu-550`.
/// RPM: rpm's default file name is `%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm` (the
/// `_rpmfilename` macro), so NAME is the stem less its arch and last two `-` fields:
/// `NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm` -> `NVIDIA-vGPU-rhel`. A guess, not recorded:
/// that NVIDIA's package keeps rpm's default naming (what `rpm -qp --qf '%{NAME}'` would say).
pub fn package_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next().unwrap_or(file);
    if let Some(stem) = base.strip_suffix(".deb") {
        let name = stem.split('_').next().unwrap_or("");
        return (!name.is_empty() && name != stem).then(|| name.to_string());
    }
    let stem = base.strip_suffix(".rpm")?;
    let (nvr, _arch) = stem.rsplit_once('.')?;
    let (nv, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = nv.rsplit_once('-')?;
    (!name.is_empty()).then(|| name.to_string())
}

/// `apt-get remove|purge -y NAME...` / `dnf remove|erase -y NAME...`: removes the NVIDIA package
/// the simulator installed, the files its install wrote (as `.run --uninstall` does). Any other
/// name fails in the package manager's own words (see the README's source notes).
pub(crate) fn remove(k: &SimKernel, root: &Path, program: &str, a: &[&str]) -> Result<RunOutput> {
    let dnf = matches!(program, "dnf" | "yum");
    let names: Vec<&str> = a
        .iter()
        .skip_while(|x| !matches!(**x, "remove" | "purge" | "erase" | "autoremove"))
        .skip(1)
        .filter(|x| !x.starts_with('-'))
        .copied()
        .collect();
    let (installed, known) = k.with(|st| Ok((st.package.clone(), st.package_known.clone())))?;
    let Some(name) = names.first() else {
        return Ok(if dnf {
            RunOutput::failed(1, "Error: Need at least one argument to remove\n")
        } else {
            RunOutput::ok("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        });
    };
    if installed.as_deref() != Some(*name) {
        return Ok(if dnf {
            RunOutput::failed(
                1,
                format!("No match for argument: {name}\nError: No packages marked for removal.\n"),
            )
        } else if known.as_deref() == Some(*name) {
            // Installed once, removed since: apt knows the name and removes nothing (exit 0).
            RunOutput::ok(format!(
                "Package '{name}' is not installed, so not removed\n0 upgraded, 0 newly \
                 installed, 0 to remove and 0 not upgraded.\n"
            ))
        } else {
            RunOutput::failed(100, format!("E: Unable to locate package {name}\n"))
        });
    }
    let version = k.with(|st| Ok(st.driver.clone()))?;
    if let Some(v) = &version {
        super::remove_driver_files(root, k.model, v)?;
    }
    k.with(|st| {
        st.driver = None;
        st.package = None;
        Ok(())
    })?;
    Ok(RunOutput::ok(if dnf {
        format!("Removing:\n {name}\n\nRemoved:\n  {name}\n\nComplete!\n")
    } else {
        format!(
            "The following packages will be REMOVED:\n  {name}\n0 upgraded, 0 newly installed, \
             1 to remove and 0 not upgraded.\nRemoving {name} ({}) ...\n",
            version.as_deref().unwrap_or("?")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn the_name_is_the_debian_name_field_or_the_rpm_name() {
        assert_eq!(
            package_name("/var/lib/x/nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb").as_deref(),
            Some("nvidia-vgpu-ubuntu-550")
        );
        assert_eq!(
            package_name("NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm").as_deref(),
            Some("NVIDIA-vGPU-rhel")
        );
        assert_eq!(
            package_name("NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"),
            None
        );
        assert_eq!(package_name("x.rpm"), None);
    }
}
