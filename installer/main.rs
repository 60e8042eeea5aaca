//! The binary: parse the command line, open the host, dispatch to the command's module in `cmd/`.

use clap::Parser;
use vgpuctl::cli::{Cli, Command, DriverCommand};
use vgpuctl::cmd;
use vgpuctl::exit::{Exit, Failure};
use vgpuctl::opener::{self, HostOpener};

// The simulator is linked only with the `simulator` feature (on by default); without it the
// binary has no simulator code and refuses --simulate (exit 2).
#[cfg(feature = "simulator")]
mod simulator;

fn main() {
    let cli = Cli::parse();
    vgpuctl::logging::init(cli.global.verbose);
    #[cfg(feature = "simulator")]
    let opener = simulator::Simulator;
    #[cfg(not(feature = "simulator"))]
    let opener = opener::RealOnly;
    let mut code = match run(cli, &opener) {
        Ok(code) => code as i32,
        // A cancel is the operator's choice, not an error: its message alone.
        Err(failure) if failure.code == Exit::Cancelled => {
            eprintln!("{failure}");
            failure.code as i32
        }
        Err(failure) => {
            eprintln!("vgpuctl: error: {failure}");
            failure.code as i32
        }
    };
    // Output that could not be written (a full device, an I/O error) fails a run that otherwise
    // succeeded; a closed pipe does not (the reader chose to stop reading).
    if let Some(e) = vgpuctl::out::error() {
        eprintln!("vgpuctl: error: {e}");
        if code == 0 {
            code = 1;
        }
    }
    std::process::exit(code);
}

/// One command on the host the global options name.
fn run(cli: Cli, opener: &dyn HostOpener) -> Result<Exit, Failure> {
    let host = opener::open_host(&cli.global, opener)?;
    match cli.command {
        Command::Check { json } => cmd::check::run(&host, json),
        Command::Status { json, libvirt_xml } => {
            cmd::inspect::status(&host, json, libvirt_xml.as_deref())
        }
        Command::Export {
            mdevctl,
            nova,
            kubevirt,
            proxmox,
            output,
        } => {
            use cmd::export::Format;
            use vgpuctl::platforms::Platform;
            let format = match (mdevctl, nova, kubevirt, proxmox) {
                (true, ..) => Format::Mdevctl,
                (_, true, ..) => Format::Platform(Platform::Nova),
                (_, _, true, _) => Format::Platform(Platform::Kubevirt),
                (.., true) => Format::Platform(Platform::Proxmox),
                _ => Format::Profile,
            };
            cmd::export::run(&host, format, output.as_deref())
        }
        Command::Types { json } => cmd::inspect::types(&host, json),
        Command::Import {
            dry_run,
            vf_timeout,
        } => cmd::import::run(&host, dry_run, std::time::Duration::from_secs(vf_timeout)),
        Command::Setup(args) => cmd::setup::run(&host, &args, &cli.global),
        Command::Uninstall { yes, all } => cmd::uninstall::run(&host, yes, all),
        Command::Driver(DriverCommand::Fetch(a)) => cmd::driver::run(&host, &a, false, &cli.global),
        Command::Driver(DriverCommand::Install(a)) => {
            cmd::driver::run(&host, &a, true, &cli.global)
        }
        Command::Restore {
            vf_timeout,
            dry_run,
        } => cmd::restore::run(&host, vf_timeout, dry_run),
        Command::Sim(c) => opener.sim_command(&host, &cli.global, &c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpuctl::opener::RealOnly;

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
