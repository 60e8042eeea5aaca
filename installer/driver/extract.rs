//! Extraction from NVIDIA's licensed zip: only the host package that fits this host (the `.deb`
//! on Debian/Ubuntu or the `.rpm` on RHEL-family when the zip has one, else
//! `Host_Drivers/*-vgpu-kvm.run`), with its unix mode, streamed straight to disk through a large
//! buffer; `Guest_Drivers/` too when asked. Files are written under a temporary name and renamed,
//! so an interrupted extraction never leaves a half package under the real name. No fsync of the
//! data: a torn package is caught by the `.run`'s own `--check` (and dpkg/rpm checksums).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use super::progress::Transfer;
use super::{FetchOptions, OsFamily, PackageKind, DOWNLOAD_DIR};
use crate::host::Host;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{zip} is truncated or damaged ({detail}): delete it and download or copy it again")]
    Damaged { zip: String, detail: String },
    #[error(
        "{zip} has no Host_Drivers/ folder (it holds: {found}): this is not the \"vGPU for Linux \
         KVM\" host package; download that one from the licensing portal"
    )]
    NoHostDrivers { zip: String, found: String },
    #[error(
        "{zip} has no host package for this host in Host_Drivers/ (found: {found}); expected \
         *-vgpu-kvm.run{alt}"
    )]
    NoPackage {
        zip: String,
        found: String,
        alt: &'static str,
    },
}

/// What was extracted. Paths are root-relative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    pub package: PathBuf,
    pub kind: PackageKind,
    pub guest_dir: Option<PathBuf>,
    /// Zip entry of the package.
    pub entry: String,
}

/// An entry of interest: its index, its name split into folder components.
struct Entry {
    index: usize,
    name: String,
    rel: PathBuf,
}

/// The path inside `Host_Drivers/` or `Guest_Drivers/`, wherever that folder sits in the zip
/// (some repacks add a top folder). `None` for other entries and for unsafe names.
fn under_folder(rel: &Path, folder: &str) -> Option<PathBuf> {
    let comps: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let pos = comps.iter().position(|c| *c == folder)?;
    (pos + 1 < comps.len()).then(|| comps[pos..].iter().collect())
}

/// Pick the host package among `Host_Drivers/` file names (pure).
pub fn choose_host_package(names: &[&str], os: OsFamily) -> Option<(usize, PackageKind)> {
    let find = |pred: &dyn Fn(&str) -> bool| {
        // Several candidates: take the highest name (newest release string).
        names
            .iter()
            .enumerate()
            .filter(|(_, n)| pred(&n.to_ascii_lowercase()))
            .max_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i)
    };
    let preferred = match os {
        OsFamily::Debian => find(&|n| n.ends_with(".deb")).map(|i| (i, PackageKind::Deb)),
        OsFamily::Rhel => find(&|n| n.ends_with(".rpm")).map(|i| (i, PackageKind::Rpm)),
        OsFamily::Other => None,
    };
    preferred.or_else(|| find(&|n| n.ends_with("-vgpu-kvm.run")).map(|i| (i, PackageKind::Run)))
}

/// The driver version in a package or zip name: the first `NNN.N[.N]` field
/// (`NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run`, `nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb`,
/// `NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm` -> `550.163.02`).
pub fn version_from_name(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || matches!(b[i - 1], b'-' | b'_');
        if at_boundary && b[i].is_ascii_digit() {
            let mut j = i;
            let mut groups = Vec::new();
            loop {
                let s = j;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j == s {
                    break;
                }
                groups.push(&name[s..j]);
                if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                    j += 1;
                } else {
                    break;
                }
            }
            let ends_ok = j == b.len() || !b[j].is_ascii_alphanumeric();
            if groups.len() >= 2 && groups[0].len() >= 3 && ends_ok {
                return Some(groups.join("."));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

/// Extract the host package (and `Guest_Drivers/` with `opts.guest`) from the zip at
/// `zip_rel` into `DOWNLOAD_DIR/<zip stem>/`.
pub fn extract(host: &Host, zip_rel: &Path, opts: &FetchOptions) -> Result<Extracted> {
    let zip_abs = host.checked_path(&zip_rel.to_string_lossy())?;
    let zip_shown = format!("/{}", zip_rel.display());
    let damaged = |detail: String| ExtractError::Damaged {
        zip: zip_shown.clone(),
        detail,
    };
    let file = File::open(&zip_abs).with_context(|| format!("cannot open {zip_shown}"))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| damaged(e.to_string()))?;

    let mut host_entries = Vec::new();
    let mut guest_entries = Vec::new();
    let mut top: Vec<String> = Vec::new();
    for index in 0..zip.len() {
        let f = zip
            .by_index_raw(index)
            .map_err(|e| damaged(e.to_string()))?;
        let name = f.name().to_string();
        let Some(rel) = f.enclosed_name() else {
            continue; // `../` or absolute: never written.
        };
        let first = name.split('/').next().unwrap_or("").to_string();
        let first = if name.contains('/') {
            format!("{first}/")
        } else {
            first
        };
        if !top.contains(&first) {
            top.push(first);
        }
        if f.is_dir() {
            continue;
        }
        if let Some(r) = under_folder(&rel, "Host_Drivers") {
            host_entries.push(Entry {
                index,
                name: name.clone(),
                rel: r,
            });
        } else if let Some(r) = under_folder(&rel, "Guest_Drivers") {
            guest_entries.push(Entry {
                index,
                name,
                rel: r,
            });
        }
    }
    let has_host_folder = zip
        .file_names()
        .any(|n| n.split('/').any(|c| c == "Host_Drivers"));
    if !has_host_folder {
        return Err(ExtractError::NoHostDrivers {
            zip: zip_shown,
            found: top.join(", "),
        }
        .into());
    }
    let names: Vec<&str> = host_entries
        .iter()
        .map(|e| e.rel.file_name().and_then(|n| n.to_str()).unwrap_or(""))
        .collect();
    let Some((pick, kind)) = choose_host_package(&names, opts.os) else {
        return Err(ExtractError::NoPackage {
            zip: zip_shown,
            found: if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            },
            alt: match opts.os {
                OsFamily::Debian => " or a .deb",
                OsFamily::Rhel => " or an .rpm",
                OsFamily::Other => "",
            },
        }
        .into());
    };

    let stem = zip_rel
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "driver".into());
    let dest_rel = PathBuf::from(DOWNLOAD_DIR).join(&stem);
    let chosen = &host_entries[pick];
    let package = dest_rel.join(&chosen.rel);
    extract_entry(host, &mut zip, chosen, &package, opts, &zip_shown)?;

    let guest_dir = if opts.guest {
        if guest_entries.is_empty() {
            opts.messages.warn(&format!(
                "{zip_shown} has no Guest_Drivers/ folder: nothing to extract for VMs"
            ));
            None
        } else {
            for e in &guest_entries {
                extract_entry(host, &mut zip, e, &dest_rel.join(&e.rel), opts, &zip_shown)?;
            }
            Some(dest_rel.join("Guest_Drivers"))
        }
    } else {
        None
    };
    Ok(Extracted {
        package,
        kind,
        guest_dir,
        entry: chosen.name.clone(),
    })
}

const COPY_BUF: usize = 1 << 20;

fn extract_entry(
    host: &Host,
    zip: &mut zip::ZipArchive<File>,
    entry: &Entry,
    dest_rel: &Path,
    opts: &FetchOptions,
    zip_shown: &str,
) -> Result<()> {
    let damaged = |detail: String| ExtractError::Damaged {
        zip: zip_shown.to_string(),
        detail: format!("entry {}: {detail}", entry.name),
    };
    let dest = host.checked_path(&dest_rel.to_string_lossy())?;
    let dir = dest.parent().context("entry without a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut f = zip
        .by_index(entry.index)
        .map_err(|e| damaged(e.to_string()))?;
    let mode = f.unix_mode().map(|m| m & 0o7777).unwrap_or_else(|| {
        if entry.name.ends_with(".run") {
            0o755
        } else {
            0o644
        }
    });
    let name = dest
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.vgpuctl-part"));
    let mut out = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut progress = Transfer::new(
        opts.progress,
        &opts.messages,
        &format!("extracting {name}"),
        Some(f.size()),
    );
    let mut buf = vec![0u8; COPY_BUF];
    let result: Result<()> = (|| {
        loop {
            // zip checks the CRC-32 at the end of the entry and fails the last read on mismatch.
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(damaged(e.to_string()).into()),
            };
            out.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            progress.inc(n as u64);
        }
        Ok(())
    })();
    if let Err(e) = result {
        progress.abandon();
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(out);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot rename to {}", dest.display()))?;
    progress.finish("extracted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_real_names() {
        for (name, v) in [
            ("NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run", "550.163.02"),
            ("nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb", "550.163.02"),
            ("NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm", "550.163.02"),
            (
                "NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip",
                "550.163.02",
            ),
            ("NVIDIA-Linux-x86_64-535.247.02-vgpu-kvm.run", "535.247.02"),
            ("NVIDIA-Linux-x86_64-580.65-vgpu-kvm.run", "580.65"),
        ] {
            assert_eq!(version_from_name(name).as_deref(), Some(v), "{name}");
        }
        assert_eq!(version_from_name("driver.run"), None);
        assert_eq!(version_from_name("x86_64.run"), None);
    }

    #[test]
    fn package_choice_by_os() {
        let names = [
            "NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run",
            "nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
            "NVIDIA-vGPU-rhel-9.3-550.163.02.x86_64.rpm",
            "NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm",
        ];
        assert_eq!(
            choose_host_package(&names, OsFamily::Other),
            Some((0, PackageKind::Run))
        );
        assert_eq!(
            choose_host_package(&names, OsFamily::Debian),
            Some((1, PackageKind::Deb))
        );
        assert_eq!(
            choose_host_package(&names, OsFamily::Rhel),
            Some((3, PackageKind::Rpm))
        );
        let run_only = ["NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"];
        assert_eq!(
            choose_host_package(&run_only, OsFamily::Rhel),
            Some((0, PackageKind::Run))
        );
        assert_eq!(choose_host_package(&["README.txt"], OsFamily::Other), None);
    }

    #[test]
    fn folder_matching_is_by_component() {
        assert_eq!(
            under_folder(Path::new("Host_Drivers/a.run"), "Host_Drivers"),
            Some(PathBuf::from("Host_Drivers/a.run"))
        );
        assert_eq!(
            under_folder(Path::new("top/Host_Drivers/a.run"), "Host_Drivers"),
            Some(PathBuf::from("Host_Drivers/a.run"))
        );
        assert_eq!(
            under_folder(Path::new("Host_Drivers"), "Host_Drivers"),
            None
        );
        assert_eq!(
            under_folder(Path::new("MyHost_Drivers/a.run"), "Host_Drivers"),
            None
        );
    }
}
