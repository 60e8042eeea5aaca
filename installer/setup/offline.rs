//! Setup on an offline root (a mounted image, a chroot, a copied tree: see
//! [`crate::host::Reach::Offline`]). Files can be edited and units enabled the way
//! `systemctl --root` does it (the `*.wants/` link only, no daemon-reload), but a step that needs
//! the running system of that root (a program run, a sysfs write, a reboot) cannot be done from
//! here: a program started here acts on this machine. Such a plan is refused before any change.

use crate::host::Host;
use crate::profile::{Profile, RebootPolicy};

use super::plan::{Action, Plan};

/// What a step needs the running system for, or None when editing files under the root does it.
pub fn needs_running_system(action: &Action) -> Option<String> {
    match action {
        Action::WriteFile { .. }
        | Action::WriteBytes { .. }
        | Action::CopyBinary { .. }
        | Action::EnableUnit { .. }
        | Action::DisableUnit { .. }
        | Action::RemoveFile { .. }
        | Action::PinProfile { .. }
        | Action::PinImported { .. } => None,
        Action::Run(cmd) => Some(format!("`{cmd}`")),
        Action::WriteAttr { path, .. } => Some(format!("the kernel attribute {path}")),
        Action::InstallDriver { .. } => {
            Some("the driver installer (the .run file's --check and install)".into())
        }
        Action::EnableSriov { pf, .. } => Some(format!("`sriov-manage -e {pf}`")),
        Action::CreateVgpus { gpu, .. } => Some(format!("creating vGPUs on {gpu} (sysfs)")),
        Action::MigMode { gpu } => Some(format!("`{}`", crate::vgpu::mig::mode_on(gpu))),
        Action::CreateGpuInstances { gpu, .. } => Some(format!(
            "creating GPU instances on {gpu} (`nvidia-smi mig`)"
        )),
        Action::RestorePins { .. } => {
            Some("creating the pinned vGPUs (sysfs, `sriov-manage`)".into())
        }
        Action::RemoveVgpus { devices } => {
            Some(format!("removing {} vGPU(s) (sysfs)", devices.len()))
        }
    }
}

/// `systemctl daemon-reload` only tells a running systemd to re-read its units; an offline root
/// has none, and its systemd reads them when it boots.
fn is_daemon_reload(action: &Action) -> bool {
    matches!(action, Action::Run(c) if c.name() == "systemctl" && c.args == ["daemon-reload"])
}

/// The plan as it is carried out on an offline root (no daemon-reload), and the steps of it that
/// need the running system. Pure.
pub fn adapt(mut plan: Plan, profile: &Profile, reboot_reasons: &[String]) -> (Plan, Vec<String>) {
    plan.steps.retain(|s| !is_daemon_reload(&s.action));
    let mut blocked: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| needs_running_system(&s.action))
        .collect();
    if !reboot_reasons.is_empty() && profile.host.reboot == RebootPolicy::Auto {
        blocked.push("the reboot (`systemctl reboot`, reboot = \"auto\")".into());
    }
    if profile.cloudpods.as_ref().is_some_and(|c| c.restart) {
        blocked.push("the CloudPods host agent restart (`kubectl`, restart = true)".into());
    }
    if profile.nova.as_ref().is_some_and(|c| c.restart) {
        blocked
            .push("the nova-compute restart (`systemctl restart`, [nova] restart = true)".into());
    }
    blocked.dedup();
    (plan, blocked)
}

/// The refusal for an offline root, naming the steps that need its running system.
pub fn refusal<S: AsRef<str>>(host: &Host, steps: &[S]) -> String {
    let steps: Vec<&str> = steps.iter().map(|s| s.as_ref()).collect();
    format!(
        "{} is not the running system (a mounted image, a chroot or a copied tree): vgpuctl reads \
         and edits its files and links its units there, but never runs its programs, which would \
         act on this machine. Needed here and refused: {}. Nothing was changed. Run vgpuctl inside \
         that system (in a chroot with the system running, or on the host itself).",
        host.root().display(),
        steps.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Cmd;

    #[test]
    fn daemon_reload_is_dropped_file_steps_pass_programs_are_named() {
        let mut plan = Plan::default();
        plan.push(
            "grub",
            "",
            Action::WriteFile {
                path: "/etc/default/grub".into(),
                before: None,
                after: String::new(),
                mode: 0o644,
            },
        );
        plan.push("update-grub", "", Action::Run(Cmd::new("update-grub")));
        plan.push(
            "daemon-reload",
            "",
            Action::Run(Cmd::new("systemctl").arg("daemon-reload")),
        );
        plan.push(
            "enable",
            "",
            Action::EnableUnit {
                unit: "vgpuctl-restore.service".into(),
            },
        );
        let mut profile = Profile::default();
        profile.host.reboot = RebootPolicy::Auto;
        let (plan, blocked) = adapt(plan, &profile, &["kernel arguments".into()]);
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["grub", "update-grub", "enable"]);
        assert_eq!(blocked.len(), 2, "{blocked:?}");
        assert!(blocked[0].contains("update-grub"));
        assert!(blocked[1].contains("systemctl reboot"));
    }
}
