//! The vGPU scheduling policy as the NVIDIA driver's `RmPVMRL` registry key, set through the
//! module option `options nvidia NVreg_RegistryDwords="key=value;key=value"` in modprobe.d.
//!
//! Sources:
//! - NVIDIA vGPU user guide, "Changing Scheduling Behavior for Time-Sliced vGPUs", §"RmPVMRL
//!   Registry Key" and "Changing the Time-Sliced vGPU Scheduling Behavior for All GPUs": the low
//!   byte is the scheduler (0x00 best effort, the default; 0x01 equal share; 0x11 fixed share);
//!   `TT`, bits 16-23, is the time slice in ms for equal and fixed share, 0x01-0x1E (1-30 ms;
//!   00 = the driver's default, 2 ms up to 8 vGPUs per GPU, else 1 ms; above 0x1E capped). Its
//!   examples: `0x00030001` equal share with 3 ms, `0x00180011` fixed share with 24 ms. The value
//!   is read when the module loads ("Reboot your hypervisor host machine").
//!   *Open question*, to confirm on hardware (dmesg `NVRM: Software scheduler timeslice set to N
//!   ms`): since vGPU 15.0 the schedulers default to a strict round-robin policy whose averaging
//!   factor `AA` (bits 24-31) and frequency `FFF` (bits 12-23, overlapping `TT`) share the word,
//!   and the guide's RmPVMRL section gives equal share with 3 ms "without a strict round-robin
//!   policy" as `0x00030003` where its how-to gives `0x00030001` (fixed share, 24 ms, is
//!   `0x00180011` in both). The table that says which bit picks the mode is missing from the copy
//!   read (the NVIDIA AI Enterprise edition). vgpuctl writes the how-to form, `0x00TT0001` /
//!   `0x00TT0011`, as the brief does.
//! - open-gpu-kernel-modules `kernel-open/nvidia/nv-reg.h` (Option: RegistryDwords): a
//!   semicolon-separated list of `key=value` pairs. The module parameter is registered with
//!   permissions 0 (`module_param(x, charp, 0)`), so `/sys/module/nvidia/parameters/` does not show
//!   it; the loaded value is in `/proc/driver/nvidia/params` as `RegistryDwords: "..."`
//!   (`nv_procfs_read_params`).
//! - modprobe.d(5): every `options nvidia` line of every file adds to the module's options, files
//!   in name order; a parameter given twice takes the last value, so a second
//!   `NVreg_RegistryDwords` would silently replace the first one's other keys. Hence an edit
//!   merges into the setting that is in effect instead of adding one.
//!
//! Pure: texts in, texts out.

use crate::profile::Scheduler;

pub const KEY: &str = "RmPVMRL";
pub const PARAM: &str = "NVreg_RegistryDwords";
/// vgpuctl's own file, used when no file sets `NVreg_RegistryDwords` yet.
pub const OWN_FILE: &str = "/etc/modprobe.d/nvidia-vgpu-scheduler.conf";
/// The time slice NVIDIA allows (ms), guide §"RmPVMRL Registry Key", `TT`.
pub const TIMESLICE_MS: std::ops::RangeInclusive<u32> = 1..=30;
/// Where the loaded driver shows its options.
pub const PROC_PARAMS: &str = "/proc/driver/nvidia/params";

/// The `RmPVMRL` value for a scheduler and an optional time slice (already validated: only
/// equal or fixed share take one, within [`TIMESLICE_MS`]).
pub fn rmpvmrl(s: Scheduler, timeslice_ms: Option<u32>) -> u32 {
    let low = match s {
        Scheduler::BestEffort => 0x00,
        Scheduler::EqualShare => 0x01,
        Scheduler::FixedShare => 0x11,
    };
    low | (timeslice_ms.unwrap_or(0) & 0xff) << 16
}

/// As NVIDIA's guide writes them: `0x11`, `0x00020001`.
pub fn format_value(v: u32) -> String {
    if v <= 0xff {
        format!("0x{v:02x}")
    } else {
        format!("0x{v:08x}")
    }
}

/// The policy a value sets, in the profile's words (None: a value outside the guide's).
pub fn decode(v: u32) -> Option<(Scheduler, Option<u32>)> {
    let s = match v & 0xff {
        0x00 => Scheduler::BestEffort,
        0x01 => Scheduler::EqualShare,
        0x11 => Scheduler::FixedShare,
        _ => return None,
    };
    let tt = (v >> 16) & 0xff;
    Some((s, (tt != 0).then_some(tt)))
}

/// "equal-share, 2 ms time slice (RmPVMRL=0x00020001)".
pub fn describe(v: u32) -> String {
    match decode(v) {
        Some((s, Some(ms))) => format!(
            "{}, {ms} ms time slice ({KEY}={})",
            s.name(),
            format_value(v)
        ),
        Some((Scheduler::BestEffort, None)) => format!("best-effort ({KEY}={})", format_value(v)),
        Some((s, None)) => format!(
            "{}, the driver's default time slice ({KEY}={})",
            s.name(),
            format_value(v)
        ),
        None => format!(
            "{KEY}={} (not a policy NVIDIA's guide lists)",
            format_value(v)
        ),
    }
}

/// A number as the driver reads one: `0x..` hex or decimal.
pub fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The last `key=` in a `;`-separated list (the driver applies them in order).
pub fn get<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    list.split(';')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .next_back()
}

/// The list with `key=value` set: the first entry for the key replaced, later ones dropped,
/// appended when absent; every other entry kept as written.
pub fn set(list: &str, key: &str, value: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut done = false;
    for kv in list.split(';') {
        let is_key = kv
            .split_once('=')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key));
        if is_key {
            if !done {
                out.push(format!("{key}={value}"));
                done = true;
            }
        } else if !kv.trim().is_empty() {
            out.push(kv.to_string());
        }
    }
    if !done {
        out.push(format!("{key}={value}"));
    }
    out.join(";")
}

/// One `NVreg_RegistryDwords=` on an `options nvidia` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub file: String,
    /// The physical line (0-based) and the byte range of the whole `NVreg_RegistryDwords=...`.
    line: usize,
    span: std::ops::Range<usize>,
    /// The list, without quotes.
    pub value: String,
    /// An unmatched quote, or a quote inside a bare value: no list vgpuctl can rewrite safely.
    malformed: bool,
}

/// `NVreg_RegistryDwords=...` in one physical line of an `options nvidia` logical line: its span,
/// its list and whether it is malformed.
fn find_in(line: &str) -> Option<(std::ops::Range<usize>, String, bool)> {
    let mut from = 0;
    while let Some(i) = line[from..].find(PARAM) {
        let start = from + i;
        let at_word = start == 0 || line[..start].ends_with(char::is_whitespace);
        let rest = &line[start + PARAM.len()..];
        if at_word && rest.starts_with('=') {
            let v = &rest[1..];
            let vstart = start + PARAM.len() + 1;
            if let Some(q) = v.strip_prefix('"') {
                return Some(match q.find('"') {
                    Some(e) => (start..vstart + 1 + e + 1, q[..e].to_string(), false),
                    None => (start..line.len(), q.to_string(), true),
                });
            }
            let len = v.find(char::is_whitespace).unwrap_or(v.len());
            let value = v[..len].to_string();
            let malformed = value.contains('"');
            return Some((start..vstart + len, value, malformed));
        }
        from = start + PARAM.len();
    }
    None
}

/// Every setting, in the order modprobe applies them (`files` in modprobe's order).
pub fn settings(files: &[(String, String)]) -> Vec<Setting> {
    let mut out = Vec::new();
    for (file, text) in files {
        let mut in_nvidia = false;
        let mut continued = false;
        for (n, (body, _)) in super::lines(text).into_iter().enumerate() {
            let t = body.trim_start();
            if !continued {
                let mut w = t.split_whitespace();
                in_nvidia = w.next() == Some("options") && w.next() == Some("nvidia");
            }
            continued = body.trim_end().ends_with('\\');
            if !in_nvidia || (!continued && t.starts_with('#')) {
                continue;
            }
            if let Some((span, value, malformed)) = find_in(body) {
                out.push(Setting {
                    file: file.clone(),
                    line: n,
                    span,
                    value,
                    malformed,
                });
            }
        }
    }
    out
}

/// The setting the driver gets at its next load: the last one.
pub fn effective(files: &[(String, String)]) -> Option<Setting> {
    settings(files).pop()
}

/// `RmPVMRL` as modprobe.d configures it for the next load (None: not set, the driver's default).
pub fn configured(files: &[(String, String)]) -> Option<u32> {
    effective(files).and_then(|s| get(&s.value, KEY).and_then(parse_number))
}

/// `RmPVMRL` the loaded driver runs with, from `/proc/driver/nvidia/params`: Some(None) when the
/// loaded list does not set it, None when the text shows no `RegistryDwords` line.
pub fn loaded(proc_params: &str) -> Option<Option<u32>> {
    let line = proc_params
        .lines()
        .find_map(|l| l.trim().strip_prefix("RegistryDwords:"))?;
    let list = line.trim().trim_matches('"');
    Some(get(list, KEY).and_then(parse_number))
}

/// The file edit that makes `RmPVMRL=value` the one in effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub before: Option<String>,
    pub after: String,
}

/// The edit setting `RmPVMRL` to `value` (None: already in effect). `files` are the modprobe.d
/// files in modprobe's order, (path, text). The setting in effect is merged into, keeping its
/// other keys; a setting outside `/etc/modprobe.d` (a package's) is overridden by a copy of its
/// file of the same name in `/etc/modprobe.d` (modprobe.d(5): /etc wins), the package's file left
/// alone; with none, vgpuctl's own file. Refused (the reason) when the setting in effect has an
/// unmatched quote: modprobe's reading of such a line is not one to guess.
pub fn plan(files: &[(String, String)], value: u32) -> Result<Option<Edit>, String> {
    if let Some(s) = effective(files).filter(|s| s.malformed) {
        return Err(format!(
            "{} line {}: the {PARAM} value has an unmatched quote; fix it by hand (give it as \
             {PARAM}=\"key=value;key=value\")",
            s.file,
            s.line + 1
        ));
    }
    if configured(files) == Some(value) {
        return Ok(None);
    }
    let v = format_value(value);
    let Some(s) = effective(files) else {
        let before = files
            .iter()
            .find(|(p, _)| p == OWN_FILE)
            .map(|(_, t)| t.clone());
        let mut after = before.clone().unwrap_or_else(|| {
            "# Written by vgpuctl: the vGPU scheduling policy (profile [host] scheduler), read \
             when the nvidia module loads.\n"
                .to_string()
        });
        if !after.is_empty() && !after.ends_with('\n') {
            after.push('\n');
        }
        after.push_str(&format!("options nvidia {PARAM}=\"{KEY}={v}\"\n"));
        return Ok(Some(Edit {
            path: OWN_FILE.into(),
            before,
            after,
        }));
    };
    let text = &files.iter().find(|(p, _)| *p == s.file).expect("listed").1;
    let mut after = String::new();
    for (n, (body, end)) in super::lines(text).into_iter().enumerate() {
        if n == s.line {
            after.push_str(&body[..s.span.start]);
            after.push_str(&format!("{PARAM}=\"{}\"", set(&s.value, KEY, &v)));
            after.push_str(&body[s.span.end..]);
        } else {
            after.push_str(body);
        }
        after.push_str(end);
    }
    if s.file.starts_with("/etc/modprobe.d/") {
        Ok(Some(Edit {
            path: s.file,
            before: Some(text.clone()),
            after,
        }))
    } else {
        let name = s.file.rsplit('/').next().unwrap_or_default();
        Ok(Some(Edit {
            path: format!("/etc/modprobe.d/{name}"),
            before: None,
            after,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str, t: &str) -> (String, String) {
        (p.to_string(), t.to_string())
    }

    #[test]
    fn values_follow_nvidias_guide() {
        assert_eq!(rmpvmrl(Scheduler::BestEffort, None), 0x00);
        assert_eq!(rmpvmrl(Scheduler::EqualShare, None), 0x01);
        assert_eq!(rmpvmrl(Scheduler::FixedShare, None), 0x11);
        // The guide's examples.
        assert_eq!(rmpvmrl(Scheduler::EqualShare, Some(3)), 0x0003_0001);
        assert_eq!(rmpvmrl(Scheduler::FixedShare, Some(24)), 0x0018_0011);
        assert_eq!(format_value(0x11), "0x11");
        assert_eq!(format_value(0x0002_0001), "0x00020001");
        assert_eq!(decode(0x0018_0011), Some((Scheduler::FixedShare, Some(24))));
        assert_eq!(decode(0x11), Some((Scheduler::FixedShare, None)));
        assert_eq!(decode(0x05), None);
        assert_eq!(parse_number("0x11"), Some(0x11));
        assert_eq!(parse_number("17"), Some(17));
        assert!(describe(0x0002_0001).starts_with("equal-share, 2 ms"));
    }

    #[test]
    fn lists_keep_other_keys() {
        assert_eq!(
            set("PerfLevelSrc=0x2222", KEY, "0x01"),
            "PerfLevelSrc=0x2222;RmPVMRL=0x01"
        );
        assert_eq!(
            set("RmPVMRL=0x11;A=1;rmpvmrl=0x1", KEY, "0x01"),
            "RmPVMRL=0x01;A=1"
        );
        assert_eq!(set("", KEY, "0x01"), "RmPVMRL=0x01");
        assert_eq!(get("A=1;RmPVMRL=0x11;RmPVMRL=0x01", KEY), Some("0x01"));
    }

    #[test]
    fn a_fresh_host_gets_vgpuctls_file() {
        let e = plan(
            &[f("/etc/modprobe.d/blacklist.conf", "blacklist nouveau\n")],
            0x0002_0001,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.path, OWN_FILE);
        assert_eq!(e.before, None);
        assert!(e
            .after
            .ends_with("options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x00020001\"\n"));
        let applied = [f(OWN_FILE, &e.after)];
        assert_eq!(configured(&applied), Some(0x0002_0001));
        assert_eq!(plan(&applied, 0x0002_0001), Ok(None));
    }

    #[test]
    fn an_existing_setting_is_merged_not_duplicated() {
        let t = "# tuning\noptions nvidia NVreg_EnablePCIeGen3=1 NVreg_RegistryDwords=\"PerfLevelSrc=0x2222;RmPVMRL=0x11\" NVreg_X=1\r\n";
        let files = [f("/etc/modprobe.d/nvidia.conf", t)];
        assert_eq!(configured(&files), Some(0x11));
        let e = plan(&files, 0x01).unwrap().unwrap();
        assert_eq!(e.path, "/etc/modprobe.d/nvidia.conf");
        assert_eq!(e.before.as_deref(), Some(t));
        assert_eq!(
            e.after,
            "# tuning\noptions nvidia NVreg_EnablePCIeGen3=1 NVreg_RegistryDwords=\"PerfLevelSrc=0x2222;RmPVMRL=0x01\" NVreg_X=1\r\n"
        );
        // Unquoted, on a continued line.
        let t = "options nvidia \\\n  NVreg_RegistryDwords=PerfLevelSrc=0x2222\n";
        let e = plan(&[f("/etc/modprobe.d/a.conf", t)], 0x11)
            .unwrap()
            .unwrap();
        assert_eq!(
            e.after,
            "options nvidia \\\n  NVreg_RegistryDwords=\"PerfLevelSrc=0x2222;RmPVMRL=0x11\"\n"
        );
    }

    #[test]
    fn the_last_setting_is_the_one_in_effect() {
        // The seen-in-the-wild file with two lines: modprobe takes the second.
        let t = "options nvidia NVreg_RegistryDwords=\"PerfLevelSrc=0x2222\"\noptions nvidia NVreg_RegistryDwords=\"RmPVMRL=0x1\"\n";
        let files = [f("/etc/modprobe.d/nvidia.conf", t)];
        assert_eq!(configured(&files), Some(0x01));
        assert_eq!(plan(&files, 0x01), Ok(None));
        let e = plan(&files, 0x11).unwrap().unwrap();
        assert!(
            e.after.ends_with("NVreg_RegistryDwords=\"RmPVMRL=0x11\"\n"),
            "{}",
            e.after
        );
        assert!(e
            .after
            .starts_with("options nvidia NVreg_RegistryDwords=\"PerfLevelSrc=0x2222\"\n"));
        // Comments and other modules' options do not count.
        let files = [f(
            "/etc/modprobe.d/x.conf",
            "# options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x11\"\noptions nvidia_drm NVreg_RegistryDwords=\"RmPVMRL=0x11\"\n",
        )];
        assert_eq!(configured(&files), None);
        assert_eq!(plan(&files, 0x11).unwrap().unwrap().path, OWN_FILE);
    }

    #[test]
    fn a_packages_setting_is_overridden_by_a_copy_in_etc() {
        let t = "options nvidia NVreg_RegistryDwords=\"A=1\"\n";
        let e = plan(&[f("/usr/lib/modprobe.d/nvidia.conf", t)], 0x11)
            .unwrap()
            .unwrap();
        assert_eq!(e.path, "/etc/modprobe.d/nvidia.conf");
        assert_eq!(e.before, None);
        assert_eq!(
            e.after,
            "options nvidia NVreg_RegistryDwords=\"A=1;RmPVMRL=0x11\"\n"
        );
    }

    #[test]
    fn an_unmatched_quote_is_refused() {
        for t in [
            "options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x11\n",
            "options nvidia NVreg_RegistryDwords=A=\"1\"\n",
        ] {
            let e = plan(&[f("/etc/modprobe.d/n.conf", t)], 0x01).unwrap_err();
            assert!(e.starts_with("/etc/modprobe.d/n.conf line 1: "), "{e}");
        }
    }

    #[test]
    fn the_loaded_value_comes_from_proc() {
        let p = "ResmanDebugLevel: 4294967295\nRegistryDwords: \"PerfLevelSrc=0x2222;RmPVMRL=0x11\"\nRmMsg: \"\"\n";
        assert_eq!(loaded(p), Some(Some(0x11)));
        assert_eq!(loaded("RegistryDwords: \"\"\n"), Some(None));
        assert_eq!(loaded("EnableMSI: 1\n"), None);
    }
}
