//! The host view: every read, write and program run goes through [`Host`].
//!
//! Paths are always root-relative ("sys/bus/pci/devices", "/etc/default/grub"): they are joined
//! onto the host root (`--root`, default `/`), in the spirit of `systemctl --root` and mdevctl's
//! `MDEVCTL_ENV_ROOT`. What the kernel or a program does in response to a write or a run is the
//! business of a [`Kernel`]: the real one touches the real thing, the simulator plays it.

pub mod files;
pub mod kernel;

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use files::WriteOpts;
pub use kernel::{Cmd, Kernel, Reach, RealKernel, RunOutput};

/// A root-relative view of one host, plus the kernel that answers writes and program runs.
#[derive(Clone)]
pub struct Host {
    root: PathBuf,
    kernel: Arc<dyn Kernel>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("root", &self.root)
            .field("simulated", &self.kernel.is_simulated())
            .finish()
    }
}

/// Reject absolute components and `..`: a root-relative path must stay inside the root.
pub fn clean_rel(rel: &str) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(rel.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("path {rel:?} leaves the host root"),
                ))
            }
        }
    }
    Ok(out)
}

impl Host {
    pub fn new(root: impl Into<PathBuf>, kernel: Arc<dyn Kernel>) -> Host {
        Host {
            root: root.into(),
            kernel,
        }
    }

    /// The real host at `root` (usually `/`).
    pub fn real(root: impl Into<PathBuf>) -> Host {
        Host::new(root, Arc::new(RealKernel))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is the real `/` of this machine (mutations need privileges there).
    pub fn is_system_root(&self) -> bool {
        kernel::is_running_root(&self.root)
    }

    /// What this host's kernel reaches: the running system, the simulator, or an offline root
    /// whose programs are never run.
    pub fn reach(&self) -> Reach {
        self.kernel.reach(&self.root)
    }

    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
    }

    pub fn is_simulated(&self) -> bool {
        self.kernel.is_simulated()
    }

    /// The absolute path of a root-relative path. Panics never; a path that tries to leave the
    /// root (`..`) maps to a path that cannot exist, so reads fail and writes are refused by
    /// [`Host::checked_path`].
    pub fn path(&self, rel: &str) -> PathBuf {
        match clean_rel(rel) {
            Ok(p) => self.root.join(p),
            Err(_) => self.root.join(".vgpuctl-invalid-path"),
        }
    }

    /// Like [`Host::path`] but an error for a path leaving the root.
    pub fn checked_path(&self, rel: &str) -> io::Result<PathBuf> {
        Ok(self.root.join(clean_rel(rel)?))
    }

    fn tick(&self) {
        self.kernel.tick(&self.root);
    }

    pub fn read(&self, rel: &str) -> io::Result<String> {
        self.tick();
        std::fs::read_to_string(self.checked_path(rel)?)
    }

    /// The file's content trimmed, or None when it cannot be read.
    pub fn read_trim(&self, rel: &str) -> Option<String> {
        self.read(rel).ok().map(|s| s.trim().to_string())
    }

    pub fn read_bytes(&self, rel: &str) -> io::Result<Vec<u8>> {
        self.tick();
        std::fs::read(self.checked_path(rel)?)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.tick();
        self.checked_path(rel)
            .map(|p| p.symlink_metadata().is_ok())
            .unwrap_or(false)
    }

    pub fn is_dir(&self, rel: &str) -> bool {
        self.tick();
        self.checked_path(rel).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Entry names of a directory, sorted; empty when it is missing or unreadable.
    pub fn list(&self, rel: &str) -> Vec<String> {
        self.tick();
        let Ok(path) = self.checked_path(rel) else {
            return Vec::new();
        };
        let mut names: Vec<String> = match std::fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// The last component of a symlink's target (`driver` -> `nvidia`), as sysfs links are read.
    pub fn link_name(&self, rel: &str) -> Option<String> {
        self.tick();
        let target = std::fs::read_link(self.checked_path(rel).ok()?).ok()?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(|s| s.to_string())
    }

    /// A symlink's target as stored (not resolved).
    pub fn read_link(&self, rel: &str) -> Option<PathBuf> {
        self.tick();
        std::fs::read_link(self.checked_path(rel).ok()?).ok()
    }

    /// Write a kernel attribute (sysfs). The kernel decides what happens.
    pub fn write_attr(&self, rel: &str, value: &str) -> io::Result<()> {
        let path = clean_rel(rel)?;
        tracing::debug!(path = %path.display(), value, "sysfs write");
        self.kernel.write_attr(&self.root, &path, value)
    }

    /// Run a program with an argument vector (never a shell).
    pub fn run(&self, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        tracing::debug!(cmd = %cmd, "run");
        self.kernel.run(self, cmd)
    }
}
