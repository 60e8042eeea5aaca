//! The kernel the boot loader starts next must have an nvidia module before the reboot, or the
//! host comes up with no vGPUs (recorded-behaviour.md §7): build it with DKMS, installing that
//! kernel's headers with the package manager first when they are missing (what an operator does
//! by hand, and what the issue asks of setup). Refused before any change only when nothing could
//! build it: the driver is not registered with DKMS.

use crate::exit::Failure;
use crate::facts::kernels::{build_args, next_boot_need, running_need, NextBoot};
use crate::facts::system::{Os, OsFamily};
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
            NextBoot::Build { version } => push_build(plan, &version, which),
            // Headers alone do not build anything without a DKMS registration: refused below.
            NextBoot::NoHeaders { version, .. } if kernels.dkms.is_empty() => {
                return Err(no_dkms(&version, which))
            }
            NextBoot::NoHeaders { version, package } => {
                let id = format!("kernel-headers:{version}");
                if !plan.steps.iter().any(|s| s.id == id) {
                    plan.push(
                        id,
                        format!(
                            "Install {package}, the headers of kernel {version} ({which}), so \
                             DKMS can build the NVIDIA module for it"
                        ),
                        Action::Run(headers_install(&f.os, &package)),
                    );
                }
                push_build(plan, &version, which);
            }
            NextBoot::NoDkms { version } => return Err(no_dkms(&version, which)),
        }
    }
    Ok(())
}

fn push_build(plan: &mut Plan, version: &str, which: &str) {
    let id = format!("kernel-module:{version}");
    if plan.steps.iter().any(|s| s.id == id) {
        return;
    }
    plan.push(
        id,
        format!("Build the NVIDIA module for kernel {version}, {which}"),
        Action::Run(Cmd::new("dkms").args(build_args(version))),
    );
}

/// The package manager's install of one package, unattended (no debconf question can stop it).
fn headers_install(os: &Os, package: &str) -> Cmd {
    if os.family == OsFamily::Rhel {
        Cmd::new("dnf").args(["install", "-y", package])
    } else {
        Cmd::new("apt-get")
            .args(["install", "-y", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
    }
}

fn no_dkms(version: &str, which: &str) -> Failure {
    Failure::usage(format!(
        "kernel {version}, {which}, has no nvidia module and the vGPU host driver is not \
         registered with DKMS, so nothing builds one: booted, this host has no vGPUs. Reinstall \
         the driver with `--dkms` (as vgpuctl installs it), or boot a kernel it was built for. \
         Nothing was changed."
    ))
}
