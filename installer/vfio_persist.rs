//! Persistent vfio-pci bindings (recorded-behaviour.md §7): what gives a GPU to vfio-pci again at
//! every boot, so that a runtime unbind alone is undone by the next one. Four sources:
//! `vfio-pci.ids=` on the kernel command line, `options vfio-pci ids=` and
//! `softdep nvidia pre: vfio-pci` in `/etc/modprobe.d/*.conf`, driverctl overrides
//! (`/etc/driverctl.d/pci-<address>` holding the driver's name, as `driverctl set-override`
//! saves it; its `load-override` reads only a non-empty file), and udev rules setting
//! `driver_override`.
//!
//! Pure: finding them in given texts and neutralising them there. Only what catches one of the
//! given NVIDIA GPUs counts; ids and rules for other devices are kept as they are.

use serde::Serialize;

use crate::edit::kargs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Cmdline,
    Modprobe,
    Driverctl,
    Udev,
}

/// A GPU as the sources can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub address: String,
    pub device_id: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_id: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub source: Source,
    /// The file that persists it (absolute); `/proc/cmdline` when only the running kernel has it.
    pub file: String,
    /// The argument, line or rule.
    pub text: String,
    /// The GPUs it gives to vfio-pci.
    pub gpus: Vec<String>,
}

impl Binding {
    /// What fixes it, for `check`.
    pub fn fix(&self) -> String {
        match self.source {
            Source::Cmdline if self.file == "/proc/cmdline" => {
                "the boot configuration no longer has it: reboot".into()
            }
            Source::Cmdline => format!(
                "`vgpuctl setup` removes the GPUs' ids from it in {} (with a backup) and regenerates \
                 the boot configuration, before its reboot",
                self.file
            ),
            Source::Modprobe => format!(
                "`vgpuctl setup` edits {} (with a backup: the GPUs' ids leave the line, or the line \
                 is commented out) and rebuilds the initramfs, before its reboot",
                self.file
            ),
            Source::Driverctl => format!(
                "`vgpuctl setup` empties {} (with a backup; driverctl loads no override from an \
                 empty file), or run `driverctl unset-override {}`",
                self.file,
                self.gpus.join(" ")
            ),
            Source::Udev => format!(
                "`vgpuctl setup` comments the rule out in {} (with a backup), before its reboot",
                self.file
            ),
        }
    }
}

const VFIO_MODULES: [&str; 2] = ["vfio-pci", "vfio_pci"];
const ANY: u32 = 0xffff_ffff;

/// One `vendor:device[:subvendor[:subdevice[:class[:mask]]]]` entry of a vfio-pci `ids=` list:
/// does it catch `g`? (PCI_ANY_ID, ffffffff, matches anything, as in the kernel's table.)
fn id_catches(id: &str, g: &Gpu) -> bool {
    let f: Vec<Option<u32>> = id
        .trim()
        .split(':')
        .map(|x| u32::from_str_radix(x, 16).ok())
        .collect();
    let field = |i: usize| f.get(i).copied().unwrap_or(Some(ANY));
    let is = |i: usize, v: Option<u16>| match field(i) {
        Some(ANY) => true,
        Some(x) => v.is_some_and(|v| x == u32::from(v)),
        None => false,
    };
    f.len() >= 2
        && is(0, Some(0x10de))
        && is(1, Some(g.device_id))
        && (f.len() < 3 || is(2, g.subsystem_vendor))
        && (f.len() < 4 || is(3, g.subsystem_id))
}

/// The GPUs an `ids=` list catches.
pub fn ids_catch(list: &str, gpus: &[Gpu]) -> Vec<String> {
    gpus.iter()
        .filter(|g| list.split(',').any(|id| id_catches(id, g)))
        .map(|g| g.address.clone())
        .collect()
}

/// The list without the entries that catch one of `gpus`.
pub fn ids_without(list: &str, gpus: &[Gpu]) -> String {
    list.split(',')
        .filter(|id| !id.trim().is_empty() && !gpus.iter().any(|g| id_catches(id, g)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `vfio-pci.ids` or `vfio_pci.ids`: the kernel takes `-` and `_` alike in parameter names.
fn is_ids_key(key: &str) -> bool {
    key.replace('-', "_") == "vfio_pci.ids"
}

/// `vfio-pci.ids=` (or `vfio_pci.ids=`) arguments of a command line that catch a GPU.
pub fn cmdline_bindings(file: &str, line: &str, gpus: &[Gpu]) -> Vec<Binding> {
    kargs::tokens(line)
        .into_iter()
        .filter(|t| is_ids_key(t.key()))
        .filter_map(|t| {
            let caught = ids_catch(t.value().unwrap_or(""), gpus);
            (!caught.is_empty()).then(|| Binding {
                source: Source::Cmdline,
                file: file.to_string(),
                text: t.text.to_string(),
                gpus: caught,
            })
        })
        .collect()
}

/// The arguments of a command line to remove, and the ones to add instead (the same parameter
/// with the ids of other devices it also held), to release `gpus`.
pub fn cmdline_fix(line: &str, gpus: &[Gpu]) -> (Vec<String>, Vec<String>) {
    let (mut remove, mut add) = (Vec::new(), Vec::new());
    for t in kargs::tokens(line) {
        if !is_ids_key(t.key()) {
            continue;
        }
        let value = t.value().unwrap_or("");
        if ids_catch(value, gpus).is_empty() {
            continue;
        }
        remove.push(t.text.to_string());
        let rest = ids_without(value, gpus);
        if !rest.is_empty() {
            add.push(format!("{}={rest}", t.key()));
        }
    }
    (remove, add)
}

/// A line of a modprobe.d file that binds: `options vfio-pci ... ids=...` catching a GPU, or a
/// `softdep nvidia... pre: vfio-pci` (it exists to let vfio-pci claim NVIDIA GPUs first).
fn modprobe_catch(line: &str, gpus: &[Gpu]) -> Vec<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["options", m, opts @ ..] if VFIO_MODULES.contains(m) => opts
            .iter()
            .filter_map(|o| o.strip_prefix("ids="))
            .flat_map(|l| ids_catch(l, gpus))
            .collect(),
        ["softdep", m, deps @ ..] if m.starts_with("nvidia") && softdep_vfio(deps) => {
            gpus.iter().map(|g| g.address.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// vfio-pci among the `pre:` modules of a softdep.
fn softdep_vfio(deps: &[&str]) -> bool {
    let mut pre = false;
    deps.iter().any(|d| {
        match *d {
            "pre:" => pre = true,
            "post:" => pre = false,
            _ => {}
        }
        pre && VFIO_MODULES.contains(d)
    })
}

/// Physical lines grouped into logical ones (a trailing `\` continues a line, as in modprobe.d
/// and udev rules): (first line index, count, joined text).
fn logical_lines(text: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut joined = String::new();
        loop {
            let l = lines[i];
            match l.strip_suffix('\\') {
                Some(head) if i + 1 < lines.len() => {
                    joined.push_str(head);
                    joined.push(' ');
                    i += 1;
                }
                _ => {
                    joined.push_str(l);
                    i += 1;
                    break;
                }
            }
        }
        out.push((start, i - start, joined));
    }
    out
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

pub fn modprobe_bindings(file: &str, text: &str, gpus: &[Gpu]) -> Vec<Binding> {
    logical_lines(text)
        .into_iter()
        .filter(|(_, _, l)| !is_comment(l))
        .filter_map(|(_, _, l)| {
            let caught = modprobe_catch(&l, gpus);
            (!caught.is_empty()).then(|| Binding {
                source: Source::Modprobe,
                file: file.to_string(),
                text: l.trim().to_string(),
                gpus: caught,
            })
        })
        .collect()
}

const NOTE: &str = "# vgpuctl: this gave NVIDIA vGPU GPUs to vfio-pci at every boot; it was:";

/// A logical line rewritten so that it binds none of `gpus`: the `ids=` without their ids (the
/// word dropped when empty), a softdep without vfio-pci; None when nothing of it is left.
fn modprobe_rewrite(line: &str, gpus: &[Gpu]) -> Option<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let (head, rest): (Vec<String>, Vec<String>) = match w.as_slice() {
        ["options", m, opts @ ..] => (
            vec!["options".into(), m.to_string()],
            opts.iter()
                .filter_map(|o| match o.strip_prefix("ids=") {
                    Some(l) => {
                        let left = ids_without(l, gpus);
                        (!left.is_empty()).then(|| format!("ids={left}"))
                    }
                    None => Some(o.to_string()),
                })
                .collect(),
        ),
        ["softdep", m, deps @ ..] => {
            let mut pre = false;
            let kept: Vec<String> = deps
                .iter()
                .filter(|d| {
                    match **d {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        _ => {}
                    }
                    !(pre && VFIO_MODULES.contains(d))
                })
                .map(|d| d.to_string())
                .collect();
            let any_module = kept.iter().any(|d| d != "pre:" && d != "post:");
            (
                vec!["softdep".into(), m.to_string()],
                if any_module { kept } else { Vec::new() },
            )
        }
        _ => return Some(line.to_string()),
    };
    (!rest.is_empty()).then(|| [head, rest].concat().join(" "))
}

/// The modprobe.d file's text with every binding line neutralised: the old line kept as a
/// comment under a note saying why, followed by what is left of it.
pub fn modprobe_neutralise(text: &str, gpus: &[Gpu]) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::new();
    for (start, n, l) in logical_lines(text) {
        let phys = &lines[start..start + n];
        if is_comment(&l) || modprobe_catch(&l, gpus).is_empty() {
            out.extend(phys.iter().map(|s| s.to_string()));
            continue;
        }
        out.push(NOTE.into());
        out.extend(phys.iter().map(|s| format!("#{s}")));
        if let Some(kept) = modprobe_rewrite(&l, gpus) {
            out.push(kept);
        }
    }
    out.join("\n")
}

/// `/etc/driverctl.d/<name>` holding `text`: the GPU it overrides to vfio-pci, if one of `gpus`.
/// driverctl names the file `pci-<address>`; the address is the one given to `set-override`,
/// completed with domain 0000 when the device exists under that name.
pub fn driverctl_binding(file: &str, name: &str, text: &str, gpus: &[Gpu]) -> Option<Binding> {
    let dev = name.strip_prefix("pci-")?.to_ascii_lowercase();
    let dev = if dev.matches(':').count() == 1 {
        format!("0000:{dev}")
    } else {
        dev
    };
    let driver = text.trim();
    let g = gpus.iter().find(|g| g.address == dev)?;
    VFIO_MODULES.contains(&driver).then(|| Binding {
        source: Source::Driverctl,
        file: file.to_string(),
        text: driver.to_string(),
        gpus: vec![g.address.clone()],
    })
}

/// One `KEY OP "VALUE"` of a udev rule.
struct Pair {
    key: String,
    op: String,
    value: String,
}

fn udev_pairs(rule: &str) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut rest = rule.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let Some(q) = rest.find('"') else { break };
        let head = rest[..q].trim();
        let Some(end) = rest[q + 1..].find('"') else {
            break;
        };
        let value = rest[q + 1..q + 1 + end].to_string();
        rest = &rest[q + 2 + end..];
        let opstart = head.find(['=', '!', '+', '-', ':']).unwrap_or(head.len());
        out.push(Pair {
            key: head[..opstart].trim().to_string(),
            op: head[opstart..].trim().to_string(),
            value,
        });
    }
    out
}

/// udev's pattern match: `*`, `?` and `|` alternatives (character classes are taken as a match,
/// which can only over-report).
fn glob(pattern: &str, s: &str) -> bool {
    fn one(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => one(&p[1..], s) || (!s.is_empty() && one(p, &s[1..])),
            (Some(b'['), _) => true,
            (Some(b'?'), Some(_)) => one(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => one(&p[1..], &s[1..]),
            _ => false,
        }
    }
    pattern.split('|').any(|p| one(p.as_bytes(), s.as_bytes()))
}

/// The GPUs a udev rule gives to vfio-pci: it assigns `driver_override` vfio-pci (an
/// `ATTR{driver_override}=` or a `RUN` that writes it) and its address and id matches hold
/// for them. Matches on keys judged here: the device's name (`KERNEL`, `KERNELS`,
/// `ENV{PCI_SLOT_NAME}`), `vendor`, `device`, `subsystem_vendor`, `subsystem_device`; any other
/// match is assumed to hold (a GPU is a PCI device being added).
fn udev_catch(rule: &str, gpus: &[Gpu]) -> Vec<String> {
    let pairs = udev_pairs(rule);
    let vfio = |v: &str| VFIO_MODULES.iter().any(|m| v.contains(m));
    let sets = pairs.iter().any(|p| {
        let assign = p.op == "=" || p.op == "+=" || p.op == ":=";
        assign
            && ((p.key == "ATTR{driver_override}" && vfio(&p.value))
                || (p.key == "RUN" && p.value.contains("driver_override") && vfio(&p.value)))
    });
    if !sets {
        return Vec::new();
    }
    gpus.iter()
        .filter(|g| {
            pairs.iter().all(|p| {
                let hex = |v: Option<u16>| v.map(|v| format!("0x{v:04x}")).unwrap_or_default();
                let subject = match p.key.as_str() {
                    "KERNEL" | "KERNELS" | "ENV{PCI_SLOT_NAME}" => g.address.clone(),
                    "ATTR{vendor}" | "ATTRS{vendor}" => "0x10de".into(),
                    "ATTR{device}" | "ATTRS{device}" => hex(Some(g.device_id)),
                    "ATTR{subsystem_vendor}" | "ATTRS{subsystem_vendor}" => hex(g.subsystem_vendor),
                    "ATTR{subsystem_device}" | "ATTRS{subsystem_device}" => hex(g.subsystem_id),
                    _ => return true,
                };
                match p.op.as_str() {
                    "==" => glob(&p.value, &subject),
                    "!=" => !glob(&p.value, &subject),
                    _ => true,
                }
            })
        })
        .map(|g| g.address.clone())
        .collect()
}

pub fn udev_bindings(file: &str, text: &str, gpus: &[Gpu]) -> Vec<Binding> {
    logical_lines(text)
        .into_iter()
        .filter(|(_, _, l)| !is_comment(l))
        .filter_map(|(_, _, l)| {
            let caught = udev_catch(&l, gpus);
            (!caught.is_empty()).then(|| Binding {
                source: Source::Udev,
                file: file.to_string(),
                text: l.trim().to_string(),
                gpus: caught,
            })
        })
        .collect()
}

/// The rules file with every rule that gives one of `gpus` to vfio-pci commented out (under a
/// note saying why). A rule is one unit: it cannot be narrowed to other devices reliably.
pub fn udev_neutralise(text: &str, gpus: &[Gpu]) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::new();
    for (start, n, l) in logical_lines(text) {
        let phys = &lines[start..start + n];
        if is_comment(&l) || udev_catch(&l, gpus).is_empty() {
            out.extend(phys.iter().map(|s| s.to_string()));
        } else {
            out.push(NOTE.into());
            out.extend(phys.iter().map(|s| format!("#{s}")));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t4() -> Vec<Gpu> {
        ["0000:3b:00.0", "0000:af:00.0"]
            .map(|a| Gpu {
                address: a.into(),
                device_id: 0x1eb8,
                subsystem_vendor: Some(0x10de),
                subsystem_id: Some(0x12a2),
            })
            .to_vec()
    }

    #[test]
    fn ids_match_vendor_device_and_given_subsystem() {
        let g = t4();
        assert_eq!(ids_catch("10de:1eb8", &g).len(), 2);
        assert_eq!(ids_catch("10DE:1EB8:10de:12a2", &g).len(), 2);
        assert!(ids_catch("10de:1eb8:10de:0001", &g).is_empty());
        assert!(
            ids_catch("10de:10f8,8086:1234", &g).is_empty(),
            "audio function"
        );
        assert_eq!(
            ids_without("8086:1234,10de:1eb8,10de:10f8", &g),
            "8086:1234,10de:10f8"
        );
    }

    #[test]
    fn cmdline_keeps_other_devices_ids() {
        let g = t4();
        let line = "ro quiet vfio_pci.ids=10de:1eb8,1000:0097 iommu=pt";
        let b = cmdline_bindings("/etc/default/grub", line, &g);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].text, "vfio_pci.ids=10de:1eb8,1000:0097");
        let (rm, add) = cmdline_fix(line, &g);
        assert_eq!(rm, ["vfio_pci.ids=10de:1eb8,1000:0097"]);
        assert_eq!(add, ["vfio_pci.ids=1000:0097"]);
        assert!(cmdline_bindings("", "vfio-pci.ids=10de:2235", &g).is_empty());
    }

    #[test]
    fn modprobe_lines_are_narrowed_or_commented_out() {
        let g = t4();
        let text = "# passthrough\noptions vfio-pci ids=10de:1eb8 disable_vga=1\noptions vfio_pci ids=10de:1eb8\nsoftdep nvidia pre: vfio-pci\nsoftdep nouveau pre: vfio-pci\noptions kvm ignore_msrs=1\n";
        let b = modprobe_bindings("/etc/modprobe.d/vfio.conf", text, &g);
        assert_eq!(b.len(), 3, "{b:?}");
        let after = modprobe_neutralise(text, &g);
        assert!(
            after.contains(
                "#options vfio-pci ids=10de:1eb8 disable_vga=1\noptions vfio-pci disable_vga=1\n"
            ),
            "{after}"
        );
        assert!(after.contains("#softdep nvidia pre: vfio-pci\n"), "{after}");
        assert!(after.contains("\nsoftdep nouveau pre: vfio-pci\noptions kvm ignore_msrs=1\n"));
        assert!(modprobe_bindings("", &after, &g).is_empty(), "{after}");
        // Idempotent.
        assert_eq!(modprobe_neutralise(&after, &g), after);
    }

    #[test]
    fn driverctl_names_the_device() {
        let g = t4();
        let b = driverctl_binding(
            "/etc/driverctl.d/pci-3b:00.0",
            "pci-3b:00.0",
            "vfio-pci\n",
            &g,
        );
        assert_eq!(b.unwrap().gpus, ["0000:3b:00.0"]);
        assert!(driverctl_binding("", "pci-0000:3b:00.0", "nvidia\n", &g).is_none());
        assert!(driverctl_binding("", "pci-0000:3b:00.0", "", &g).is_none());
        assert!(driverctl_binding("", "pci-0000:01:00.0", "vfio-pci", &g).is_none());
    }

    #[test]
    fn udev_rules_by_id_or_address() {
        let g = t4();
        let text = "ACTION==\"add\", SUBSYSTEM==\"pci\", ATTR{vendor}==\"0x10de\", ATTR{device}==\"0x1eb8\", ATTR{driver_override}=\"vfio-pci\"\n\
                    SUBSYSTEM==\"pci\", KERNEL==\"0000:af:00.*\", RUN+=\"/bin/sh -c 'echo vfio-pci > /sys/bus/pci/devices/%k/driver_override'\"\n\
                    ACTION==\"add\", ATTR{vendor}==\"0x8086\", ATTR{driver_override}=\"vfio-pci\"\n";
        let b = udev_bindings("/etc/udev/rules.d/99-vfio.rules", text, &g);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[1].gpus, ["0000:af:00.0"]);
        let after = udev_neutralise(text, &g);
        assert!(udev_bindings("", &after, &g).is_empty(), "{after}");
        assert!(
            after.contains("\nACTION==\"add\", ATTR{vendor}==\"0x8086\""),
            "{after}"
        );
    }
}
