//! What answers a sysfs write or a program run: the real kernel, or the simulator.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::Host;

/// A program with its argument vector. There is no shell anywhere in vgpuctl: a value with shell
/// metacharacters reaches the program as one plain argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Root-relative file that receives the full output (appended), e.g. the driver install log.
    pub log_to: Option<String>,
    /// How long the program may run before it is killed; None = [`default_timeout`].
    pub timeout: Option<Duration>,
}

/// How long a program may run unless its caller says otherwise. Every run is bounded: a hung
/// program would otherwise hold what its caller holds (sriov-manage's lock) until systemd kills
/// the whole unit. The figures are generous upper bounds for a healthy host (choices, not
/// measurements): the driver installer and package installs build kernel modules (DKMS) and
/// get half an hour; initramfs and boot-loader tools ten minutes; the rest two.
pub fn default_timeout(program_name: &str) -> Duration {
    let secs = match program_name {
        n if n.ends_with(".run") => 1800,
        "apt-get" | "apt" | "dnf" | "yum" | "dpkg" | "rpm" | "sh" | "bash" => 1800,
        "update-initramfs" | "dracut" | "update-grub" | "grub-mkconfig" | "grub2-mkconfig"
        | "grubby" | "proxmox-boot-tool" | "kernel-install" => 600,
        "sriov-manage" => 180,
        _ => 120,
    };
    Duration::from_secs(secs)
}

/// The error of a run that outlived its bound (the same words for the real and the simulated
/// kernel): `timed out after N s: PROGRAM`.
pub fn timed_out(program: &str, after: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "timed out after {} s: {program}",
        after.as_secs_f64().ceil() as u64
    )
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_to: None,
            timeout: None,
        }
    }
    /// Kill the program (its whole process group) when it runs longer than `d`.
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }
    /// The bound this run gets: its own, or its program's default.
    pub fn bound(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| default_timeout(self.name()))
            .max(Duration::from_millis(1))
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
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn log_to(mut self, rel: impl Into<String>) -> Cmd {
        self.log_to = Some(rel.into());
        self
    }
    /// The program's file name (`/usr/lib/nvidia/sriov-manage` -> `sriov-manage`).
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }
}

impl fmt::Display for Cmd {
    /// Shown quoted the way a shell user would type it, for plans and logs only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

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

/// How far vgpuctl reaches into the system behind a root: whether its programs can be run and
/// its running kernel acted on. The answer decides what setup may do, not scattered checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The running system of this machine (`--root /`): programs run, sysfs is the kernel's.
    Live,
    /// The simulator plays the programs and the kernel.
    Simulated,
    /// A root that is not the running system (a mounted image, a chroot, a copied tree): its
    /// files can be read and edited and its units linked, but no program is ever run for it,
    /// because a program would act on this machine instead.
    Offline,
}

impl Reach {
    /// Programs can be run and answer for this root.
    pub fn runs_programs(self) -> bool {
        self != Reach::Offline
    }
}

/// The seam between vgpuctl and what answers it. A kernel keeps the files under the root
/// current on its own (a real kernel's sysfs does; the simulator applies its delayed events on
/// its own clock), so reads are plain file reads and never call into it.
pub trait Kernel: Send + Sync {
    /// What this kernel reaches for the host at `root`.
    fn reach(&self, root: &Path) -> Reach;
    /// Write a sysfs attribute. `rel` is already checked to stay inside the root.
    fn write_attr(&self, root: &Path, rel: &Path, value: &str) -> io::Result<()>;
    fn run(&self, host: &Host, cmd: &Cmd) -> anyhow::Result<RunOutput>;
}

/// The real kernel: sysfs writes are plain writes, programs are run with duct, each bounded.
pub struct RealKernel;

impl Kernel for RealKernel {
    fn reach(&self, root: &Path) -> Reach {
        if is_running_root(root) {
            Reach::Live
        } else {
            Reach::Offline
        }
    }

    fn write_attr(&self, root: &Path, rel: &Path, value: &str) -> io::Result<()> {
        // sysfs wants one write(2) of the whole value; no truncation games, no temp files.
        let path = if is_running_root(root) {
            root.join(rel)
        } else {
            super::resolve::resolve(root, None, rel, super::resolve::Last::Follow)?
        };
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn run(&self, host: &Host, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        if !self.reach(host.root()).runs_programs() {
            // Any program started here runs on this machine, whatever its path: for a foreign
            // root it would act on the wrong system. Setup refuses such steps up front; this is
            // the last line.
            bail!(
                "refusing to run `{cmd}` for host root {}: it is not the running system, and a \
                 program would act on this machine; run vgpuctl inside that system",
                host.root().display()
            );
        }
        let out = run_bounded(cmd)?;
        let result = out;
        if let Some(log) = &cmd.log_to {
            append_log(host, log, cmd, &result)?;
        }
        Ok(result)
    }
}

/// Run `cmd` (duct, an argument vector, never a shell) in its own process group, capturing its
/// output, and kill the group when it outlives [`Cmd::bound`]: a child it forked that keeps the
/// pipes open dies with it, so duct's readers end.
fn run_bounded(cmd: &Cmd) -> anyhow::Result<RunOutput> {
    use std::os::unix::prelude::CommandExt;
    let bound = cmd.bound();
    let mut e = duct::cmd(&cmd.program, &cmd.args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|c| {
            c.process_group(0);
            Ok(())
        });
    for (k, v) in &cmd.env {
        e = e.env(k, v);
    }
    let handle = e
        .start()
        .with_context(|| format!("could not start `{}`", cmd.program))?;
    let start = Instant::now();
    loop {
        if let Some(out) = handle.try_wait()? {
            return Ok(RunOutput {
                status: out.status.code().unwrap_or(128),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if start.elapsed() >= bound {
            break;
        }
        std::thread::sleep(Duration::from_millis(10).min(bound.saturating_sub(start.elapsed())));
    }
    for pid in handle.pids() {
        let pgid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = handle.kill();
    let _ = handle.wait();
    Err(timed_out(&cmd.to_string(), bound))
}

/// True when `root` is this machine's `/`.
pub fn is_running_root(root: &Path) -> bool {
    root == Path::new("/") || root.canonicalize().is_ok_and(|p| p == Path::new("/"))
}

/// Append a command's full output to a root-relative log file.
pub fn append_log(host: &Host, rel: &str, cmd: &Cmd, out: &RunOutput) -> anyhow::Result<()> {
    let path = host.checked_path(rel)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open log {}", path.display()))?;
    writeln!(f, "$ {cmd}")?;
    f.write_all(out.stdout.as_bytes())?;
    f.write_all(out.stderr.as_bytes())?;
    writeln!(f, "[exit status {}]", out.status)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        let c = Cmd::new("/usr/lib/nvidia/sriov-manage")
            .arg("-e")
            .arg("0000:e8:00.0");
        assert_eq!(
            c.to_string(),
            "/usr/lib/nvidia/sriov-manage -e 0000:e8:00.0"
        );
        let c = Cmd::new("grubby").arg("--args=intel_iommu=on iommu=pt");
        assert_eq!(c.to_string(), "grubby '--args=intel_iommu=on iommu=pt'");
        assert_eq!(c.name(), "grubby");
    }

    #[test]
    fn tail_takes_last_lines() {
        let o = RunOutput {
            status: 1,
            stdout: "a\nb\nc\n".into(),
            stderr: "d\n".into(),
        };
        assert_eq!(o.tail(2), "c\nd");
    }
}

#[cfg(test)]
mod bounded {
    use super::*;

    /// The bounded runner itself (not for any host root): a program that outlives its bound is
    /// killed with the children it forked, and the error names the bound and the program.
    #[test]
    fn a_run_past_its_bound_is_killed_with_its_process_group() {
        let c = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(300));
        let e = run_bounded(&c).unwrap_err().to_string();
        assert_eq!(e, "timed out after 1 s: /bin/sh -c 'sleep 30 & sleep 30'");
        let ok = run_bounded(&Cmd::new("/bin/sh").args(["-c", "echo hi; exit 3"])).unwrap();
        assert_eq!((ok.status, ok.stdout.as_str()), (3, "hi\n"));
    }

    #[test]
    fn every_program_has_a_bound_and_the_installer_a_long_one() {
        assert!(default_timeout("NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run").as_secs() >= 1800);
        assert_eq!(
            Cmd::new("/usr/lib/nvidia/sriov-manage").bound().as_secs(),
            180
        );
        assert_eq!(
            Cmd::new("systemctl")
                .timeout(Duration::from_secs(7))
                .bound()
                .as_secs(),
            7
        );
    }
}
