//! The host view: every read, write and program run goes through [`Host`].
//!
//! Paths are always root-relative ("sys/bus/pci/devices", "/etc/default/grub"): they are joined
//! onto the host root (`--root`, default `/`), in the spirit of `systemctl --root` and mdevctl's
//! `MDEVCTL_ENV_ROOT`. What the kernel or a program does in response to a write or a run is the
//! business of a [`Kernel`]: the real one touches the real thing, the simulator plays it.

pub mod files;
pub mod kernel;
pub mod resolve;

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use files::WriteOpts;
pub use kernel::{Cmd, Kernel, Reach, RealKernel, RunOutput};
use resolve::Last;

/// A root-relative view of one host, plus the kernel that answers writes and program runs.
#[derive(Clone)]
pub struct Host {
    root: PathBuf,
    kernel: Arc<dyn Kernel>,
    /// The root is this machine's `/`: the kernel resolves symlinks inside it by itself.
    direct: bool,
    /// The root directory, opened on first use, for the fast path of [`resolve`].
    root_fd: Arc<std::sync::OnceLock<Option<std::os::fd::OwnedFd>>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("root", &self.root)
            .field("reach", &self.reach())
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
        let root = root.into();
        Host {
            direct: kernel::is_running_root(&root),
            root,
            kernel,
            root_fd: Arc::default(),
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

    /// The absolute path of a root-relative path, resolved inside the root. Panics never; a
    /// path that tries to leave the root (`..`, or a symlink climbing out) maps to a path that
    /// cannot exist, so reads fail and writes are refused by [`Host::checked_path`].
    pub fn path(&self, rel: &str) -> PathBuf {
        self.checked_path(rel)
            .unwrap_or_else(|_| self.root.join(".vgpuctl-invalid-path"))
    }

    /// Like [`Host::path`] but an error for a path leaving the root.
    pub fn checked_path(&self, rel: &str) -> io::Result<PathBuf> {
        self.resolved(rel, Last::Follow)
    }

    /// `rel` inside the root with every symlink resolved as `chroot` would see it (see
    /// [`resolve`]); with [`Last::Keep`] a symlink in the last place is the link itself.
    pub fn resolved(&self, rel: &str, last: Last) -> io::Result<PathBuf> {
        let clean = clean_rel(rel)?;
        if self.direct {
            return Ok(self.root.join(clean));
        }
        resolve::resolve(&self.root, self.root_fd(), &clean, last)
    }

    pub fn read(&self, rel: &str) -> io::Result<String> {
        let mut s = String::new();
        io::Read::read_to_string(&mut self.open(rel)?, &mut s)?;
        Ok(s)
    }

    /// Open a file for reading, resolved inside the root. Off `/` this is one `openat2` in the
    /// common case, as cheap as a plain open (the boot-time restore reads thousands of them).
    fn open(&self, rel: &str) -> io::Result<std::fs::File> {
        let clean = clean_rel(rel)?;
        if self.direct {
            return std::fs::File::open(self.root.join(clean));
        }
        if let Some(fd) = self.root_fd() {
            if let Some(f) = resolve::open_beneath(fd, &clean, nix::fcntl::OFlag::O_RDONLY)? {
                return Ok(std::fs::File::from(f));
            }
        }
        std::fs::File::open(resolve::resolve(&self.root, None, &clean, Last::Follow)?)
    }

    fn root_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.root_fd
            .get_or_init(|| resolve::open_root(&self.root))
            .as_ref()
            .map(std::os::fd::AsFd::as_fd)
    }

    /// The file's content trimmed, or None when it cannot be read.
    pub fn read_trim(&self, rel: &str) -> Option<String> {
        self.read(rel).ok().map(|s| s.trim().to_string())
    }

    pub fn read_bytes(&self, rel: &str) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io::Read::read_to_end(&mut self.open(rel)?, &mut v)?;
        Ok(v)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.resolved(rel, Last::Keep)
            .map(|p| p.symlink_metadata().is_ok())
            .unwrap_or(false)
    }

    pub fn is_dir(&self, rel: &str) -> bool {
        self.checked_path(rel).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Entry names of a directory, sorted; empty when it is missing or unreadable.
    pub fn list(&self, rel: &str) -> Vec<String> {
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
        let target = std::fs::read_link(self.resolved(rel, Last::Keep).ok()?).ok()?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(|s| s.to_string())
    }

    /// A symlink's target as stored (not resolved).
    pub fn read_link(&self, rel: &str) -> Option<PathBuf> {
        std::fs::read_link(self.resolved(rel, Last::Keep).ok()?).ok()
    }

    /// Write a kernel attribute (sysfs). The kernel decides what happens.
    pub fn write_attr(&self, rel: &str, value: &str) -> io::Result<()> {
        let path = clean_rel(rel)?;
        tracing::debug!(path = %path.display(), value, "sysfs write");
        self.kernel.write_attr(&self.root, &path, value)
    }

    /// Run a program with an argument vector (never a shell).
    /// Run `cmd` with `marker` written first and removed only once it succeeded, so a failure
    /// (or a power cut) leaves the marker for the next run to try again (the restarts of a
    /// platform's agent after its configuration changed). Err: the marker could not be written
    /// or removed; Ok(Some(why)): the command failed, the marker stays.
    pub fn run_remembered(&self, marker: &str, cmd: &Cmd) -> anyhow::Result<Option<String>> {
        self.write_file(marker, format!("{cmd}\n").as_bytes(), WriteOpts::state())?;
        let failure = match self.run(cmd) {
            Ok(out) if out.success() => None,
            Ok(out) => Some(format!(
                "exited with status {}: {}",
                out.status,
                out.tail(5)
            )),
            Err(e) => Some(format!("{e:#}")),
        };
        if failure.is_none() {
            self.remove_file(marker)?;
        }
        Ok(failure)
    }

    pub fn run(&self, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        tracing::debug!(cmd = %cmd, "run");
        self.kernel.run(self, cmd)
    }
}
