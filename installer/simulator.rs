//! The binary's wiring of the simulator (crate `vgpuctl-sim`, installer/sim/) into vgpuctl,
//! compiled only with the `simulator` feature. The library never names the simulator: it takes
//! a [`HostOpener`] from here, and the simulated kernel reaches it through the same `Kernel`
//! seam as the real one, adapted below. Integration tests include this file too (tests/common/).
//!
//! Why an adapter and not `impl Kernel` inside the simulator: the simulator must not depend on
//! vgpuctl, because vgpuctl's binary depends on the simulator (a cycle cargo refuses). So the
//! simulator has its own small interface (write an attribute, run a program, open/attach/reboot)
//! and this file translates; the install log (`Cmd::log_to`) is vgpuctl's business and is
//! written here with vgpuctl's own `append_log`, as the real kernel's runs do.

// Each user (the binary, each test crate) uses a different part of this file.
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::Arc;

use vgpuctl::cli::{Global, SimCommand};
use vgpuctl::exit::{Exit, Failure};
use vgpuctl::host::{self, Cmd, Host, Kernel, Reach, RunOutput};
use vgpuctl::opener::{relaunch_prefix, HostOpener};

/// vgpuctl's `Kernel` answered by the simulated kernel.
struct SimulatedKernel(vgpuctl_sim::SimHost);

impl Kernel for SimulatedKernel {
    fn reach(&self, _root: &Path) -> Reach {
        Reach::Simulated
    }

    fn write_attr(&self, root: &Path, rel: &Path, value: &str) -> io::Result<()> {
        self.0.kernel().write_attr(root, rel, value)
    }

    fn run(&self, host: &Host, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        let sim_cmd = vgpuctl_sim::Cmd {
            program: cmd.program.clone(),
            args: cmd.args.clone(),
            env: cmd.env.clone(),
            // The simulated kernel honours the same bound as the real one.
            timeout: Some(cmd.bound()),
        };
        let out = match self.0.kernel().run(host.root(), &sim_cmd) {
            Ok(out) => out,
            Err(e) => match e.downcast_ref::<vgpuctl_sim::TimedOut>() {
                Some(t) => return Err(host::kernel::timed_out(&cmd.to_string(), t.after)),
                None => return Err(e),
            },
        };
        let out = RunOutput {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        };
        if let Some(log) = &cmd.log_to {
            host::kernel::append_log(host, log, cmd, &out)?;
        }
        Ok(out)
    }
}

/// vgpuctl's view of a simulated host.
pub fn host_of(sim: vgpuctl_sim::SimHost) -> Host {
    Host::new(sim.root().to_path_buf(), Arc::new(SimulatedKernel(sim)))
}

/// Open (build or load) the simulated host of `model` at `root`, as `--simulate` does.
pub fn open(root: &Path, model: &str, opts: &[String]) -> anyhow::Result<Host> {
    vgpuctl_sim::open(root, model, opts).map(host_of)
}

/// The simulator behind `--simulate`.
pub struct Simulator;

impl HostOpener for Simulator {
    fn open(&self, g: &Global) -> Result<Option<Host>, Failure> {
        let sim_model = vgpuctl_sim::detect(&g.root);
        match (&g.simulate, sim_model) {
            (Some(model), _) => {
                if g.root == Path::new("/") {
                    return Err(Failure::usage(
                        "--simulate needs --root DIR (a directory for the simulated host), never /",
                    ));
                }
                open(&g.root, model, &g.sim_opts)
                    .map(Some)
                    .map_err(Failure::usage_from)
            }
            (None, Some(model)) => Err(Failure::usage(format!(
                "{} is a simulated host (model {model}): pass --simulate {model}",
                g.root.display()
            ))),
            (None, None) => Ok(None),
        }
    }

    fn sim_command(&self, host: &Host, g: &Global, c: &SimCommand) -> Result<Exit, Failure> {
        let sim = vgpuctl_sim::attach(host.root()).map_err(Failure::from)?;
        match c {
            SimCommand::Reboot => {
                let report =
                    vgpuctl_sim::reboot(&sim, &relaunch_prefix(g)).map_err(Failure::from)?;
                vgpuctl::outln!("{report}");
            }
            SimCommand::Info => {
                let st = vgpuctl_sim::state_of(&sim).map_err(Failure::from)?;
                vgpuctl::outln!("simulated host {} at {}", st.model, host.root().display());
                vgpuctl::outln!("boots: {}, boot id {}", st.boot_count, st.boot_id);
                for (k, v) in &st.opts {
                    vgpuctl::outln!("sim-opt {k}={v}");
                }
            }
        }
        Ok(Exit::Ok)
    }
}
