//! Files we own: written atomically (temp file in the same directory, fsync, rename, fsync of
//! the directory), with the first version we replaced kept under `/var/lib/vgpuctl/backups/`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::resolve::Last;
use super::Host;
use crate::fault;

/// Where backups of files we replaced live, mirroring their path.
pub const BACKUP_DIR: &str = "var/lib/vgpuctl/backups";

#[derive(Clone, Copy, Debug)]
pub struct WriteOpts {
    pub mode: u32,
    /// Keep the first version we replaced (never overwritten by later runs).
    pub backup: bool,
}

impl Default for WriteOpts {
    fn default() -> Self {
        WriteOpts {
            mode: 0o644,
            backup: true,
        }
    }
}

impl WriteOpts {
    /// Our own state: no backup, readable by root only when it may hold a credential.
    pub fn state() -> Self {
        WriteOpts {
            mode: 0o644,
            backup: false,
        }
    }
    pub fn secret() -> Self {
        WriteOpts {
            mode: 0o600,
            backup: false,
        }
    }
}

impl Host {
    /// The backup path of a root-relative file.
    pub fn backup_rel(rel: &str) -> String {
        format!("{BACKUP_DIR}/{}", rel.trim_start_matches('/'))
    }

    /// Write `contents` atomically. Unchanged content is not rewritten (re-runs modify nothing).
    /// Returns whether the file changed. Through a symlink, the file it points to (inside the
    /// root) is replaced and the link kept; the backup is named after the path asked for.
    pub fn write_file(&self, rel: &str, contents: &[u8], opts: WriteOpts) -> Result<bool> {
        let path = self.resolved(rel, Last::Target)?;
        if let Ok(old) = std::fs::read(&path) {
            if old == contents {
                let mode = path.metadata().map(|m| m.permissions().mode() & 0o7777)?;
                if mode == opts.mode {
                    return Ok(false);
                }
            } else if opts.backup {
                let b = self.resolved(&Host::backup_rel(rel), Last::Target)?;
                if !b.exists() {
                    write_atomic(&b, &old, 0o600)
                        .with_context(|| format!("cannot back up {}", path.display()))?;
                }
            }
        }
        write_atomic(&path, contents, opts.mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(true)
    }

    pub fn remove_file(&self, rel: &str) -> Result<bool> {
        let path = self.resolved(rel, Last::Keep)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&path);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    pub fn create_dir_all(&self, rel: &str) -> Result<()> {
        let path = self.checked_path(rel)?;
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))
    }

    /// Make `rel` a symlink to `target` (taken literally), replacing what was there atomically.
    pub fn symlink(&self, target: &str, rel: &str) -> Result<bool> {
        let path = self.resolved(rel, Last::Keep)?;
        if std::fs::read_link(&path)
            .map(|t| t == Path::new(target))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let dir = path.parent().context("symlink without parent")?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.vgpuctl-tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot link {}", path.display()))?;
        sync_dir(&path);
        Ok(true)
    }
}

/// Temp file in the same directory, fsync, rename over, fsync the directory: a reader (or a
/// power cut) sees the old file or the new one, never half of either.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("file without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    replace_atomic(path, contents, mode)
}

/// [`write_atomic`] into a directory that must exist already (an operator's path: nothing is
/// created around it).
pub fn replace_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sweep_stale_temps(dir, path);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            path.file_name().unwrap_or_default().to_string_lossy()
        ))
        .suffix(".vgpuctl-tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    let half = contents.len() / 2;
    tmp.write_all(&contents[..half])?;
    fault::point("write-half");
    tmp.write_all(&contents[half..])?;
    tmp.as_file().sync_all()?;
    fault::point("before-rename");
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path);
    fault::point("after-rename");
    Ok(())
}

/// Temp files of this target left by a run that was killed mid-write. Only ones older than a
/// minute are removed, so a concurrent writer's temp file is never taken from under it.
fn sweep_stale_temps(dir: &Path, path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !(n.starts_with(&prefix) && n.ends_with(".vgpuctl-tmp")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_the_target_are_swept_fresh_ones_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("state.toml");
        let stale = d.path().join(".state.toml.abc123.vgpuctl-tmp");
        let fresh = d.path().join(".state.toml.def456.vgpuctl-tmp");
        let other = d.path().join(".grub.abc123.vgpuctl-tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, "half").unwrap();
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        for p in [&stale, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        write_atomic(&target, b"x = 1\n", 0o644).unwrap();
        assert!(!stale.exists());
        assert!(
            fresh.exists(),
            "a concurrent writer's temp file is left alone"
        );
        assert!(other.exists(), "another file's temp is not ours to remove");
        assert_eq!(std::fs::read(&target).unwrap(), b"x = 1\n");
    }
}
