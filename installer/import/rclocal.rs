//! Import from `/etc/rc.local`: the lines operators paste to recreate vGPUs and virtual
//! functions at boot (the seed's host has two), so that the restore unit can take over.
//!
//! Recognized (with or without `sudo`, quotes, `>` or `>>`, or `| tee [-a]`):
//! - `echo UUID > /sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/create`, also via
//!   `/sys/bus/pci/devices/<parent>/...` or any `/sys/...` path ending the same way. Any mdev
//!   parent counts (`mtty`, `0000:e8:00.4`, ...).
//! - `/usr/lib/nvidia/sriov-manage -e <address|ALL>` (short addresses like the seed's
//!   `0:e8:0.0` are normalized to `0000:e8:00.0`).
//!
//! A line that is about vGPUs but cannot be imported (a UUID generated at boot with
//! `uuidgen > create`, a variable, a path that does not validate) is returned as
//! [`RcItem::Skipped`] with the reason, so it is reported and never silently kept or dropped.
//! Whether the type directory exists on this host is for the caller to check (the seed's
//! `nvidia-555` line is the case: it did nothing after a reboot).
//!
//! This reads shell without running it: one line is one or more simple commands separated by
//! `;`, `&&`, `||` or `&`; line continuations, loops and functions are not followed.

use crate::pci::{check_mdev_parent, is_safe_name, is_uuid, PciAddr};

/// Prefix [`comment_out`] puts in front of imported lines.
pub const COMMENT_PREFIX: &str = "# vgpuctl: ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SriovTarget {
    All,
    Gpu(PciAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcItem {
    /// An mdev created with a fixed UUID.
    Vgpu {
        uuid: String,
        /// The parent as the kernel names it: canonical `0000:e8:00.4` for PCI functions,
        /// otherwise the name as written (`mtty`).
        parent: String,
        /// The type directory (`nvidia-555`, `vfio-pci-575`, `mtty-2`).
        type_dir: String,
    },
    /// `sriov-manage -e`.
    SriovEnable { target: SriovTarget },
    /// About vGPUs or SR-IOV, but not importable: why.
    Skipped { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcLine {
    /// 1-based line number.
    pub line: usize,
    /// The line as written (without its line ending).
    pub text: String,
    pub item: RcItem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// A word after quote removal; `dynamic` when it holds `$VAR`, `$(...)` or backquotes.
    Word {
        text: String,
        dynamic: bool,
    },
    Op(&'static str),
}

fn lex(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut dynamic = false;
    let mut it = line.chars().peekable();
    macro_rules! end_word {
        () => {
            if in_word {
                out.push(Tok::Word {
                    text: std::mem::take(&mut cur),
                    dynamic,
                });
                in_word = false;
                dynamic = false;
            }
        };
    }
    while let Some(c) = it.next() {
        match c {
            ' ' | '\t' | '\r' => end_word!(),
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(x @ ('$' | '`' | '"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(x @ ('$' | '`')) => {
                            dynamic = true;
                            cur.push(x);
                        }
                        Some(x) => cur.push(x),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = it.next() {
                    cur.push(x);
                }
            }
            '$' | '`' => {
                in_word = true;
                dynamic = true;
                cur.push(c);
            }
            '>' => {
                end_word!();
                if it.peek() == Some(&'>') {
                    it.next();
                    out.push(Tok::Op(">>"));
                } else {
                    out.push(Tok::Op(">"));
                }
            }
            '|' => {
                end_word!();
                if it.peek() == Some(&'|') {
                    it.next();
                    out.push(Tok::Op("||"));
                } else {
                    out.push(Tok::Op("|"));
                }
            }
            '&' => {
                end_word!();
                if it.peek() == Some(&'&') {
                    it.next();
                    out.push(Tok::Op("&&"));
                } else {
                    out.push(Tok::Op("&"));
                }
            }
            ';' => {
                end_word!();
                out.push(Tok::Op(";"));
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(Tok::Word { text: cur, dynamic });
    }
    Ok(out)
}

/// `<...>/<parent>/mdev_supported_types/<type>/create` under `/sys/` -> (parent, type).
fn parse_create_path(path: &str) -> Result<(String, String), String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if !path.starts_with("/sys/") {
        return Err(format!("{path} is not under /sys"));
    }
    if comps.iter().any(|c| *c == ".." || *c == ".") {
        return Err(format!("{path} contains '.' or '..'"));
    }
    let n = comps.len();
    if n < 5 || comps[n - 1] != "create" || comps[n - 3] != "mdev_supported_types" {
        return Err(format!(
            "{path} is not <parent>/mdev_supported_types/<type>/create"
        ));
    }
    let parent = comps[n - 4];
    let type_dir = comps[n - 2];
    let parent = check_mdev_parent(parent)?;
    if !is_safe_name(type_dir) {
        return Err(format!("type directory {type_dir:?} is not a plain name"));
    }
    Ok((parent, type_dir.to_string()))
}

fn word(t: &Tok) -> Option<(&str, bool)> {
    match t {
        Tok::Word { text, dynamic } => Some((text.as_str(), *dynamic)),
        Tok::Op(_) => None,
    }
}

fn strip_sudo(cmd: &[Tok]) -> &[Tok] {
    let mut c = cmd;
    while let Some((w, false)) = c.first().and_then(word) {
        if w == "sudo" || w == "exec" || w == "command" {
            c = &c[1..];
        } else {
            break;
        }
    }
    c
}

/// Where the command's output goes: the target of `>`/`>>`, or of `| [sudo] tee [-a] FILE`.
/// Returns the words before the redirection and the target (with its `dynamic` flag).
/// A word and whether it is computed at run time.
type W<'a> = (&'a str, bool);

fn split_output(cmd: &[Tok]) -> (Vec<W<'_>>, Option<W<'_>>) {
    let mut args = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        match &cmd[i] {
            Tok::Op(">") | Tok::Op(">>") => {
                return (args, cmd.get(i + 1).and_then(word));
            }
            Tok::Op("|") => {
                let rest = strip_sudo(&cmd[i + 1..]);
                if let Some(("tee", false)) = rest.first().and_then(word) {
                    let target = rest[1..]
                        .iter()
                        .filter_map(word)
                        .find(|(w, _)| !w.starts_with('-'));
                    return (args, target);
                }
                return (args, None);
            }
            t => {
                if let Some(w) = word(t) {
                    args.push(w);
                }
            }
        }
        i += 1;
    }
    (args, None)
}

fn classify(cmd: &[Tok]) -> Option<RcItem> {
    let cmd = strip_sudo(cmd);
    let (first, _) = cmd.first().and_then(word)?;
    let skipped = |reason: String| Some(RcItem::Skipped { reason });
    let program = first.rsplit('/').next().unwrap_or(first);
    if program == "sriov-manage" {
        let args: Vec<(&str, bool)> = cmd[1..].iter().filter_map(word).collect();
        let Some(pos) = args.iter().position(|(a, _)| *a == "-e" || *a == "-d") else {
            return skipped("sriov-manage without -e or -d".into());
        };
        if args[pos].0 == "-d" {
            return skipped(
                "sriov-manage -d disables virtual functions; nothing to restore".into(),
            );
        }
        return match args.get(pos + 1) {
            None => skipped("sriov-manage -e without a GPU address".into()),
            Some((_, true)) => skipped("sriov-manage -e with an address from a variable".into()),
            Some((t, false)) if t.eq_ignore_ascii_case("all") => Some(RcItem::SriovEnable {
                target: SriovTarget::All,
            }),
            Some((t, false)) => match PciAddr::parse(t) {
                Ok(a) => Some(RcItem::SriovEnable {
                    target: SriovTarget::Gpu(a),
                }),
                Err(e) => skipped(e.to_string()),
            },
        };
    }
    let (args, target) = split_output(cmd);
    let (path, path_dynamic) = target?;
    if !path.contains("mdev_supported_types") && !path.ends_with("/create") {
        return None;
    }
    if path_dynamic {
        return skipped(format!("the path {path} depends on a variable"));
    }
    let (parent, type_dir) = match parse_create_path(path) {
        Ok(pt) => pt,
        Err(e) => return skipped(e),
    };
    match program {
        "uuidgen" => skipped(format!(
            "uuidgen makes a new UUID at every boot on {parent} ({type_dir}): there is no fixed UUID to import; create it again with vgpuctl to pin one"
        )),
        "echo" | "printf" => {
            let vals: Vec<(&str, bool)> = args[1..]
                .iter()
                .filter(|(w, _)| !(program == "echo" && matches!(*w, "-n" | "-e" | "-ne" | "-en")))
                .cloned()
                .collect();
            match vals.as_slice() {
                [(u, false)] if is_uuid(u) => Some(RcItem::Vgpu {
                    uuid: u.to_ascii_lowercase(),
                    parent,
                    type_dir,
                }),
                [(_, true)] => skipped(format!(
                    "the UUID written to {parent} ({type_dir}) is computed at boot, not fixed"
                )),
                _ => skipped(format!(
                    "no single UUID is written to {parent} ({type_dir})"
                )),
            }
        }
        other => skipped(format!("{other} writes to {path}; only echo UUID is understood")),
    }
}

/// Every vGPU and SR-IOV line of an rc.local, in order. Comment lines (including ones
/// already commented out by [`comment_out`]) are ignored.
pub fn parse(content: &str) -> Vec<RcLine> {
    let mut out = Vec::new();
    for (i, raw) in content.split('\n').enumerate() {
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        let toks = match lex(text) {
            Ok(t) => t,
            Err(e) => {
                if text.contains("mdev_supported_types") || text.contains("sriov-manage") {
                    out.push(RcLine {
                        line: i + 1,
                        text: text.to_string(),
                        item: RcItem::Skipped {
                            reason: format!("cannot read this line: {e}"),
                        },
                    });
                }
                continue;
            }
        };
        let mut found = false;
        for cmd in toks.split(|t| matches!(t, Tok::Op(";" | "&&" | "||" | "&"))) {
            if let Some(item) = classify(cmd) {
                found = true;
                out.push(RcLine {
                    line: i + 1,
                    text: text.to_string(),
                    item,
                });
            }
        }
        let t = text.trim_start();
        if !found
            && !t.starts_with('#')
            && (text.contains("mdev_supported_types") || text.contains("sriov-manage"))
        {
            out.push(RcLine {
                line: i + 1,
                text: text.to_string(),
                item: RcItem::Skipped {
                    reason: "mentions vGPU sysfs or sriov-manage but is not a command vgpuctl understands".into(),
                },
            });
        }
    }
    out
}

/// Prefix the given 1-based lines with [`COMMENT_PREFIX`], keeping every other byte. A line
/// already commented out this way is left alone, so running it twice changes nothing.
pub fn comment_out(content: &str, line_numbers: &[usize]) -> String {
    content
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| {
            if line_numbers.contains(&(i + 1)) && !l.starts_with(COMMENT_PREFIX) {
                format!("{COMMENT_PREFIX}{l}")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's /etc/rc.local lines, verbatim, inside a usual rc.local.
    const SEED: &str = "#!/bin/bash\n\
        # rc.local\n\
        \n\
        echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n\
        echo 242e5ea7-90e2-4d6e-afeb-a0b9a656c108 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create\n\
        exit 0\n";

    fn vgpu(uuid: &str, parent: &str, type_dir: &str) -> RcItem {
        RcItem::Vgpu {
            uuid: uuid.into(),
            parent: parent.into(),
            type_dir: type_dir.into(),
        }
    }

    #[test]
    fn seed_lines() {
        let items = parse(SEED);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].line, 4);
        assert_eq!(
            items[0].item,
            vgpu(
                "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
                "0000:e8:00.4",
                "nvidia-555"
            )
        );
        assert_eq!(items[1].line, 5);
        assert_eq!(
            items[1].item,
            vgpu(
                "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
                "0000:e8:04.0",
                "vfio-pci-575"
            )
        );
        assert!(items[1].text.starts_with("echo 242e5ea7"));
    }

    #[test]
    fn comment_out_seed_lines_is_idempotent() {
        let lines: Vec<usize> = parse(SEED).iter().map(|l| l.line).collect();
        let once = comment_out(SEED, &lines);
        assert_eq!(
            once,
            "#!/bin/bash\n# rc.local\n\n\
             # vgpuctl: echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n\
             # vgpuctl: echo 242e5ea7-90e2-4d6e-afeb-a0b9a656c108 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create\n\
             exit 0\n"
        );
        assert_eq!(comment_out(&once, &lines), once);
        assert!(parse(&once).is_empty());
    }

    #[test]
    fn comment_out_keeps_crlf_and_missing_newline() {
        assert_eq!(comment_out("a\r\nb", &[2]), "a\r\n# vgpuctl: b");
        assert_eq!(comment_out("a\r\nb\r\n", &[1, 9]), "# vgpuctl: a\r\nb\r\n");
    }

    #[test]
    fn variants_of_the_echo_line() {
        let u = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
        let want = vgpu(u, "0000:e8:00.4", "nvidia-555");
        for l in [
            format!("echo {u} >> /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create"),
            format!("sudo echo \"{u}\" > \"/sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\""),
            format!("  echo '{u}'>/sys/bus/pci/devices/0000:e8:00.4/mdev_supported_types/nvidia-555/create  # vm1"),
            format!("echo {u} | sudo tee -a /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create > /dev/null"),
            format!("echo -n {u} > /sys/class/mdev_bus/0000\\:e8\\:00.4/mdev_supported_types/nvidia-555/create"),
            format!("echo {} > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create", u.to_uppercase()),
            format!("echo {u} > /sys/devices/pci0000:e0/0000:e0:01.0/0000:e8:00.4/mdev_supported_types/nvidia-555/create"),
            format!("modprobe x; echo {u} > /sys/class/mdev_bus/e8:00.4/mdev_supported_types/nvidia-555/create || true"),
        ] {
            let items = parse(&l);
            assert_eq!(items.len(), 1, "{l}");
            assert_eq!(items[0].item, want, "{l}");
            assert_eq!(items[0].line, 1);
        }
    }

    #[test]
    fn any_mdev_parent() {
        let l = "echo 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create";
        assert_eq!(
            parse(l)[0].item,
            vgpu("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", "mtty", "mtty-2")
        );
    }

    #[test]
    fn uuidgen_and_dynamic_uuids_are_reported() {
        for l in [
            "uuidgen > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
            "echo $(uuidgen) > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
            "echo $UUID > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
            "echo `uuidgen` > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
            "echo not-a-uuid > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
            "echo 1 2 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
        ] {
            let items = parse(l);
            assert_eq!(items.len(), 1, "{l}");
            assert!(matches!(items[0].item, RcItem::Skipped { .. }), "{l}: {:?}", items[0]);
        }
        let RcItem::Skipped { reason } = &parse(
            "uuidgen > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
        )[0]
        .item
        else {
            unreachable!()
        };
        assert!(
            reason.contains("uuidgen") && reason.contains("0000:e8:04.0"),
            "{reason}"
        );
    }

    #[test]
    fn paths_that_leave_sysfs_are_refused() {
        for l in [
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/../../etc/mdev_supported_types/x/create",
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/a;b/mdev_supported_types/x/create",
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /tmp/0000:e8:00.4/mdev_supported_types/nvidia-555/create",
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.9/mdev_supported_types/nvidia-555/create",
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/$P/mdev_supported_types/nvidia-555/create",
            "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > \"/sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/a b/create\"",
        ] {
            let items = parse(l);
            assert!(!items.is_empty(), "{l}");
            assert!(
                items.iter().all(|i| matches!(i.item, RcItem::Skipped { .. })),
                "{l}: {items:?}"
            );
        }
    }

    #[test]
    fn sriov_manage_lines() {
        let items = parse(
            "/usr/lib/nvidia/sriov-manage -e 0:e8:0.0\n\
             sudo /usr/lib/nvidia/sriov-manage -e ALL\n\
             sriov-manage -e 0000:67:00.0 -r 1\n\
             /usr/lib/nvidia/sriov-manage -d 0000:67:00.0\n\
             /usr/lib/nvidia/sriov-manage -e ../x\n\
             sleep 30 && /usr/lib/nvidia/sriov-manage -e all\n",
        );
        let gpu = |s: &str| RcItem::SriovEnable {
            target: SriovTarget::Gpu(PciAddr::parse(s).unwrap()),
        };
        assert_eq!(items[0].item, gpu("0000:e8:00.0"));
        assert_eq!(
            items[1].item,
            RcItem::SriovEnable {
                target: SriovTarget::All
            }
        );
        assert_eq!(items[2].item, gpu("0000:67:00.0"));
        assert!(matches!(items[3].item, RcItem::Skipped { .. }));
        assert!(matches!(items[4].item, RcItem::Skipped { .. }));
        assert_eq!(
            items[5].item,
            RcItem::SriovEnable {
                target: SriovTarget::All
            }
        );
        assert_eq!(
            items.iter().map(|i| i.line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn unrelated_lines_and_comments_are_ignored() {
        let s = "#!/bin/sh -e\n\
                 # echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n\
                 echo 1 > /proc/sys/net/ipv4/ip_forward\n\
                 echo hello\n\
                 modprobe vfio-pci\n\
                 exit 0";
        assert!(parse(s).is_empty());
    }

    #[test]
    fn unreadable_lines_mentioning_vgpu_are_reported() {
        let s = "echo 'unterminated > /sys/class/mdev_bus/x/mdev_supported_types/y/create\n\
                 for d in /sys/class/mdev_bus/*; do ls $d/mdev_supported_types; done\r\n";
        let items = parse(s);
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .all(|i| matches!(i.item, RcItem::Skipped { .. })));
        assert!(!items[1].text.ends_with('\r'));
    }

    #[test]
    fn crlf_file() {
        let s = SEED.replace('\n', "\r\n");
        let items = parse(&s);
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1].item, RcItem::Vgpu { .. }));
        let c = comment_out(&s, &[4]);
        assert!(c.contains("\r\n# vgpuctl: echo 2f82"));
    }
}
