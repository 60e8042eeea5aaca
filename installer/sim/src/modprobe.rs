//! The nvidia module's options as modprobe would pass them when it loads the module at boot
//! (recorded-behaviour §6: the scheduling policy is `options nvidia
//! NVreg_RegistryDwords="RmPVMRL=<value>"` in modprobe.d, taking effect when the module loads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `NVreg_RegistryDwords` as modprobe would pass it to the nvidia module: the last one on an
/// `options nvidia` line of the modprobe.d files, read in file-name order with /etc hiding the
/// same name in /run, /usr/lib and /lib (modprobe.d(5)). Quoted or bare; "" when none.
pub fn nvidia_registry_dwords(root: &Path) -> String {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in [
        "etc/modprobe.d",
        "run/modprobe.d",
        "usr/lib/modprobe.d",
        "lib/modprobe.d",
    ] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                by_name.entry(name).or_insert_with(|| e.path());
            }
        }
    }
    let mut found = String::new();
    for path in by_name.values() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for l in text.lines().map(str::trim) {
            let mut w = l.split_whitespace();
            if w.next() != Some("options") || w.next() != Some("nvidia") {
                continue;
            }
            if let Some(i) = l.find("NVreg_RegistryDwords=") {
                let v = &l[i + "NVreg_RegistryDwords=".len()..];
                found = match v.strip_prefix('"') {
                    Some(q) => q[..q.find('"').unwrap_or(q.len())].to_string(),
                    None => v.split_whitespace().next().unwrap_or("").to_string(),
                };
            }
        }
    }
    found
}
