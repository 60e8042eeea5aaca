//! Command-line interface: the clap types only. main.rs dispatches to `cmd/`; opening the
//! host the global options name is opener.rs's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 done, 1 failed, 2 bad input or usage, 3 stopped at a reboot checkpoint
            (reboot, then run the command it prints), 130 cancelled at a prompt.

Try it without a GPU on a simulated host (--simulate MODEL and --sim-opt KEY=VALUE go before
any command and are left out of the commands' help):
  vgpuctl --simulate a40x8 --root /tmp/a40 check
Models: a40x8 t4x2 l40s-vfio rhel-a10 proxmox-l4 cloud-h100 geforce, each also as MODEL-ready.";

const SETUP_AFTER_HELP: &str = "\
A profile (TOML) for --profile; `vgpuctl export` writes one from a host's live vGPUs:
  [host]
  reboot = \"prompt\"          # prompt | auto | never
  [driver]
  path = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"
  # or: url = \"https://...\" with sha256 = \"...\"
  [[gpus]]
  select = \"all\"             # all, a PCI address (0000:e8:00.0) or a model (A40)
  vgpu_type = \"A40-24Q\"      # `vgpuctl types` lists the names
  count = 2                  # vGPUs per selected GPU";

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
    /// Hidden from every command's help (the top-level help names it): a demo and test tool.
    #[arg(long, global = true, value_name = "MODEL", hide = true)]
    pub simulate: Option<String>,
    /// Simulator knob KEY=VALUE, repeatable (vf_delay_ms, create_ms, vfs_never, create_fail, ...).
    /// Knobs persist in the simulated root; an empty VALUE clears one.
    #[arg(long = "sim-opt", global = true, value_name = "KEY=VALUE", hide = true)]
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
    #[command(after_help = SETUP_AFTER_HELP)]
    Setup(SetupArgs),
    /// Re-enable SR-IOV and recreate the saved vGPUs (run by vgpuctl-restore.service at boot).
    Restore {
        /// Maximum seconds to wait for a GPU's virtual functions to appear.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        vf_timeout: u64,
        /// Show the restore plan (per GPU: SR-IOV, each wait and each sysfs write) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Per GPU: interface, VFs, vGPUs, and drift against the active profile.
    Status {
        /// Machine-readable status: per GPU its interface, VFs, vGPUs and drift (JSON).
        #[arg(long)]
        json: bool,
        /// Print libvirt <hostdev> elements for each vGPU (or only UUID).
        #[arg(long, value_name = "UUID", num_args = 0..=1, default_missing_value = "", conflicts_with = "json")]
        libvirt_xml: Option<String>,
    },
    /// The vGPU types each GPU offers now, on both kernel interfaces.
    Types {
        /// Machine-readable list: per GPU every type with its id, size and room left (JSON).
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
    /// Write the host's live vGPUs as a profile (or as mdevctl definitions, or as the
    /// configuration OpenStack Nova, KubeVirt or Proxmox VE needs to hand them to VMs).
    #[command(group(clap::ArgGroup::new("format").multiple(false).args(["mdevctl", "nova", "kubevirt", "proxmox"])))]
    Export {
        /// Write /etc/mdevctl.d/<parent>/<uuid> definitions (start manual) instead: one file per
        /// vGPU where mdevctl reads them, so not with -o.
        #[arg(long, conflicts_with = "output")]
        mdevctl: bool,
        /// Print the nova.conf fragment for the pinned vGPUs ([devices]/[mdev_*] on mdev,
        /// [pci] device_spec and alias on vendor-specific VFIO).
        #[arg(long)]
        nova: bool,
        /// Print the KubeVirt CR's permittedHostDevices for the pinned vGPUs (a merge patch).
        #[arg(long)]
        kubevirt: bool,
        /// Print Proxmox VE PCI resource mappings (/etc/pve/mapping/pci.cfg) for the GPUs.
        #[arg(long)]
        proxmox: bool,
        /// Write the profile (or the --nova, --kubevirt, --proxmox text) to FILE instead of
        /// standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Disable and remove the restore unit and the active profile (vGPUs are left alone).
    Uninstall {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Also undo setup: remove the vGPUs no VM uses, disable SR-IOV, restore the files setup
        /// changed from their first backups, and remove the driver vgpuctl installed.
        #[arg(long)]
        all: bool,
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
    /// Run unattended from this profile (TOML; an example is below).
    #[arg(long, value_name = "FILE", conflicts_with = "save_profile")]
    pub profile: Option<PathBuf>,
    /// Print every step with its effect and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (reboot = "prompt" then counts as "no": exit 3).
    #[arg(short, long)]
    pub yes: bool,
    /// Continue after a reboot (what vgpuctl-resume.service runs). Internal: hidden from help.
    #[arg(long, hide = true)]
    pub resume: bool,
    /// Accept a driver url without sha256 (the computed hash is printed to pin it).
    #[arg(long)]
    pub allow_unverified: bool,
    /// With --yes: accept a plan that unpins vGPUs (a lower count); each is named in the plan.
    #[arg(long)]
    pub allow_remove: bool,
    /// Write the wizard's answers as a profile to FILE (the wizard only: not with --profile).
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
    /// The profile whose [driver] section names the package (path, or url with sha256).
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Accept a driver url without sha256 (the computed hash is printed to pin it).
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
