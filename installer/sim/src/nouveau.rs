//! nouveau on the simulated host: who holds it, what `modprobe -r nouveau` does, and the NVIDIA
//! installer's refusal while it drives a GPU (installer/sim/README.md, "nouveau").

use std::collections::BTreeMap;

use super::state::State;

/// nvidia-installer's error, word for word (NVIDIA/nvidia-installer `kernel.c`,
/// `check_for_nouveau`), then the question it asks and, unattended (`-s`), its answer and the
/// closing error, as public installer logs show them.
pub(crate) const INSTALLER_REFUSAL: &str = "ERROR: The Nouveau kernel driver is currently in use by your system.  This driver is incompatible with the NVIDIA driver, and must be disabled before proceeding.  Please consult the NVIDIA driver README and your Linux distribution's documentation for details on how to correctly disable the Nouveau kernel driver.\n\
-> For some distributions, Nouveau can be disabled by adding a file in the modprobe configuration directory.  Would you like nvidia-installer to attempt to create this modprobe file for you? (Answer: No)\n\
ERROR: Installation has failed.  Please see the file '/var/log/nvidia-installer.log' for details.  You may find suggestions on fixing installation problems in the README available on the Linux driver download page at www.nvidia.com.\n";

/// The installer's test (`nouveau_is_present`): some PCI device's driver is nouveau. Loaded
/// but driving nothing does not count.
pub(crate) fn drives_a_device(st: &State) -> bool {
    st.bound.values().any(|d| d == "nouveau")
}

/// The console is on nouveau's framebuffer (fbcon holds a reference on the module) when it
/// drives a GPU, unless
/// `nouveau_fbcon=0`: a headless server whose console is on the BMC's VGA. The default is a
/// guess (the common desktop-like case, seen in public `lsmod` captures as a use count of 1).
pub(crate) fn holds_console(st: &State) -> bool {
    st.modules.contains("nouveau")
        && drives_a_device(st)
        && st.opts.get("nouveau_fbcon").map(String::as_str) != Some("0")
}

/// References on the module that are not other modules (the fbcon console).
pub(crate) fn extra_refs(st: &State, module: &str) -> usize {
    usize::from(module == "nouveau" && holds_console(st))
}

/// `/proc/fb`: the framebuffers, `<minor> <name>`; nouveau's is `nouveaudrmfb`.
pub(crate) fn proc_fb(st: &State) -> String {
    if holds_console(st) {
        "0 nouveaudrmfb\n".into()
    } else {
        String::new()
    }
}

/// `modprobe -r nouveau`: refused while the console holds it; else every device it drives is
/// unbound (the kernel unbinds a PCI driver's devices when its module goes) and the module goes,
/// with the helpers nothing else uses. Returns the error text, if any.
pub(crate) fn remove(st: &mut State) -> Option<String> {
    if holds_console(st) {
        return Some("modprobe: FATAL: Module nouveau is in use.\n".into());
    }
    let held: Vec<String> = st
        .bound
        .iter()
        .filter(|(_, d)| *d == "nouveau")
        .map(|(a, _)| a.clone())
        .collect();
    let bound: &mut BTreeMap<String, String> = &mut st.bound;
    for a in held {
        bound.remove(&a);
    }
    st.modules.remove("nouveau");
    for helper in ["drm_kms_helper", "drm"] {
        st.modules.remove(helper);
    }
    None
}
