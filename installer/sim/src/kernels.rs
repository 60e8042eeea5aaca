//! Installed kernels, their headers, the NVIDIA module built for each, and DKMS
//! (recorded-behaviour §7: DKMS rebuilds the module for a new kernel only when its headers are
//! installed; a host that boots a kernel without `nvidia.ko` has no vGPUs).
//!
//! All of it lives in the root's files, as on a real host: a kernel is installed when
//! `/lib/modules/<v>/` and `/boot/vmlinuz-<v>` exist; its headers are installed when
//! `/lib/modules/<v>/build` leads to them (`/usr/src/linux-headers-<v>` on Debian/Ubuntu,
//! `/usr/src/kernels/<v>` from kernel-devel on RHEL); the module is built for it when
//! `/lib/modules/<v>/updates/dkms/nvidia.ko` exists; the driver is registered with DKMS when
//! `/usr/src/nvidia-<version>/dkms.conf` exists (the `.run`'s `--dkms` puts its sources there).

use std::path::Path;

use anyhow::Result;

use super::layout;
use super::models::Model;
use crate::seam::RunOutput;

/// The running kernel (`uname -r`): what the last boot wrote to `/proc/sys/kernel/osrelease`.
pub fn running(root: &Path, m: &Model) -> String {
    std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| m.os.kver.to_string())
}

/// The kernel a boot with this command line starts: GRUB and BLS name the image in
/// `BOOT_IMAGE=.../vmlinuz-<v>`; anything else (systemd-boot's `initrd=` line) is the model's.
pub fn booted(root: &Path, m: &Model, cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("BOOT_IMAGE="))
        .and_then(|img| img.rsplit_once("vmlinuz-").map(|(_, v)| v.to_string()))
        .filter(|v| root.join("lib/modules").join(v).is_dir())
        .unwrap_or_else(|| m.os.kver.to_string())
}

/// Installed kernels, oldest first (by version, as `sort -V` and grub-mkconfig's
/// `version_sort` order them).
pub fn installed(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("boot"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("vmlinuz-"))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| version_cmp(a, b));
    v
}

/// The newest installed kernel: grub-mkconfig's 10_linux lists kernels newest first, and the
/// first entry is the default (`GRUB_DEFAULT=0`).
pub fn newest(root: &Path, m: &Model) -> String {
    installed(root)
        .pop()
        .unwrap_or_else(|| m.os.kver.to_string())
}

/// Version order: runs of digits compare as numbers, the rest as text.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, t)) if *ld == d => t.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                x.1.parse::<u64>()
                    .unwrap_or(0)
                    .cmp(&y.1.parse::<u64>().unwrap_or(0))
            }
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn headers_dir(m: &Model, v: &str) -> String {
    if m.os.debian {
        format!("usr/src/linux-headers-{v}")
    } else {
        format!("usr/src/kernels/{v}")
    }
}

/// Install a kernel's files (what the distribution's kernel package leaves), with its headers
/// or without them.
pub fn plant(root: &Path, m: &Model, v: &str, headers: bool) -> Result<()> {
    layout::put(
        root,
        &format!("boot/vmlinuz-{v}"),
        "simulated kernel image\n",
    )?;
    let initrd = if m.os.debian {
        format!("boot/initrd.img-{v}")
    } else {
        format!("boot/initramfs-{v}.img")
    };
    layout::put(root, &initrd, "simulated initramfs\n")?;
    layout::put(root, &format!("lib/modules/{v}/modules.dep"), "")?;
    if headers {
        plant_headers(root, m, v)?;
    }
    Ok(())
}

/// A kernel's headers: the source tree and the `build` link the package installs (an absolute
/// link, as linux-headers-* and kernel-devel ship it).
pub fn plant_headers(root: &Path, m: &Model, v: &str) -> Result<()> {
    let dir = headers_dir(m, v);
    layout::put(
        root,
        &format!("{dir}/Makefile"),
        "# simulated kernel headers\n",
    )?;
    layout::link(root, &format!("lib/modules/{v}/build"), &format!("/{dir}"))
}

/// Does `/lib/modules/<v>/build` lead to headers (read inside the root)?
pub fn has_headers(root: &Path, v: &str) -> bool {
    let link = root.join(format!("lib/modules/{v}/build"));
    match std::fs::read_link(&link) {
        Ok(t) if t.is_absolute() => root.join(t.strip_prefix("/").unwrap_or(&t)).is_dir(),
        Ok(_) | Err(_) => link.is_dir(),
    }
}

pub fn module_built(root: &Path, v: &str) -> bool {
    root.join(format!("lib/modules/{v}/updates/dkms/nvidia.ko"))
        .exists()
}

/// Driver versions registered with DKMS (`/usr/src/nvidia-<version>/dkms.conf`).
pub fn registered(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("usr/src"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("dkms.conf").is_file())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("nvidia-"))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What `.run --dkms` leaves for DKMS: the module's sources and its dkms.conf.
pub fn register(root: &Path, version: &str) -> Result<()> {
    layout::put(
        root,
        &format!("usr/src/nvidia-{version}/dkms.conf"),
        &format!(
            "PACKAGE_NAME=\"nvidia\"\nPACKAGE_VERSION=\"{version}\"\nAUTOINSTALL=\"yes\"\n\
             BUILT_MODULE_NAME[0]=\"nvidia\"\nDEST_MODULE_LOCATION[0]=\"/kernel/drivers/video\"\n"
        ),
    )
}

pub fn unregister(root: &Path, version: &str) {
    layout::rmtree(root, &format!("usr/src/nvidia-{version}"));
    let _ = std::fs::remove_dir(root.join("usr/src"));
}

/// `dkms status` and `dkms autoinstall [-k <v>]`.
pub fn dkms(root: &Path, m: &Model, a: &[&str]) -> Result<RunOutput> {
    match a.first().copied() {
        Some("status") => {
            let mut out = String::new();
            for ver in registered(root) {
                let built: Vec<String> = installed(root)
                    .into_iter()
                    .filter(|k| module_built(root, k))
                    .collect();
                if built.is_empty() {
                    out.push_str(&format!("nvidia/{ver}: added\n"));
                }
                for k in built {
                    out.push_str(&format!("nvidia/{ver}, {k}, x86_64: installed\n"));
                }
            }
            Ok(RunOutput::ok(out))
        }
        Some("autoinstall") => {
            let k = a
                .iter()
                .position(|x| *x == "-k")
                .and_then(|i| a.get(i + 1))
                .map(|s| s.to_string())
                .unwrap_or_else(|| running(root, m));
            let vers = registered(root);
            if vers.is_empty() || module_built(root, &k) {
                return Ok(RunOutput::ok(""));
            }
            if !has_headers(root, &k) {
                // dkms's own words (its test suite, run_test.sh, for `dkms build`); the exit code
                // 21 is that of `dkms build` (autoinstall's own may differ: a guess).
                return Ok(RunOutput::failed(
                    21,
                    format!(
                        "Error! Your kernel headers for kernel {k} cannot be found at \
                         /lib/modules/{k}/build or /lib/modules/{k}/source.\nPlease install the \
                         linux-headers-{k} package or use the --kernelsourcedir option to tell \
                         DKMS where it's located.\n"
                    ),
                ));
            }
            let ver = vers.last().cloned().unwrap_or_default();
            let kdir = format!("lib/modules/{k}/updates/dkms");
            layout::put(
                root,
                &format!("{kdir}/nvidia.ko"),
                &format!("simulated nvidia.ko {ver}\n"),
            )?;
            if m.iface == super::models::Iface::Mdev {
                layout::put(root, &format!("{kdir}/nvidia-vgpu-vfio.ko"), "simulated\n")?;
            }
            Ok(RunOutput::ok(format!(
                "Autoinstall of module nvidia/{ver} for kernel {k} (x86_64)\n\
                 Building module(s)... done.\nInstalling /lib/modules/{k}/updates/dkms/nvidia.ko\n\
                 Running depmod... done.\n\nAutoinstall on {k} succeeded for module(s) nvidia.\n"
            )))
        }
        _ => Ok(RunOutput::failed(
            1,
            "dkms: the vgpuctl simulator plays `status` and `autoinstall [-k VERSION]` only\n",
        )),
    }
}

/// `apt-get install -y linux-headers-<v>` (`proxmox-headers-<v>` on Proxmox) or `dnf install -y
/// kernel-devel-<v>`: the headers of an installed kernel come from the distribution's
/// repository. None when the command names no headers package (the driver's own packages are
/// played by the caller). The repository holds headers for every kernel in /boot (a guess: a
/// mirror that lags or is unreachable is not played). On Debian-family hosts dkms's
/// `/etc/kernel/header_postinst.d/dkms` hook then builds the registered modules for that kernel,
/// as Debian's dkms package does.
pub fn install_headers_package(
    m: &Model,
    root: &Path,
    program: &str,
    a: &[&str],
) -> Result<Option<RunOutput>> {
    let prefix = if !m.os.debian {
        "kernel-devel-"
    } else if m.os.proxmox {
        "proxmox-headers-"
    } else {
        "linux-headers-"
    };
    let Some(pkg) = a.iter().find(|x| {
        ["linux-headers-", "proxmox-headers-", "kernel-devel-"]
            .iter()
            .any(|p| x.starts_with(p))
    }) else {
        return Ok(None);
    };
    let version = pkg
        .strip_prefix(prefix)
        .filter(|v| installed(root).iter().any(|k| k == v));
    let Some(v) = version else {
        return Ok(Some(if program == "dnf" || program == "yum" {
            RunOutput::failed(
                1,
                format!("No match for argument: {pkg}\nError: Unable to find a match: {pkg}\n"),
            )
        } else {
            RunOutput::failed(
                100,
                format!(
                    "Reading package lists...\nBuilding dependency tree...\nE: Unable to locate \
                     package {pkg}\n"
                ),
            )
        }));
    };
    let mut out = format!("Setting up {pkg} ...\n");
    if !has_headers(root, v) {
        plant_headers(root, m, v)?;
    }
    if m.os.debian && !registered(root).is_empty() {
        out.push_str(&format!(
            "/etc/kernel/header_postinst.d/dkms:\n * dkms: running auto installation service for \
             kernel {v}\n"
        ));
        out.push_str(&dkms(root, m, &["autoinstall", "-k", v])?.stdout);
    }
    Ok(Some(RunOutput::ok(out)))
}

/// `new_kernel=<v>[:noheaders]`: a newer kernel installed by the distribution's update (the
/// boot loader starts it next), with its headers or, with `:noheaders`, without them.
pub fn parse_new_kernel(v: &str) -> Option<(String, bool)> {
    let (ver, flag) = match v.split_once(':') {
        Some((ver, f)) => (ver, Some(f)),
        None => (v, None),
    };
    let ok = !ver.is_empty()
        && ver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    match flag {
        _ if !ok => None,
        None => Some((ver.to_string(), true)),
        Some("noheaders") => Some((ver.to_string(), false)),
        Some("headers") => Some((ver.to_string(), true)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_numbers() {
        let mut v = vec![
            "6.8.0-60-generic",
            "6.8.0-100-generic",
            "5.15.0-141-generic",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.15.0-141-generic",
                "6.8.0-60-generic",
                "6.8.0-100-generic"
            ]
        );
    }

    #[test]
    fn dkms_builds_only_with_the_kernels_headers() {
        let (m, _) = crate::models::parse("l40s-vfio").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        plant(root, m, "6.8.0-90-generic", false).unwrap();
        plant(root, m, "6.8.0-91-generic", true).unwrap();
        // Not registered: nothing to build, nothing listed.
        assert_eq!(dkms(root, m, &["status"]).unwrap().stdout, "");
        register(root, "550.163.02").unwrap();
        assert_eq!(
            dkms(root, m, &["status"]).unwrap().stdout,
            "nvidia/550.163.02: added\n"
        );
        let no = dkms(root, m, &["autoinstall", "-k", "6.8.0-90-generic"]).unwrap();
        assert_eq!(no.status, 21);
        assert!(no.stderr.contains(
            "Error! Your kernel headers for kernel 6.8.0-90-generic cannot be found at \
             /lib/modules/6.8.0-90-generic/build or /lib/modules/6.8.0-90-generic/source."
        ));
        assert!(!module_built(root, "6.8.0-90-generic"));
        let yes = dkms(root, m, &["autoinstall", "-k", "6.8.0-91-generic"]).unwrap();
        assert_eq!(yes.status, 0, "{}", yes.stderr);
        assert!(module_built(root, "6.8.0-91-generic"));
        assert_eq!(
            dkms(root, m, &["status"]).unwrap().stdout,
            "nvidia/550.163.02, 6.8.0-91-generic, x86_64: installed\n"
        );
        assert_eq!(newest(root, m), "6.8.0-91-generic");
    }

    #[test]
    fn new_kernel_knob() {
        assert_eq!(
            parse_new_kernel("6.8.0-60-generic:noheaders"),
            Some(("6.8.0-60-generic".into(), false))
        );
        assert_eq!(
            parse_new_kernel("6.8.0-60-generic"),
            Some(("6.8.0-60-generic".into(), true))
        );
        assert_eq!(parse_new_kernel("6.8/x"), None);
        assert_eq!(parse_new_kernel("6.8:what"), None);
    }
}
