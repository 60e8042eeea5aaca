//! Opening the host the global options name (`--root`, `--simulate`, `--sim-opt`).

use crate::cli::{Global, SimCommand};
use crate::exit::{Exit, Failure};
use crate::host::Host;

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
    // A mistyped --root would otherwise read as a host with nothing on it ("no NVIDIA GPU").
    match std::fs::metadata(&g.root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Failure::usage(format!(
                "--root {}: not a directory",
                g.root.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::usage(format!(
                "--root {}: the directory does not exist",
                g.root.display()
            )))
        }
        Err(e) => return Err(Failure::usage(format!("--root {}: {e}", g.root.display()))),
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

/// A path as an absolute one, for a command printed to be run from anywhere.
pub fn real_path(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// `vgpuctl` with this run's --root (when not `/`) and --simulate, then `args`.
pub fn next_command(global: &crate::cli::Global, args: &[&str]) -> String {
    let root = (global.root != std::path::Path::new("/")).then(|| real_path(&global.root));
    crate::wizard::next::command(root.as_deref(), global.simulate.as_deref(), args)
}
