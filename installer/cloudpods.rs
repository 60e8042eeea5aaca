//! CloudPods: keep `nvidia_vgpu_pfs:` in the host agent's `host.conf` equal to the parents of the
//! pinned vGPUs, and restart the agent after a change when the profile says so.
//!
//! CloudPods' host agent opens `/sys/class/mdev_bus/0000:<entry>` for every entry and takes the
//! UUID-named children as vGPUs (see [`crate::edit::hostconf`] for the sources), so:
//! - an entry is an mdev *parent* (on SR-IOV GPUs, the VF holding the vGPU), written `bb:dd.f`;
//! - vGPUs on NVIDIA's vendor-specific VFIO interface have no mdev parent: CloudPods cannot
//!   discover them, and listing their VFs would only point it at directories that do not exist.
//!   We say so instead of listing them;
//! - the agent reads the list when it starts, so a changed list needs a restart of its
//!   DaemonSet (`kubectl -n onecloud rollout restart ds default-host`).
//!
//! A restart that failed is remembered in [`RESTART_PENDING`] and retried by the next setup or
//! restore, even though the file is then already right.

use std::io::ErrorKind;

use anyhow::{anyhow, bail, Context};

use crate::edit::hostconf::{self, HostConfError};
use crate::host::{Cmd, Host, WriteOpts};
use crate::pci::PciAddr;
use crate::pins::Pins;
use crate::profile::Profile;

/// Marker: host.conf changed but the agent was not restarted yet.
pub const RESTART_PENDING: &str = "var/lib/vgpuctl/cloudpods-restart-pending";

/// The restart the CloudPods docs give for the host agent.
pub fn restart_cmd() -> Cmd {
    Cmd::new("kubectl").args(["-n", "onecloud", "rollout", "restart", "ds", "default-host"])
}

/// What host.conf should list, and what the operator must know about what it cannot list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `bb:dd.f`, sorted, without duplicates.
    pub pfs: Vec<String>,
    pub warnings: Vec<String>,
}

/// The mdev parents of the pinned vGPUs in CloudPods' `bb:dd.f` form, in PCI order. Pure.
pub fn wanted(pins: &Pins) -> Wanted {
    let mut w = Wanted::default();
    let mut vendor_vfio = Vec::new();
    let mut other_domain = Vec::new();
    for v in &pins.vgpus {
        if v.interface == "vendor-vfio" {
            vendor_vfio.push(v.parent.clone());
            continue;
        }
        // Non-PCI parents (mtty, vfio_ap) are not NVIDIA GPUs: nothing for CloudPods' list.
        let Ok(a) = PciAddr::parse(&v.parent) else {
            continue;
        };
        if a.domain != 0 {
            other_domain.push(v.parent.clone());
            continue;
        }
        let short = a.short();
        if !w.pfs.contains(&short) {
            w.pfs.push(short);
        }
    }
    // PCI order (fixed-width lower-case hex sorts as text): stable whatever order pins came in.
    w.pfs.sort();
    if !vendor_vfio.is_empty() {
        w.warnings.push(format!(
            "{} vGPU(s) use NVIDIA's vendor-specific VFIO interface (VF {}): CloudPods finds \
             vGPUs only as mdev devices under /sys/class/mdev_bus, so it cannot discover them \
             and they are not listed in nvidia_vgpu_pfs. Give these VFs to VMs as PCI devices \
             instead (`vgpuctl status --libvirt-xml` prints the <hostdev> elements).",
            vendor_vfio.len(),
            vendor_vfio.join(", ")
        ));
    }
    if !other_domain.is_empty() {
        w.warnings.push(format!(
            "vGPU parent(s) {} are outside PCI domain 0000, which nvidia_vgpu_pfs cannot \
             express (CloudPods prepends 0000:): they are not listed",
            other_domain.join(", ")
        ));
    }
    w
}

fn bracket(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

/// Bring `[cloudpods] host_conf` of `profile` (normally the active profile) in line with `pins` and restart the host agent when asked to. `None` when the profile has no
/// `[cloudpods]` section; otherwise what was done, warnings included, to print.
///
/// Errors (host.conf missing or not editable, the restart failed) say what to do next; the
/// file is never left half-written (atomic write, first version kept under
/// `/var/lib/vgpuctl/backups/`).
pub fn sync(host: &Host, profile: &Profile, pins: &Pins) -> anyhow::Result<Option<String>> {
    let Some(cfg) = &profile.cloudpods else {
        return Ok(None);
    };
    let path = &cfg.host_conf;
    let rel = path.trim_start_matches('/');
    let want = wanted(pins);
    let text = match host.read(rel) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "CloudPods: {path} does not exist: is the CloudPods host agent installed on this \
             host? Install it first, or set host_conf in the profile's [cloudpods] section to \
             its configuration file, then run again"
        ),
        Err(e) => return Err(e).with_context(|| format!("CloudPods: cannot read {path}")),
    };
    let refs: Vec<&str> = want.pfs.iter().map(String::as_str).collect();
    let new = hostconf::set_pfs(&text, &refs).map_err(|e| match e {
        HostConfError::Unsupported { line, reason } => anyhow!(
            "CloudPods: {path}:{line}: {reason}; vgpuctl edits only a plain list such as \
             `nvidia_vgpu_pfs:` followed by `- 67:00.4` lines: fix the file by hand and run again"
        ),
        other => anyhow!("CloudPods: {path}: {other}"),
    })?;
    let mut lines = Vec::new();
    let changed = new != text;
    if changed {
        let before = hostconf::read_pfs(&text).ok().flatten().unwrap_or_default();
        host.write_file(rel, new.as_bytes(), WriteOpts::default())
            .with_context(|| format!("CloudPods: cannot update {path}"))?;
        lines.push(format!(
            "CloudPods: {path}: nvidia_vgpu_pfs is now {} (was {}); the first version is kept in /{}",
            bracket(&want.pfs),
            bracket(&before),
            Host::backup_rel(rel)
        ));
    } else {
        lines.push(format!(
            "CloudPods: {path} already lists the {} vGPU parent(s) in nvidia_vgpu_pfs",
            want.pfs.len()
        ));
    }
    lines.extend(want.warnings.iter().map(|w| format!("CloudPods: {w}")));
    let pending = host.exists(RESTART_PENDING);
    let cmd = restart_cmd();
    match (cfg.restart, changed || pending) {
        (true, true) => {
            // Remembered before it is tried: a failure (or a power cut) is retried.
            if let Some(why) = host.run_remembered(RESTART_PENDING, &cmd)? {
                lines.push(format!(
                    "CloudPods: restarting the host agent failed: `{cmd}` {why}. Run it by hand \
                     where kubectl reaches the cluster; vgpuctl tries again at the next setup or \
                     restore"
                ));
                bail!("{}", lines.join("\n"));
            }
            lines.push(format!("CloudPods: restarted the host agent (`{cmd}`)"));
        }
        (false, true) if changed => lines.push(format!(
            "CloudPods: the host agent reads the list when it starts: run `{cmd}` (or set \
             restart = true in [cloudpods])"
        )),
        _ => {}
    }
    Ok(Some(lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::host::{Kernel, RunOutput};
    use crate::profile::{CloudpodsConfig, SavedVgpu};

    /// A kernel that records program runs and answers them with a fixed status.
    struct Recorder {
        runs: Mutex<Vec<String>>,
        status: Mutex<i32>,
    }

    impl Kernel for Recorder {
        fn reach(&self, _: &Path) -> crate::host::Reach {
            crate::host::Reach::Simulated
        }
        fn write_attr(&self, _: &Path, _: &Path, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn run(&self, _: &Host, cmd: &Cmd) -> anyhow::Result<RunOutput> {
            self.runs.lock().unwrap().push(cmd.to_string());
            let st = *self.status.lock().unwrap();
            Ok(if st == 0 {
                RunOutput::ok("daemonset.apps/default-host restarted\n")
            } else {
                RunOutput::failed(
                    st,
                    "error: the server doesn't have a resource type \"ds\"\n",
                )
            })
        }
    }

    fn pin(parent: &str, interface: &str) -> SavedVgpu {
        SavedVgpu {
            uuid: uuid::Uuid::new_v4().to_string(),
            type_id: "nvidia-565".into(),
            type_name: "NVIDIA A40-24Q".into(),
            parent: parent.into(),
            gpu: Some("0000:e8:00.0".into()),
            interface: interface.into(),
            gi_profile: None,
        }
    }

    /// The pins a profile built by [`profile`] stands for (the tests keep both in one value).
    fn pins_of(p: &Profile) -> Pins {
        Pins {
            sriov: Vec::new(),
            mixed_size: Vec::new(),
            vgpus: p.vgpus.clone(),
        }
    }

    fn profile(pins: &[(&str, &str)], restart: bool) -> Profile {
        Profile {
            vgpus: pins.iter().map(|(p, i)| pin(p, i)).collect(),
            cloudpods: Some(CloudpodsConfig {
                restart,
                ..CloudpodsConfig::default()
            }),
            ..Profile::default()
        }
    }

    /// The seed's host.conf shape: comments, other keys, the operator's hand-written list.
    const HOST_CONF: &str = "# host agent\nregion: region0\nnetworks:\n- enp3s0/br0/10.127.100.2\n# 把所有的vgpu的PF全部写上\nnvidia_vgpu_pfs:\n- 67:00.0\n- 67:00.4\n- e8:00.4  # db01\nhostname: control01\n";

    fn host(status: i32) -> (tempfile::TempDir, Host, Arc<Recorder>) {
        let dir = tempfile::tempdir().unwrap();
        let k = Arc::new(Recorder {
            runs: Mutex::new(Vec::new()),
            status: Mutex::new(status),
        });
        let h = Host::new(dir.path(), k.clone());
        (dir, h, k)
    }

    #[test]
    fn wanted_parents_short_form_dedup_and_warnings() {
        let p = profile(
            &[
                ("0000:e8:00.4", "mdev"),
                ("0000:e8:04.0", "mdev"),
                ("0000:e8:00.4", "mdev"),
                ("mtty", "mdev"),
                ("0001:05:00.4", "mdev"),
                ("0000:41:00.4", "vendor-vfio"),
            ],
            false,
        );
        let w = wanted(&pins_of(&p));
        assert_eq!(w.pfs, vec!["e8:00.4", "e8:04.0"]);
        assert_eq!(w.warnings.len(), 2, "{w:?}");
        assert!(
            w.warnings[0].contains("vendor-specific VFIO")
                && w.warnings[0].contains("0000:41:00.4")
        );
        assert!(w.warnings[1].contains("0001:05:00.4"));
        assert_eq!(wanted(&Pins::default()), Wanted::default());
    }

    #[test]
    fn no_section_no_work() {
        let (_d, h, k) = host(0);
        let mut p = profile(&[("0000:e8:00.4", "mdev")], true);
        p.cloudpods = None;
        assert_eq!(sync(&h, &p, &pins_of(&p)).unwrap(), None);
        assert!(k.runs.lock().unwrap().is_empty());
    }

    #[test]
    fn sets_the_list_keeps_the_rest_backs_up_and_restarts_once() {
        let (d, h, k) = host(0);
        h.write_file(
            "etc/yunion/host.conf",
            HOST_CONF.as_bytes(),
            WriteOpts::state(),
        )
        .unwrap();
        let p = profile(&[("0000:e8:00.4", "mdev"), ("0000:e8:04.0", "mdev")], true);
        let msg = sync(&h, &p, &pins_of(&p)).unwrap().unwrap();
        assert!(
            msg.contains("[e8:00.4, e8:04.0] (was [67:00.0, 67:00.4, e8:00.4])"),
            "{msg}"
        );
        assert!(msg.contains("restarted the host agent"), "{msg}");
        let now = h.read("etc/yunion/host.conf").unwrap();
        assert_eq!(
            now,
            "# host agent\nregion: region0\nnetworks:\n- enp3s0/br0/10.127.100.2\n# 把所有的vgpu的PF全部写上\nnvidia_vgpu_pfs:\n- e8:00.4  # db01\n- e8:04.0\nhostname: control01\n"
        );
        let backup = std::fs::read_to_string(
            d.path()
                .join("var/lib/vgpuctl/backups/etc/yunion/host.conf"),
        )
        .unwrap();
        assert_eq!(backup, HOST_CONF);
        assert_eq!(
            *k.runs.lock().unwrap(),
            vec!["kubectl -n onecloud rollout restart ds default-host"]
        );
        assert!(!h.exists(RESTART_PENDING));
        // Second run: nothing changes, nothing restarts.
        let msg = sync(&h, &p, &pins_of(&p)).unwrap().unwrap();
        assert!(msg.contains("already lists the 2 vGPU parent(s)"), "{msg}");
        assert_eq!(k.runs.lock().unwrap().len(), 1);
        assert_eq!(h.read("etc/yunion/host.conf").unwrap(), now);
    }

    #[test]
    fn failed_restart_is_an_error_and_is_retried() {
        let (_d, h, k) = host(1);
        h.write_file(
            "etc/yunion/host.conf",
            HOST_CONF.as_bytes(),
            WriteOpts::state(),
        )
        .unwrap();
        let p = profile(&[("0000:67:00.4", "mdev")], true);
        let e = format!("{:#}", sync(&h, &p, &pins_of(&p)).unwrap_err());
        assert!(e.contains("nvidia_vgpu_pfs is now [67:00.4]"), "{e}");
        assert!(
            e.contains("exited with status 1") && e.contains("Run it by hand"),
            "{e}"
        );
        assert!(h.exists(RESTART_PENDING));
        // The file is right now; the next run still restarts, and clears the marker.
        *k.status.lock().unwrap() = 0;
        let msg = sync(&h, &p, &pins_of(&p)).unwrap().unwrap();
        assert!(
            msg.contains("already lists") && msg.contains("restarted"),
            "{msg}"
        );
        assert!(!h.exists(RESTART_PENDING));
        assert_eq!(k.runs.lock().unwrap().len(), 2);
    }

    #[test]
    fn without_restart_it_says_how() {
        let (_d, h, k) = host(0);
        h.write_file("etc/yunion/host.conf", b"region: r\n", WriteOpts::state())
            .unwrap();
        let p = profile(&[("0000:67:00.4", "mdev")], false);
        let msg = sync(&h, &p, &pins_of(&p)).unwrap().unwrap();
        assert!(
            msg.contains("run `kubectl -n onecloud rollout restart ds default-host`"),
            "{msg}"
        );
        assert!(k.runs.lock().unwrap().is_empty());
        assert_eq!(
            h.read("etc/yunion/host.conf").unwrap(),
            "region: r\nnvidia_vgpu_pfs:\n- \"67:00.4\"\n"
        );
    }

    #[test]
    fn vendor_vfio_only_warns_and_empties_the_list() {
        let (_d, h, _k) = host(0);
        h.write_file(
            "etc/yunion/host.conf",
            HOST_CONF.as_bytes(),
            WriteOpts::state(),
        )
        .unwrap();
        let p = profile(&[("0000:41:00.4", "vendor-vfio")], false);
        let msg = sync(&h, &p, &pins_of(&p)).unwrap().unwrap();
        assert!(msg.contains("cannot discover them"), "{msg}");
        assert_eq!(
            hostconf::read_pfs(&h.read("etc/yunion/host.conf").unwrap()).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn missing_or_unsupported_file_says_what_to_do() {
        let (_d, h, _k) = host(0);
        let p = profile(&[("0000:67:00.4", "mdev")], false);
        let e = format!("{:#}", sync(&h, &p, &pins_of(&p)).unwrap_err());
        assert!(
            e.contains("/etc/yunion/host.conf does not exist") && e.contains("host_conf"),
            "{e}"
        );
        h.write_file(
            "etc/yunion/host.conf",
            b"a: 1\nnvidia_vgpu_pfs: [67:00.0,\n  68:00.0]\n",
            WriteOpts::state(),
        )
        .unwrap();
        let e = format!("{:#}", sync(&h, &p, &pins_of(&p)).unwrap_err());
        assert!(
            e.starts_with("CloudPods: /etc/yunion/host.conf:2: the flow list"),
            "{e}"
        );
    }
}
