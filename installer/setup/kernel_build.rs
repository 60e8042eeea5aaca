//! The kernel the boot loader starts next must have an nvidia module before the reboot, or the
//! host comes up with no vGPUs (recorded-behaviour.md §7): build it with DKMS while its headers
//! are there, and refuse (before any change) with the package to install when they are not.

use crate::exit::Failure;
use crate::facts::kernels::{build_args, install_command, next_boot_need, running_need, NextBoot};
use crate::host::Cmd;

use super::observe::Facts;
use super::plan::{Action, Plan};

/// Append the build to `plan` (after a driver install it plans), or refuse. Pure.
pub fn plan(f: &Facts, plan: &mut Plan) -> Result<(), Failure> {
    // A driver this plan installs builds only for the running kernel.
    let installing = plan
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::InstallDriver { .. }));
    let installed = f.driver.installed();
    // The install this plan makes registers with DKMS (`.run --dkms`).
    let mut kernels = f.kernels.clone();
    if installing && kernels.dkms.is_empty() {
        kernels.dkms.push("(the driver this plan installs)".into());
    }
    // The running kernel first (booted without a module; it loads after the reboot the plan
    // already needs for a driver that is not loaded), then the next one.
    let needs = [
        (
            "the running kernel",
            running_need(&kernels, &f.os, installed),
        ),
        (
            "which the boot loader starts next",
            next_boot_need(&kernels, &f.os, installed || installing),
        ),
    ];
    for (which, need) in needs {
        match need {
            NextBoot::Ready => {}
            NextBoot::Build { version } => {
                let id = format!("kernel-module:{version}");
                if plan.steps.iter().any(|s| s.id == id) {
                    continue;
                }
                plan.push(
                    id,
                    format!("Build the NVIDIA module for kernel {version}, {which}"),
                    Action::Run(Cmd::new("dkms").args(build_args(&version))),
                );
            }
            NextBoot::NoHeaders { version, package } => {
                return Err(Failure::usage(format!(
                    "kernel {version}, {which}, has no nvidia module and its headers are not \
                     installed, so DKMS cannot build one: booted, this host has no vGPUs. \
                     Install {package} (`{}`), then run vgpuctl setup again. Nothing was changed.",
                    install_command(&f.os, &version)
                )))
            }
            NextBoot::NoDkms { version } => {
                return Err(Failure::usage(format!(
                    "kernel {version}, {which}, has no nvidia module and the vGPU host driver is \
                     not registered with DKMS, so nothing builds one: booted, this host has no \
                     vGPUs. Reinstall the driver with `--dkms` (as vgpuctl installs it), or boot \
                     a kernel it was built for. Nothing was changed."
                )))
            }
        }
    }
    Ok(())
}
