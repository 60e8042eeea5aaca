//! nouveau and the driver install: NVIDIA's `.run` installer refuses while nouveau drives a GPU
//! (NVIDIA/nvidia-installer `kernel.c`, `check_for_nouveau`: any PCI device whose `driver` link
//! names nouveau). It can be unloaded first only when nothing holds the module: its use count in
//! `/proc/modules` is 0 and no framebuffer of its (`/proc/fb`, fbcon's console) is registered.
//! Otherwise it goes with a blacklist, a rebuilt initramfs and a reboot.

use crate::facts::HostFacts;
use crate::host::Host;

/// What holds nouveau, as observed. Pure data; [`NouveauUse::judge`] is the logic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NouveauUse {
    /// The module is loaded (`/proc/modules`).
    pub loaded: bool,
    /// PCI devices (GPUs) whose driver is nouveau.
    pub drives: Vec<String>,
    /// The module's use count (third field of its `/proc/modules` line); None when unreadable.
    pub refs: Option<u32>,
    /// Modules that use it (fourth field), e.g. `ttm,drm_kms_helper` users listed by the kernel.
    pub users: Vec<String>,
    /// A framebuffer of nouveau's is registered (`/proc/fb`: `nouveaudrmfb`): the console may be on it.
    pub framebuffer: bool,
}

/// How to get nouveau out of the driver installer's way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not loaded, or loaded and driving no GPU: the installer runs.
    Clear,
    /// Drives a GPU but nothing holds it: `modprobe -r nouveau` unbinds it and unloads it.
    Unload,
    /// Drives a GPU and is held (why): only a blacklist, the initramfs and a reboot remove it.
    Reboot(String),
}

impl NouveauUse {
    /// Read the facts the verdict needs from `/proc/modules`, `/proc/fb` and the GPUs' drivers.
    pub fn observe(host: &Host, f: &HostFacts) -> NouveauUse {
        let drives = f
            .gpus
            .iter()
            .filter(|g| g.driver.as_deref() == Some("nouveau"))
            .map(|g| g.address.clone())
            .collect();
        NouveauUse::parse(
            &host.read("proc/modules").unwrap_or_default(),
            &host.read("proc/fb").unwrap_or_default(),
            drives,
        )
    }

    /// From the text of `/proc/modules` and `/proc/fb`, and the devices nouveau drives. Pure.
    pub fn parse(proc_modules: &str, proc_fb: &str, drives: Vec<String>) -> NouveauUse {
        let line = proc_modules
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&"nouveau"));
        let refs = line.as_ref().and_then(|w| w.get(2)?.parse().ok());
        let users = line
            .as_ref()
            .and_then(|w| w.get(3))
            .filter(|u| **u != "-")
            .map(|u| {
                u.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // `/proc/fb` lines are `<minor> <name>`; nouveau's DRM fbdev is `nouveaudrmfb`.
        let framebuffer = proc_fb
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|n| n.starts_with("nouveau"));
        NouveauUse {
            loaded: line.is_some(),
            drives,
            refs,
            users,
            framebuffer,
        }
    }

    pub fn judge(&self) -> Verdict {
        if !self.loaded || self.drives.is_empty() {
            return Verdict::Clear;
        }
        let mut held = Vec::new();
        if self.framebuffer {
            held.push("its framebuffer is registered (the console may be on it)".to_string());
        }
        match self.refs {
            Some(0) => {}
            Some(n) => held.push(format!("its use count is {n}")),
            None => held.push("its use count cannot be read from /proc/modules".into()),
        }
        if !self.users.is_empty() {
            held.push(format!("{} use it", self.users.join(", ")));
        }
        if held.is_empty() {
            Verdict::Unload
        } else {
            Verdict::Reboot(format!(
                "nouveau drives {} and cannot be unloaded: {}",
                self.drives.join(", "),
                held.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB: &str = "0 nouveaudrmfb\n";

    fn mods(line: &str) -> String {
        format!("kvm 1409024 1 kvm_intel, Live 0x0\n{line}\ndrm 622592 3 nouveau,drm_kms_helper, Live 0x0\n")
    }

    #[test]
    fn held_by_the_console_needs_a_reboot() {
        let u = NouveauUse::parse(
            &mods("nouveau 2355200 1 - Live 0x0000000000000000"),
            FB,
            vec!["0000:41:00.0".into()],
        );
        assert_eq!(u.refs, Some(1));
        assert!(u.framebuffer);
        let Verdict::Reboot(why) = u.judge() else {
            panic!("{u:?}")
        };
        assert!(
            why.contains("0000:41:00.0") && why.contains("use count is 1"),
            "{why}"
        );
    }

    #[test]
    fn unused_nouveau_can_be_unloaded() {
        let u = NouveauUse::parse(
            &mods("nouveau 2355200 0 - Live 0x0000000000000000"),
            "0 astdrmfb\n",
            vec!["0000:41:00.0".into()],
        );
        assert_eq!(u.judge(), Verdict::Unload);
    }

    #[test]
    fn a_module_user_or_an_unreadable_count_keeps_it() {
        let u = NouveauUse::parse(
            &mods("nouveau 2355200 0 nvidia_drm, Live 0x0"),
            "",
            vec!["0000:41:00.0".into()],
        );
        assert!(matches!(u.judge(), Verdict::Reboot(w) if w.contains("nvidia_drm use it")));
        let u = NouveauUse::parse(&mods("nouveau"), "", vec!["0000:41:00.0".into()]);
        assert!(matches!(u.judge(), Verdict::Reboot(_)));
    }

    #[test]
    fn loaded_but_driving_nothing_or_absent_is_clear() {
        let u = NouveauUse::parse(&mods("nouveau 2355200 0 - Live 0x0"), "", vec![]);
        assert_eq!(u.judge(), Verdict::Clear);
        let u = NouveauUse::parse(&mods("vfio 57344 0 - Live 0x0"), FB, vec!["x".into()]);
        assert!(!u.loaded);
        assert_eq!(u.judge(), Verdict::Clear);
    }
}
