//! The simulator's own small interface: a program run ([`Cmd`] in, [`RunOutput`] out) and a
//! root-relative view of a simulated root ([`SimHost`]). It mirrors the product's `host` seam on
//! purpose but does not use it: the simulator does not depend on vgpuctl (vgpuctl's binary
//! depends on the simulator, and a crate cannot depend on a crate that depends on it). The
//! binary's wiring (installer/simulator.rs) adapts [`SimKernel`] to vgpuctl's `Kernel`.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::SimKernel;

/// A program with its argument vector, as the product hands it to a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The caller's bound on the run: a program that would take longer (`hang=PROGRAM`, a
    /// `sriov-manage` slower than this) gives up at it with [`TimedOut`], as a killed one would.
    pub timeout: Option<std::time::Duration>,
}

/// A simulated run that did not end within its caller's bound (the product kills a real one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub program: String,
    pub after: std::time::Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {} s: {}",
            self.after.as_secs_f64().ceil() as u64,
            self.program
        )
    }
}

impl std::error::Error for TimedOut {}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: None,
        }
    }
    pub fn timeout(mut self, d: std::time::Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    /// The program's file name (`/usr/lib/nvidia/sriov-manage` -> `sriov-manage`).
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// What a simulated program answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn ok(stdout: impl Into<String>) -> RunOutput {
        RunOutput {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn failed(status: i32, stderr: impl Into<String>) -> RunOutput {
        RunOutput {
            status,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
    pub fn success(&self) -> bool {
        self.status == 0
    }
    /// The last `n` lines of combined output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let all: Vec<&str> = self.stdout.lines().chain(self.stderr.lines()).collect();
        all[all.len().saturating_sub(n)..].join("\n")
    }
}

/// A simulated root and the kernel that plays it. Reads are plain file reads (the kernel keeps
/// the files current on its own, as a real kernel keeps sysfs current); writes and runs go to
/// the kernel.
#[derive(Clone)]
pub struct SimHost {
    root: PathBuf,
    kernel: Arc<SimKernel>,
}

impl fmt::Debug for SimHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHost").field("root", &self.root).finish()
    }
}

fn clean_rel(rel: &str) -> io::Result<PathBuf> {
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

impl SimHost {
    pub fn new(root: impl Into<PathBuf>, kernel: Arc<SimKernel>) -> SimHost {
        SimHost {
            root: root.into(),
            kernel,
        }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn kernel(&self) -> &Arc<SimKernel> {
        &self.kernel
    }
    /// The absolute path of a root-relative path (one leaving the root maps to one that cannot
    /// exist).
    pub fn path(&self, rel: &str) -> PathBuf {
        match clean_rel(rel) {
            Ok(p) => self.root.join(p),
            Err(_) => self.root.join(".vgpuctl-invalid-path"),
        }
    }
    pub fn read(&self, rel: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(clean_rel(rel)?))
    }
    pub fn read_trim(&self, rel: &str) -> Option<String> {
        self.read(rel).ok().map(|s| s.trim().to_string())
    }
    pub fn read_bytes(&self, rel: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.root.join(clean_rel(rel)?))
    }
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }
    pub fn is_dir(&self, rel: &str) -> bool {
        self.path(rel).is_dir()
    }
    /// Entry names of a directory, sorted; empty when it is missing.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
    /// The last component of a symlink's target (`driver` -> `nvidia`).
    pub fn link_name(&self, rel: &str) -> Option<String> {
        let target = std::fs::read_link(self.path(rel)).ok()?;
        target.file_name()?.to_str().map(String::from)
    }
    /// Write a kernel attribute (sysfs): the simulated kernel decides what happens.
    pub fn write_attr(&self, rel: &str, value: &str) -> io::Result<()> {
        self.kernel.write_attr(&self.root, &clean_rel(rel)?, value)
    }
    /// Run a simulated program.
    pub fn run(&self, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        self.kernel.run(&self.root, cmd)
    }
}
