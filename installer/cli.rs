//! Command-line interface: argument definitions and dispatch. Commands live in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::{Exit, Failure};
use crate::host::Host;

const AFTER_HELP: &str = "\
Exit codes: 0 done, 1 failed, 2 bad input or usage, 3 stopped at a reboot checkpoint
            (reboot, then run the same command again).

Try it without a GPU on a simulated host:
  vgpuctl --simulate a40x8 --root /tmp/a40 check
Models: a40x8 t4x2 l40s-vfio rhel-a10 proxmox-l4 cloud-h100 geforce, each also as MODEL-ready.";

#[derive(Parser, Debug)]
#[command(
    name = "vgpuctl",
    version,
    about = "Bring up NVIDIA vGPU on KVM hosts and keep it up across reboots",
    long_about = "Bring up NVIDIA vGPU on KVM hosts and keep it up across reboots.\n\n\
        `check` tells what this host needs; `setup` does it (a wizard on a terminal, or \
        unattended with --profile); a boot-time unit runs `restore` to bring SR-IOV and the saved \
        vGPUs back after every reboot.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Host root: every path is read and written below it (like `systemctl --root`).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Play a simulated host of MODEL on --root (created when DIR is empty). No GPU needed.
    #[arg(long, global = true, value_name = "MODEL")]
    pub simulate: Option<String>,
    /// Simulator knob KEY=VALUE, repeatable (vf_delay_ms, create_ms, vfs_never, create_fail, ...).
    /// Knobs persist in the simulated root; an empty VALUE clears one.
    #[arg(long = "sim-opt", global = true, value_name = "KEY=VALUE")]
    pub sim_opts: Vec<String>,
    /// More log output (repeat for more). VGPUCTL_LOG=debug works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read-only preflight: GPUs, IOMMU, boot loader, driver, what setup will do, what blocks it.
    Check {
        /// Machine-readable report: {ready, gpus[], findings[]}.
        #[arg(long)]
        json: bool,
    },
    /// Bring the host up: wizard on a terminal, or unattended with --profile.
    Setup(SetupArgs),
    /// Re-enable SR-IOV and recreate the saved vGPUs (run by vgpuctl-restore.service at boot).
    Restore {
        /// Maximum seconds to wait for a GPU's virtual functions to appear.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        vf_timeout: u64,
    },
    /// Per GPU: interface, VFs, vGPUs, and drift against the active profile.
    Status {
        #[arg(long)]
        json: bool,
        /// Print libvirt <hostdev> elements for each vGPU (or only UUID).
        #[arg(long, value_name = "UUID", num_args = 0..=1, default_missing_value = "")]
        libvirt_xml: Option<String>,
    },
    /// The vGPU types each GPU offers now, on both kernel interfaces.
    Types {
        #[arg(long)]
        json: bool,
    },
    /// Take vGPU and sriov-manage lines from /etc/rc.local and mdevctl definitions into the
    /// active profile, enable the restore unit, and comment the rc.local lines out.
    Import {
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Maximum seconds to wait for virtual functions to appear.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        vf_timeout: u64,
    },
    /// Write the host's live vGPUs as a profile (or as mdevctl definitions).
    Export {
        /// Write /etc/mdevctl.d/<parent>/<uuid> definitions (start manual) instead.
        #[arg(long)]
        mdevctl: bool,
        /// Write the profile to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Disable and remove the restore unit and the active profile (vGPUs are left alone).
    Uninstall {
        #[arg(long)]
        yes: bool,
    },
    /// The GRID host driver on its own: fetch (download, verify, extract) or install.
    #[command(subcommand)]
    Driver(DriverCommand),
    /// Simulator controls (with --simulate and --root).
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Args, Debug, Clone, Default)]
pub struct SetupArgs {
    /// Run unattended from this profile (TOML; see profiles/a40.toml).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Print every step with its effect and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (reboot = "prompt" then counts as "no": exit 3).
    #[arg(short, long)]
    pub yes: bool,
    /// Continue after a reboot (what vgpuctl-resume.service runs).
    #[arg(long)]
    pub resume: bool,
    /// Accept a driver url without sha256 (the computed hash is printed to pin it).
    #[arg(long)]
    pub allow_unverified: bool,
    /// With --yes: accept a plan that unpins vGPUs (a lower count); each is named in the plan.
    #[arg(long)]
    pub allow_remove: bool,
    /// Write the wizard's answers as a profile to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_profile: Option<PathBuf>,
    /// Maximum seconds to wait for virtual functions to appear.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub vf_timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum DriverCommand {
    /// Download (or copy), verify and extract the host package; prints its path.
    Fetch(DriverArgs),
    /// Fetch, then install the host package.
    Install(DriverArgs),
}

#[derive(Args, Debug)]
pub struct DriverArgs {
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    #[arg(long)]
    pub allow_unverified: bool,
    /// Also extract Guest_Drivers/ for copying into VMs.
    #[arg(long)]
    pub guest: bool,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Simulated reboot: new boot id, /proc/cmdline from the boot loader, VFs and vGPUs gone,
    /// enabled units run.
    Reboot,
    /// Create the simulated host (if needed) and print its model and knobs.
    Info,
}

/// Where hosts that are not this machine's kernel come from: the binary passes one in (the
/// simulator when it is built with the `simulator` feature, see installer/simulator.rs), so this
/// library never names or links what plays them.
pub trait HostOpener {
    /// The played host `g` names (`--simulate`, or a root that is a played host), or None
    /// when `g` names a real root.
    fn open(&self, g: &Global) -> Result<Option<Host>, Failure>;
    /// `vgpuctl sim ...` on a played host.
    fn sim_command(&self, host: &Host, g: &Global, c: &SimCommand) -> Result<Exit, Failure>;
}

/// A build without a simulator: only real roots; `--simulate` and `sim` are usage errors.
pub struct RealOnly;

const NO_SIMULATOR: &str = "this vgpuctl was built without the simulator (cargo feature \
                            `simulator`): --simulate, --sim-opt and `vgpuctl sim` are not \
                            available";

impl HostOpener for RealOnly {
    fn open(&self, g: &Global) -> Result<Option<Host>, Failure> {
        if g.simulate.is_some() || !g.sim_opts.is_empty() {
            return Err(Failure::usage(NO_SIMULATOR));
        }
        Ok(None)
    }
    fn sim_command(&self, _: &Host, _: &Global, _: &SimCommand) -> Result<Exit, Failure> {
        Err(Failure::usage(NO_SIMULATOR))
    }
}

/// Open the host the global options name.
pub fn open_host(g: &Global, opener: &dyn HostOpener) -> Result<Host, Failure> {
    if let Some(host) = opener.open(g)? {
        return Ok(host);
    }
    if g.simulate.is_some() || !g.sim_opts.is_empty() {
        return Err(Failure::usage("--sim-opt needs --simulate MODEL"));
    }
    Ok(Host::real(g.root.clone()))
}

/// The argv prefix that runs this binary on the same host (for units run by a simulated boot).
pub fn relaunch_prefix(g: &Global) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "vgpuctl".into());
    let mut v = vec![exe, "--root".into(), g.root.display().to_string()];
    if let Some(m) = &g.simulate {
        v.push("--simulate".into());
        v.push(m.clone());
    }
    v
}

pub fn run(cli: Cli, opener: &dyn HostOpener) -> Result<Exit, Failure> {
    let host = open_host(&cli.global, opener)?;
    match cli.command {
        Command::Check { json } => crate::cmd::check::run(&host, json),
        Command::Status { json, libvirt_xml } => {
            crate::cmd::inspect::status(&host, json, libvirt_xml.as_deref())
        }
        Command::Export { mdevctl, output } => {
            crate::cmd::export::run(&host, mdevctl, output.as_deref())
        }
        Command::Types { json } => crate::cmd::inspect::types(&host, json),
        Command::Import {
            dry_run,
            vf_timeout,
        } => crate::cmd::import::run(&host, dry_run, std::time::Duration::from_secs(vf_timeout)),
        Command::Setup(args) => crate::cmd::setup::run(&host, &args),
        Command::Uninstall { yes } => crate::cmd::uninstall::run(&host, yes),
        Command::Driver(DriverCommand::Fetch(a)) => crate::cmd::driver::run(&host, &a, false),
        Command::Driver(DriverCommand::Install(a)) => crate::cmd::driver::run(&host, &a, true),
        Command::Restore { vf_timeout } => crate::cmd::restore::run(&host, vf_timeout),
        Command::Sim(c) => opener.sim_command(&host, &cli.global, &c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("vgpuctl").chain(args.iter().copied()))
    }

    /// What a `--no-default-features` binary does (main.rs passes `RealOnly` there).
    #[test]
    fn a_build_without_the_simulator_refuses_simulate_and_checks_a_real_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        for args in [
            &["--simulate", "a40x8", "--root", root, "check"][..],
            &["--root", root, "--sim-opt", "create_ms=1", "check"][..],
            &["--root", root, "sim", "info"][..],
        ] {
            let err = run(cli(args), &RealOnly).unwrap_err();
            assert_eq!(err.code, Exit::Usage, "{args:?}");
            assert!(
                err.to_string().contains("built without the simulator"),
                "{args:?}: {err}"
            );
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
        // A real (empty, offline) root is checked without running anything.
        let code = run(cli(&["--root", root, "check", "--json"]), &RealOnly).unwrap();
        assert!(matches!(code, Exit::Ok | Exit::Failed), "{code:?}");
    }
}
