//! Take the imported commands out of `/etc/rc.local` while everything else on their lines keeps
//! running exactly as before.
//!
//! After `import`, vgpuctl-restore.service (ordered `Before=rc-local.service`) enables SR-IOV and
//! creates the vGPUs, so rc.local must stop doing it; but what is glued to those commands
//! (`modprobe vfio_pci; echo U > .../create`, `echo U > .../create && start-my-vms.sh`) must still
//! run, in the same order and under the same conditions:
//! - a command that is a list of its own (`A`, `A; B`, `B; A`, `A & B`) is removed with its
//!   separator: the rest runs as before, and after the vGPU exists, as before;
//! - a command joined with `&&` or `||` is replaced by the test of what it did,
//!   `[ -e /sys/bus/mdev/devices/UUID ]`, `grep -qvx 0 /sys/bus/pci/devices/VF/nvidia/current_vgpu_type`
//!   (a vendor-VFIO VF holds a type) or `[ -e /sys/bus/pci/devices/ADDR/virtfn0 ]`. At boot
//!   the test succeeds exactly when the command would have, so in `A && B`, `A || B`,
//!   `C && A || B` every other command runs exactly when it did (also under `sh -e`, which
//!   exits on the last command of an and-or list the same way for the test as for the command);
//!   `sriov-manage -e ALL`, which no one test stands for, is replaced by `true` when it is last
//!   (`sleep 30 && sriov-manage -e ALL`), where nothing depends on its result;
//! - a line left with nothing is commented out whole with [`COMMENT_PREFIX`].
//!
//! One thing changes on purpose: under `sh -e`, an imported command that failed on its own line
//! used to stop rc.local there; the restore unit reports that failure now instead.
//! [`super::rclocal::parse`] reports, never imports, what this cannot edit that way (blocks,
//! here-documents, continued lines, pipelines, `sriov-manage -e ALL` in `&&`/`||`).

use super::rclocal::{commands, lex, RcItem, RcLine, SriovTarget, Tok, COMMENT_PREFIX};

/// One edited line of rc.local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// 1-based.
    pub line: usize,
    pub before: String,
    pub after: String,
}

/// The shell test that succeeds at boot exactly when the imported command would have.
fn success_test(item: &RcItem) -> Option<String> {
    match item {
        RcItem::Vgpu { uuid, .. } => Some(format!("[ -e /sys/bus/mdev/devices/{uuid} ]")),
        // The VF holds a type: some line of the attribute is not `0`.
        RcItem::VendorVgpu { vf, .. } => Some(format!(
            "grep -qvx 0 /sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"
        )),
        RcItem::SriovEnable {
            target: SriovTarget::Gpu(a),
        } => Some(format!("[ -e /sys/bus/pci/devices/{a}/virtfn0 ]")),
        RcItem::SriovEnable {
            target: SriovTarget::All,
        }
        | RcItem::Skipped { .. } => None,
    }
}

/// Rewrite one line: `imported` holds (command index, item). `None` when nothing is left of it.
fn rewrite_line(text: &str, imported: &[(usize, &RcItem)]) -> Result<Option<String>, String> {
    let mut cur = text.to_string();
    let mut order: Vec<&(usize, &RcItem)> = imported.iter().collect();
    // Right to left: an edit never moves what lies to its left, so the command indices found
    // by re-reading the edited text still name the same commands.
    order.sort_by_key(|x| std::cmp::Reverse(x.0));
    order.dedup_by_key(|x| x.0);
    for (k, item) in order {
        let toks = lex(&cur)?;
        let cmds = commands(&toks);
        let c = cmds
            .get(*k)
            .ok_or_else(|| format!("command {} is not on this line", k + 1))?
            .clone();
        let and_or = |i: Option<usize>| {
            i.and_then(|i| toks.get(i))
                .is_some_and(|(t, _)| matches!(t, Tok::Op("&&" | "||")))
        };
        let start = toks[c.start].1.start;
        let end = toks[c.end - 1].1.end;
        if and_or(c.start.checked_sub(1)) || and_or(Some(c.end)) {
            // Without a test (`sriov-manage -e ALL`) only the last place of a list is kept
            // exact, by `true`: nothing after it depends on its result.
            let test = success_test(item)
                .or_else(|| (!and_or(Some(c.end))).then(|| "true".to_string()))
                .ok_or_else(|| "no test stands for this command's result".to_string())?;
            // What followed the command must stay a separate word: after an operator ending
            // it (`<<`), a `#` began a comment, and glued to the test's `]` it would not
            // (the rest of the line would run; found by the rclocal fuzz target).
            let glued = cur[end..]
                .chars()
                .next()
                .is_some_and(|ch| !ch.is_whitespace() && !";&|)".contains(ch));
            let test = if glued { format!("{test} ") } else { test };
            cur.replace_range(start..end, &test);
        } else if let Some(next) = cmds.get(k + 1) {
            cur.replace_range(start..toks[next.start].1.start, "");
        } else if *k > 0 {
            // The last command: keep the separator before it (`B;`, `B &` stay what they were).
            let from = toks[c.start - 1].1.end;
            let to = toks.get(c.end).map_or(end, |(_, r)| r.end);
            cur.replace_range(from..to, "");
        } else {
            return Ok(None);
        }
    }
    Ok(Some(cur))
}

/// Rewrite `content` so that the `imported` commands no longer run from it. Every other byte
/// (other lines, line endings, a missing final newline) is kept. Errors name the line.
pub fn rewrite(content: &str, imported: &[&RcLine]) -> Result<(String, Vec<Change>), String> {
    let mut by_line: std::collections::BTreeMap<usize, Vec<(usize, &RcItem)>> = Default::default();
    for l in imported {
        by_line.entry(l.line).or_default().push((l.cmd, &l.item));
    }
    let mut out = String::with_capacity(content.len());
    let mut changes = Vec::new();
    for (i, raw) in content.split_inclusive('\n').enumerate() {
        let Some(items) = by_line.get(&(i + 1)) else {
            out.push_str(raw);
            continue;
        };
        let (body, eol) = match raw.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => raw.strip_suffix('\n').map_or((raw, ""), |b| (b, "\n")),
        };
        if body.starts_with(COMMENT_PREFIX) {
            out.push_str(raw);
            continue;
        }
        let after = match rewrite_line(body, items).map_err(|e| format!("line {}: {e}", i + 1))? {
            Some(a) => a,
            None => format!("{COMMENT_PREFIX}{body}"),
        };
        if after != body {
            changes.push(Change {
                line: i + 1,
                before: body.to_string(),
                after: after.clone(),
            });
        }
        out.push_str(&after);
        out.push_str(eol);
    }
    Ok((out, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::rclocal::parse;

    const U: &str = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    const CREATE: &str = "/sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create";

    #[test]
    fn vendor_vfio_lines_leave_a_test_of_the_vf() {
        let nv = "/sys/bus/pci/devices/0000:41:00.4/nvidia/current_vgpu_type";
        let rc =
            format!("echo 1153 > {nv}\nmodprobe x; sudo sh -c 'echo 1153 > {nv}' && start-vms\n");
        let (out, changes) = import_all(&rc);
        assert_eq!(
            out,
            format!("# vgpuctl: echo 1153 > {nv}\nmodprobe x; grep -qvx 0 {nv} && start-vms\n")
        );
        assert_eq!(changes.len(), 2);
        // Nothing is left to import, nor reported, on a second run.
        assert!(parse(&out).is_empty(), "{:?}", parse(&out));
    }

    /// Import everything `parse` offers, as `import` does on a host where every type exists.
    fn import_all(content: &str) -> (String, Vec<Change>) {
        let items = parse(content);
        let imported: Vec<&RcLine> = items
            .iter()
            .filter(|l| !matches!(l.item, RcItem::Skipped { .. }))
            .collect();
        rewrite(content, &imported).unwrap()
    }

    /// A real `/bin/sh -n` (syntax only, nothing runs) over the whole file.
    fn sh_syntax_ok(script: &str) -> Result<(), String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, script.as_bytes()).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-n")
            .arg(f.path())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn glued_commands_keep_running_with_the_same_meaning() {
        let echo = format!("echo {U} > {CREATE}");
        let test = format!("[ -e /sys/bus/mdev/devices/{U} ]");
        let cases: Vec<(String, String)> = vec![
            (
                format!("modprobe vfio_pci; {echo}"),
                "modprobe vfio_pci;".into(),
            ),
            (
                format!("{echo}; modprobe vfio_pci"),
                "modprobe vfio_pci".into(),
            ),
            (
                format!("{echo} && start-my-vms.sh"),
                format!("{test} && start-my-vms.sh"),
            ),
            (
                format!("{echo} || logger failed"),
                format!("{test} || logger failed"),
            ),
            (
                format!("modprobe x && {echo}"),
                format!("modprobe x && {test}"),
            ),
            (
                format!("a && {echo} || b; c"),
                format!("a && {test} || b; c"),
            ),
            (format!("{echo} & sleep 1"), "sleep 1".into()),
            (format!("sleep 1 & {echo} &"), "sleep 1 &".into()),
            (format!("{echo} && b &"), format!("{test} && b &")),
            (
                format!("  {echo}; mount /data  # vm1"),
                "  mount /data  # vm1".into(),
            ),
            (
                format!("echo {U} | sudo tee -a {CREATE} > /dev/null; x"),
                "x".into(),
            ),
            (
                "/usr/lib/nvidia/sriov-manage -e ALL; mount /data".into(),
                "mount /data".into(),
            ),
            (
                "sleep 30 && /usr/lib/nvidia/sriov-manage -e all; x".into(),
                "sleep 30 && true; x".into(),
            ),
            (
                "/usr/lib/nvidia/sriov-manage -e 0:e8:0.0 && echo ok".into(),
                "[ -e /sys/bus/pci/devices/0000:e8:00.0/virtfn0 ] && echo ok".into(),
            ),
            (
                format!("{echo}  # vm1"),
                format!("{COMMENT_PREFIX}{echo}  # vm1"),
            ),
            (format!("{echo};"), format!("{COMMENT_PREFIX}{echo};")),
            (format!("{echo} &"), format!("{COMMENT_PREFIX}{echo} &")),
            (
                format!("{echo}; {echo}"),
                format!("{COMMENT_PREFIX}{echo}; {echo}"),
            ),
            (format!("{echo}; a; {echo}; b; {echo}"), "a; b;".into()),
        ];
        for (line, want) in cases {
            let file = format!("#!/bin/sh -e\n{line}\nexit 0\n");
            let (out, changes) = import_all(&file);
            assert_eq!(out, format!("#!/bin/sh -e\n{want}\nexit 0\n"), "{line}");
            assert_eq!(
                changes,
                vec![Change {
                    line: 2,
                    before: line.clone(),
                    after: want.clone()
                }]
            );
            sh_syntax_ok(&out).unwrap_or_else(|e| panic!("{line} -> {want}: {e}"));
            // A second import finds nothing left to take and changes nothing.
            assert_eq!(import_all(&out).0, out, "{line}");
        }
    }

    /// The seed's own rc.local (the host in /work/shared/seeds): both lines go whole.
    #[test]
    fn seed_rc_local() {
        let seed = "\necho 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\necho 242e5ea7-90e2-4d6e-afeb-a0b9a656c108 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create\n";
        let (out, changes) = import_all(seed);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            out,
            seed.replace("\necho", &format!("\n{COMMENT_PREFIX}echo"))
        );
        sh_syntax_ok(&out).unwrap();
        let crlf = seed.replace('\n', "\r\n");
        let (out, _) = import_all(&crlf);
        assert_eq!(
            out,
            crlf.replace("\necho", &format!("\n{COMMENT_PREFIX}echo"))
        );
    }

    /// Commands inside shell structure are reported and their lines kept byte for byte.
    #[test]
    fn structure_is_refused_never_mangled() {
        let echo = format!("echo {U} > {CREATE}");
        let files = [
            format!("if [ -d /sys/class/mdev_bus ]; then\n  {echo}\nfi\n"),
            format!("if true; then {echo}; fi\n"),
            format!("for i in 1; do\n{echo}\ndone\n"),
            format!("while false; do {echo}; done\n"),
            format!("make_vgpus() {{\n  {echo}\n}}\nmake_vgpus\n"),
            format!("make_vgpus()\n{{\n{echo}; modprobe x\n}}\n"),
            format!("{{ {echo}; }}\n"),
            format!("( {echo} )\n"),
            format!("({echo}) &\n"),
            format!("case $1 in\nstart)\n  {echo}\n  ;;\nesac\n"),
            format!("{echo} \\\n  && start-my-vms.sh\n"),
            format!("modprobe x &&\n  {echo}\n"),
            format!("echo 'a\nb'; {echo}\nx\n"),
            format!("cat > /tmp/x <<EOF\n{echo}\nEOF\n"),
            format!("cat <<-'EOF' > /tmp/x; {echo}\n\t{echo}\n\tEOF\n"),
            format!("! {echo} && b\n"),
            format!("{echo} | logger\n"),
            "/usr/lib/nvidia/sriov-manage -e ALL && mount /data\n".into(),
            "/usr/lib/nvidia/sriov-manage -e ALL | logger\n".into(),
        ];
        for f in &files {
            let items = parse(f);
            assert!(!items.is_empty(), "{f}");
            assert!(
                items
                    .iter()
                    .all(|i| matches!(i.item, RcItem::Skipped { .. })),
                "{f}: {items:?}"
            );
            let (out, changes) = import_all(f);
            assert_eq!(&out, f);
            assert!(changes.is_empty());
            sh_syntax_ok(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        // After a block closes, plain lines are plain again.
        let f = format!("if true; then\n  x\nfi\n{echo}; y\n");
        assert_eq!(import_all(&f).0, "if true; then\n  x\nfi\ny\n");
        let f = format!("cat <<EOF\n{echo}\nEOF\n{echo} && z\n");
        assert_eq!(
            import_all(&f).0,
            format!("cat <<EOF\n{echo}\nEOF\n[ -e /sys/bus/mdev/devices/{U} ] && z\n")
        );
    }

    /// Only the commands handed in are rewritten: one left out (its type is missing on this
    /// host) stays on its line, running as before.
    #[test]
    fn commands_not_imported_stay() {
        let other = "echo 0b6e1a4c-33c8-4c5f-9a65-0d8f3c1c1a11 > /sys/class/mdev_bus/0000:e8:01.0/mdev_supported_types/nvidia-999/create";
        let f = format!("{other}; echo {U} > {CREATE}\n");
        let items = parse(&f);
        assert_eq!(items.len(), 2);
        let (out, changes) = rewrite(&f, &[&items[1]]).unwrap();
        assert_eq!(out, format!("{other};\n"));
        assert_eq!(changes.len(), 1);
        let (out, changes) = rewrite(&f, &[]).unwrap();
        assert_eq!(out, f);
        assert!(changes.is_empty());
    }

    #[test]
    fn a_comment_after_the_replaced_command_stays_a_comment() {
        // Found by the rclocal fuzz target (fuzz/known-crashes/rclocal-heredoc-rewrite): a
        // command ending in an operator (`<<`) right before `#`; the test glued to that `#`
        // turned the rest of the line, another sriov-manage among it, into live commands.
        let c = String::from_utf8_lossy(include_bytes!(
            "../../fuzz/known-crashes/rclocal-heredoc-rewrite"
        ))
        .into_owned();
        let importable = |i: &RcLine| {
            matches!(
                i.item,
                RcItem::Vgpu { .. } | RcItem::VendorVgpu { .. } | RcItem::SriovEnable { .. }
            )
        };
        let items = super::super::rclocal::parse(&c);
        let imported: Vec<&RcLine> = items.iter().filter(|i| importable(i)).collect();
        assert!(!imported.is_empty());
        let (once, _) = rewrite(&c, &imported).unwrap();
        let again: Vec<RcLine> = super::super::rclocal::parse(&once)
            .into_iter()
            .filter(|i| importable(i))
            .collect();
        assert!(again.is_empty(), "{again:?}");
    }
}
