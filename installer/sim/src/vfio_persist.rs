//! `--sim-opt vfio_persist=cmdline|modprobe|driverctl|udev`: a previous admin persisted the GPUs'
//! vfio-pci binding (recorded-behaviour.md §7). Setting the option plants the source; every boot
//! then gives the GPUs to vfio-pci for as long as the source is still there, as a real boot does
//! (a runtime unbind alone is undone by the next boot).
//!
//! The sources, as the guides and tools that write them do:
//! - `cmdline`: `vfio-pci.ids=10de:DDDD` on the kernel command line, through the boot loader;
//! - `modprobe`: `/etc/modprobe.d/vfio.conf` with `options vfio-pci ids=10de:DDDD` and
//!   `softdep nvidia pre: vfio-pci`;
//! - `driverctl`: `/etc/driverctl.d/pci-<address>` holding `vfio-pci` per GPU, as
//!   `driverctl set-override` saves it (its `load-override` reads only a non-empty file);
//! - `udev`: `/etc/udev/rules.d/99-vfio.rules` setting `ATTR{driver_override}="vfio-pci"` for
//!   the GPUs' vendor and device ids.
//!
//! The boot reads the sources with a simple parser of its own (a guess at what the kernel,
//! modprobe, driverctl and udev together do, good enough for the lines tests write). The
//! modprobe.d options take effect without an initramfs rebuild here (a real initramfs may carry
//! its own copy of modprobe.d: a guess that the copy follows the root).

use std::path::Path;

use anyhow::{bail, Result};

use super::bootcfg;
use super::models::{Boot, Model};
use super::seam::{Cmd, SimHost};
use super::state::State;

pub const KINDS: &[&str] = &["cmdline", "modprobe", "driverctl", "udev"];

pub const MODPROBE_CONF: &str = "etc/modprobe.d/vfio.conf";
pub const UDEV_RULES: &str = "etc/udev/rules.d/99-vfio.rules";
pub const DRIVERCTL_DIR: &str = "etc/driverctl.d";

fn id(m: &Model) -> String {
    format!("10de:{:04x}", m.device)
}

/// Write the persistent source `kind` for every GPU of the model (as an admin's guide would).
pub fn plant(host: &SimHost, m: &Model, kind: &str) -> Result<()> {
    let root = host.root();
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent"))?;
        std::fs::write(p, text)?;
        Ok(())
    };
    match kind {
        "cmdline" => add_boot_arg(host, m, &format!("vfio-pci.ids={}", id(m)))?,
        "modprobe" => write(
            MODPROBE_CONF,
            &format!(
                "# GPU passthrough\noptions vfio-pci ids={}\nsoftdep nvidia pre: vfio-pci\n",
                id(m)
            ),
        )?,
        "driverctl" => {
            for pf in m.pfs {
                write(&format!("{DRIVERCTL_DIR}/pci-{pf}"), "vfio-pci\n")?;
            }
        }
        "udev" => write(
            UDEV_RULES,
            &format!(
                "# Give the GPUs to vfio-pci\nACTION==\"add\", SUBSYSTEM==\"pci\", ATTR{{vendor}}==\"0x10de\", ATTR{{device}}==\"0x{:04x}\", ATTR{{driver_override}}=\"vfio-pci\"\n",
                m.device
            ),
        )?,
        other => bail!(
            "--sim-opt vfio_persist={other:?}: expected one of {}",
            KINDS.join(", ")
        ),
    }
    Ok(())
}

/// Add one argument to the kernel command line the next boot uses, through the boot loader.
fn add_boot_arg(host: &SimHost, m: &Model, arg: &str) -> Result<()> {
    let root = host.root();
    let run = |c: Cmd| -> Result<()> {
        let out = host.run(&c)?;
        if !out.success() {
            bail!("planting {arg}: `{c}` failed: {}", out.tail(5));
        }
        Ok(())
    };
    match m.boot {
        Boot::Grub => {
            let p = root.join("etc/default/grub");
            let t = std::fs::read_to_string(&p)?;
            let t = bootcfg::edit_assignment(&t, "GRUB_CMDLINE_LINUX_DEFAULT", |o| {
                bootcfg::edit_args(o, arg, "")
            });
            std::fs::write(&p, t)?;
            run(Cmd::new("update-grub"))
        }
        Boot::Bls => {
            run(Cmd::new("grubby").args(["--update-kernel=ALL", &format!("--args={arg}")]))
        }
        Boot::SystemdBoot => {
            let p = root.join("etc/kernel/cmdline");
            let t = std::fs::read_to_string(&p)?;
            std::fs::write(&p, format!("{}\n", bootcfg::edit_args(t.trim(), arg, "")))?;
            run(Cmd::new("proxmox-boot-tool").arg("refresh"))
        }
    }
}

/// At boot: the GPUs a persistent source still gives to vfio-pci get it (and, for driverctl and
/// udev, their `driver_override`), whatever driver they would otherwise get.
pub fn claim_at_boot(root: &Path, m: &Model, st: &mut State) {
    let mut any = false;
    for pf in m.pfs {
        let Some(over) = claimed(root, m, &st.cmdline, pf) else {
            continue;
        };
        any = true;
        st.pending
            .retain(|p| !matches!(&p.event, super::state::Event::Bind { dev, .. } if dev == pf));
        st.bound.insert(pf.to_string(), "vfio-pci".into());
        if over {
            st.overrides.insert(pf.to_string(), "vfio-pci".into());
        }
    }
    if any {
        st.modules
            .extend(["vfio_pci", "vfio_pci_core", "vfio", "vfio_iommu_type1"].map(String::from));
    }
}

/// Some(through driver_override) when a source claims `pf` for vfio-pci.
fn claimed(root: &Path, m: &Model, cmdline: &str, pf: &str) -> Option<bool> {
    let ours = |list: &str| {
        list.split(',')
            .any(|i| i.trim().to_ascii_lowercase().starts_with(&id(m)))
    };
    let by_cmdline = cmdline.split_whitespace().any(|w| {
        w.strip_prefix("vfio-pci.ids=")
            .or_else(|| w.strip_prefix("vfio_pci.ids="))
            .is_some_and(ours)
    });
    let by_modprobe = conf_lines(root, "etc/modprobe.d", ".conf").iter().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() > 2
            && w[0] == "options"
            && matches!(w[1], "vfio-pci" | "vfio_pci")
            && w[2..]
                .iter()
                .any(|o| o.strip_prefix("ids=").is_some_and(ours))
    });
    if by_cmdline || by_modprobe {
        return Some(false);
    }
    let driverctl = std::fs::read_to_string(root.join(format!("{DRIVERCTL_DIR}/pci-{pf}")))
        .is_ok_and(|t| t.trim() == "vfio-pci");
    let udev = conf_lines(root, "etc/udev/rules.d", ".rules")
        .iter()
        .any(|l| {
            l.contains("ATTR{driver_override}=\"vfio-pci\"")
                && (!l.contains("ATTR{vendor}==") || l.contains("ATTR{vendor}==\"0x10de\""))
                && (!l.contains("ATTR{device}==")
                    || l.contains(&format!("ATTR{{device}}==\"0x{:04x}\"", m.device)))
                && (!l.contains("KERNEL==") || l.contains(&format!("KERNEL==\"{pf}\"")))
        });
    (driverctl || udev).then_some(true)
}

/// The non-comment lines of the files in `dir` ending in `ext`.
fn conf_lines(root: &Path, dir: &str, ext: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Each source survives reboots until it is removed; a runtime unbind does not stop it.
    #[test]
    fn each_source_binds_the_gpus_at_every_boot_while_it_is_there() {
        for kind in super::KINDS {
            let d = tempfile::tempdir().unwrap();
            let opt = vec![format!("vfio_persist={kind}")];
            let h = crate::open(d.path(), "a40x8-ready", &opt).unwrap();
            crate::reboot(&h, &[]).unwrap();
            let h = crate::open(d.path(), "a40x8-ready", &[]).unwrap();
            let drv = "sys/bus/pci/devices/0000:67:00.0/driver";
            assert_eq!(h.link_name(drv).as_deref(), Some("vfio-pci"), "{kind}");
            // Remove the source: the next boot gives the GPU to nvidia.
            let root = d.path();
            match *kind {
                "cmdline" => {
                    let p = root.join("etc/default/grub");
                    let t = std::fs::read_to_string(&p).unwrap();
                    std::fs::write(&p, t.replace(" vfio-pci.ids=10de:2235", "")).unwrap();
                    h.run(&crate::Cmd::new("update-grub")).unwrap();
                }
                "modprobe" => std::fs::remove_file(root.join(super::MODPROBE_CONF)).unwrap(),
                "driverctl" => std::fs::remove_dir_all(root.join(super::DRIVERCTL_DIR)).unwrap(),
                _ => std::fs::remove_file(root.join(super::UDEV_RULES)).unwrap(),
            }
            crate::reboot(&h, &[]).unwrap();
            let h = crate::open(d.path(), "a40x8-ready", &[]).unwrap();
            assert_eq!(h.link_name(drv).as_deref(), Some("nvidia"), "{kind}");
        }
    }
}
