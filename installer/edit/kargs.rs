//! Kernel command-line editor, in the style of coreos-installer's `KargsEditor`: a pure function
//! from a line to a line that touches only the arguments it is asked about.
//!
//! Tokenizing follows the kernel's `next_arg()` (lib/cmdline.c): arguments are split on
//! whitespace, except inside double quotes (`foo="a b"`); a bare `--` ends the kernel's arguments
//! and hands the rest to init, so nothing is ever read or inserted after it. Parameter names
//! compare with `-` and `_` equal, as the kernel's `parameq()` does (`intel-iommu=on` is
//! `intel_iommu=on`). For repeated parameters such as `iommu=` the kernel applies every
//! occurrence in order, so the last one wins: a conflicting occurrence anywhere must go.

use std::ops::Range;

/// One argument of a command line: its byte range in the line and the parts of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    pub span: Range<usize>,
    pub text: &'a str,
}

impl<'a> Token<'a> {
    /// The parameter name (before the first `=`).
    pub fn key(&self) -> &'a str {
        split_arg(self.text).0
    }
    /// The value after `=`, without surrounding double quotes; `None` for a flag like `quiet`.
    pub fn value(&self) -> Option<&'a str> {
        split_arg(self.text).1
    }
}

fn split_arg(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((k, v)) => {
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k, Some(v))
        }
        None => (arg, None),
    }
}

fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'-' { b'_' } else { c };
            n(x) == n(y)
        })
}

fn same_arg(a: &str, b: &str) -> bool {
    let (ka, va) = split_arg(a);
    let (kb, vb) = split_arg(b);
    same_key(ka, kb) && va == vb
}

/// The kernel's arguments of `line` (everything before a bare `--`), with their byte ranges.
pub fn tokens(line: &str) -> Vec<Token<'_>> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        let mut in_quote = false;
        while i < bytes.len() && (in_quote || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        let text = &line[start..i];
        if text == "--" {
            break;
        }
        out.push(Token {
            span: start..i,
            text,
        });
    }
    out
}

/// The value of parameter `key` as the kernel would apply it (the last occurrence).
/// `Some(None)` for a flag without a value.
pub fn arg_value<'a>(line: &'a str, key: &str) -> Option<Option<&'a str>> {
    tokens(line)
        .into_iter()
        .rev()
        .find(|t| same_key(t.key(), key))
        .map(|t| t.value())
}

/// True when every wanted argument is present and no other value of its parameter is.
pub fn has_args(line: &str, wanted: &[&str]) -> bool {
    let toks = tokens(line);
    wanted.iter().all(|w| {
        let key = split_arg(w).0;
        let mut same = toks.iter().filter(|t| same_key(t.key(), key)).peekable();
        same.peek().is_some() && same.all(|t| same_arg(t.text, w))
    })
}

/// Ensure every `wanted` argument is on the line: a conflicting value of the same parameter is
/// replaced in place (its first occurrence; later conflicting occurrences are removed), a missing
/// one is appended after the last kernel argument (before `--`, before trailing whitespace).
/// Every other byte of the line is kept. `ensure_args(ensure_args(l, w), w) == ensure_args(l, w)`.
pub fn ensure_args(line: &str, wanted: &[&str]) -> String {
    let mut line = replace_conflicts(line, wanted);
    for w in wanted {
        let toks = tokens(&line);
        if toks.iter().any(|t| same_arg(t.text, w)) {
            continue;
        }
        match toks.last() {
            // An unterminated quote swallows the rest of the line (the kernel does the same):
            // put the new argument before that token, where it stays an argument of its own.
            Some(last) if last.text.matches('"').count() % 2 == 1 => {
                line.insert_str(last.span.start, &format!("{w} "))
            }
            Some(last) => line.insert_str(last.span.end, &format!(" {w}")),
            None => {
                // No kernel argument yet: put it before any `--` and keep surrounding spacing.
                let lead = line.len() - line.trim_start().len();
                let rest_is_empty = line[lead..].is_empty();
                let ins = if rest_is_empty {
                    w.to_string()
                } else {
                    format!("{w} ")
                };
                line.insert_str(lead, &ins);
            }
        }
    }
    line
}

/// Only the replacement half of [`ensure_args`]: every parameter named in `wanted` that has
/// another value gets the wanted one (first conflicting occurrence replaced, later ones removed;
/// none removed when the wanted one is already there). Missing arguments are not added: used
/// on files whose value is carried into a later one (GRUB drop-ins, several BLS `options` lines).
pub fn replace_conflicts(line: &str, wanted: &[&str]) -> String {
    let mut line = line.to_string();
    for w in wanted {
        let key = split_arg(w).0;
        let toks = tokens(&line);
        let same: Vec<&Token> = toks.iter().filter(|t| same_key(t.key(), key)).collect();
        if same.iter().all(|t| same_arg(t.text, w)) {
            continue;
        }
        let already = same.iter().any(|t| same_arg(t.text, w));
        // Edit from the end so earlier spans stay valid.
        let mut edits: Vec<(Range<usize>, Option<&str>)> = Vec::new();
        let mut replaced = already;
        for t in &same {
            if same_arg(t.text, w) {
                continue;
            }
            if replaced {
                edits.push((t.span.clone(), None));
            } else {
                edits.push((t.span.clone(), Some(w)));
                replaced = true;
            }
        }
        for (span, with) in edits.into_iter().rev() {
            match with {
                Some(w) => line.replace_range(span, w),
                None => remove_span(&mut line, span),
            }
        }
    }
    line
}

/// Remove a token and the whitespace that separated it from the previous one (or, for the first
/// token, the whitespace after it), so `a b c` minus `b` is `a c`.
fn remove_span(line: &mut String, span: Range<usize>) {
    let bytes = line.as_bytes();
    let mut start = span.start;
    while start > 0 && bytes[start - 1].is_ascii_whitespace() && bytes[start - 1] != b'\n' {
        start -= 1;
    }
    let mut end = span.end;
    if start == 0 || bytes[start.saturating_sub(1)] == b'\n' {
        // First token of the line: take the whitespace after it instead.
        start = span.start;
        while end < bytes.len() && bytes[end].is_ascii_whitespace() && bytes[end] != b'\n' {
            end += 1;
        }
        // Keep the line's trailing whitespace if nothing follows.
        if end == bytes.len() || bytes[end] == b'\n' {
            end = span.end;
        }
    }
    line.replace_range(start..end, "");
}

/// Remove arguments: an item `key=value` removes exactly that argument, an item `key` (no `=`)
/// removes every argument of that parameter. For uninstall.
pub fn remove_args(line: &str, remove: &[&str]) -> String {
    let mut line = line.to_string();
    for r in remove {
        loop {
            let toks = tokens(&line);
            let hit = toks.iter().rev().find(|t| {
                if r.contains('=') {
                    same_arg(t.text, r)
                } else {
                    same_key(t.key(), r)
                }
            });
            match hit {
                Some(t) => {
                    let span = t.span.clone();
                    remove_span(&mut line, span);
                }
                None => break,
            }
        }
    }
    line
}

/// The IOMMU arguments for a CPU vendor (reference §1.3): Intel needs `intel_iommu=on`, AMD's
/// IOMMU is on by default; both get `iommu=pt`.
pub fn iommu_args(intel: bool) -> &'static [&'static str] {
    if intel {
        &["intel_iommu=on", "iommu=pt"]
    } else {
        &["iommu=pt"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &[&str] = &["intel_iommu=on", "iommu=pt"];

    /// Ubuntu 22.04's /proc/cmdline on the seed's host, before setup.
    const UBUNTU: &str = "BOOT_IMAGE=/vmlinuz-5.15.0-141-generic root=UUID=5f3a1c2e-8d9b-4c7a-9e11-2b3c4d5e6f70 ro quiet splash vt.handoff=7";

    #[test]
    fn appends_missing_args() {
        assert_eq!(
            ensure_args("quiet splash", W),
            "quiet splash intel_iommu=on iommu=pt"
        );
        assert_eq!(
            ensure_args(UBUNTU, W),
            format!("{UBUNTU} intel_iommu=on iommu=pt")
        );
        assert_eq!(ensure_args("", W), "intel_iommu=on iommu=pt");
        assert_eq!(ensure_args("quiet", &["iommu=pt"]), "quiet iommu=pt");
    }

    #[test]
    fn keeps_spacing_and_trailing_whitespace() {
        assert_eq!(
            ensure_args("  quiet   splash  \n", W),
            "  quiet   splash intel_iommu=on iommu=pt  \n"
        );
        assert_eq!(ensure_args("   ", W), "   intel_iommu=on iommu=pt");
    }

    #[test]
    fn never_duplicates() {
        let l = "quiet intel_iommu=on iommu=pt splash";
        assert_eq!(ensure_args(l, W), l);
        assert_eq!(ensure_args("iommu=pt", W), "iommu=pt intel_iommu=on");
    }

    #[test]
    fn replaces_conflicting_values_in_place() {
        assert_eq!(
            ensure_args("quiet iommu=soft splash", W),
            "quiet iommu=pt splash intel_iommu=on"
        );
        assert_eq!(
            ensure_args("intel_iommu=off quiet", W),
            "intel_iommu=on quiet iommu=pt"
        );
        // `-` and `_` are the same in parameter names.
        assert_eq!(
            ensure_args("intel-iommu=off quiet", W),
            "intel_iommu=on quiet iommu=pt"
        );
        assert_eq!(
            ensure_args("intel-iommu=on iommu=pt", W),
            "intel-iommu=on iommu=pt"
        );
        // Flag form of the same key conflicts too.
        assert_eq!(ensure_args("iommu quiet", &["iommu=pt"]), "iommu=pt quiet");
    }

    #[test]
    fn removes_later_conflicting_repeats() {
        assert_eq!(
            ensure_args("iommu=soft quiet iommu=nopt", &["iommu=pt"]),
            "iommu=pt quiet"
        );
        // The wanted value is present but overridden later: the later one goes.
        assert_eq!(
            ensure_args("iommu=pt quiet iommu=soft splash", &["iommu=pt"]),
            "iommu=pt quiet splash"
        );
    }

    #[test]
    fn stops_at_double_dash() {
        assert_eq!(
            ensure_args("ro quiet -- single iommu=soft", W),
            "ro quiet intel_iommu=on iommu=pt -- single iommu=soft"
        );
        assert_eq!(
            ensure_args("-- single", W),
            "intel_iommu=on iommu=pt -- single"
        );
        assert!(!has_args("ro -- intel_iommu=on iommu=pt", W));
    }

    #[test]
    fn quoted_values_are_one_token() {
        let l = r#"quiet acpi_osi="Windows 2015" splash"#;
        let t = tokens(l);
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].text, r#"acpi_osi="Windows 2015""#);
        assert_eq!(t[1].value(), Some("Windows 2015"));
        assert_eq!(ensure_args(l, W), format!("{l} intel_iommu=on iommu=pt"));
    }

    #[test]
    fn has_args_needs_all_and_no_conflicts() {
        assert!(has_args("quiet intel_iommu=on iommu=pt", W));
        assert!(!has_args("quiet intel_iommu=on", W));
        assert!(!has_args("intel_iommu=on iommu=pt iommu=soft", W));
        assert!(has_args("anything", &[]));
        assert!(!has_args("intel_iommu=onx iommu=pt", W));
    }

    #[test]
    fn arg_value_is_last_occurrence() {
        assert_eq!(arg_value("iommu=soft iommu=pt", "iommu"), Some(Some("pt")));
        assert_eq!(arg_value("quiet", "quiet"), Some(None));
        assert_eq!(arg_value("quiet", "iommu"), None);
    }

    #[test]
    fn remove_args_undoes_ensure() {
        for l in ["quiet splash", UBUNTU, "", "  quiet  "] {
            let e = ensure_args(l, W);
            assert_eq!(remove_args(&e, W), l, "line {l:?}");
        }
        assert_eq!(remove_args("intel_iommu=on quiet", W), "quiet");
        assert_eq!(remove_args("a iommu=pt b iommu=pt", &["iommu"]), "a b");
        assert_eq!(
            remove_args("a iommu=soft b", &["iommu=pt"]),
            "a iommu=soft b"
        );
        assert_eq!(remove_args("iommu=pt\n", &["iommu=pt"]), "\n");
    }

    #[test]
    fn iommu_args_by_vendor() {
        assert_eq!(iommu_args(true), &["intel_iommu=on", "iommu=pt"]);
        assert_eq!(iommu_args(false), &["iommu=pt"]);
    }

    /// Small deterministic generator for the invariants (the cargo-fuzz target does the same at
    /// scale): lines built from a vocabulary of real arguments, odd spacing and quoting.
    fn sample_lines() -> Vec<String> {
        let vocab = [
            "quiet",
            "splash",
            "iommu=soft",
            "iommu=pt",
            "intel_iommu=off",
            "intel-iommu=on",
            "intel_iommu=on",
            "iommu",
            "--",
            "ro",
            "acpi_osi=\"Windows 2015\"",
            "vt.handoff=7",
            "console=ttyS0,115200",
            "\"",
            "=",
            "a=b=c",
            "$GRUB_CMDLINE_LINUX_DEFAULT",
        ];
        let seps = [" ", "  ", "\t", "\n", "\r\n"];
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..600)
            .map(|_| {
                let n = (next() % 7) as usize;
                let mut l = String::new();
                if next() % 3 == 0 {
                    l.push(' ');
                }
                for i in 0..n {
                    if i > 0 {
                        l.push_str(seps[(next() % seps.len() as u64) as usize]);
                    }
                    l.push_str(vocab[(next() % vocab.len() as u64) as usize]);
                }
                if next() % 4 == 0 {
                    l.push('\n');
                }
                l
            })
            .collect()
    }

    #[test]
    fn invariant_ensure_is_idempotent_and_satisfies_has_args() {
        for l in sample_lines() {
            let once = ensure_args(&l, W);
            assert_eq!(ensure_args(&once, W), once, "line {l:?}");
            assert!(has_args(&once, W), "line {l:?} -> {once:?}");
        }
    }

    #[test]
    fn invariant_other_tokens_unchanged() {
        for l in sample_lines() {
            let once = ensure_args(&l, W);
            let others = |s: &str| -> Vec<String> {
                tokens(s)
                    .iter()
                    .filter(|t| !same_key(t.key(), "iommu") && !same_key(t.key(), "intel_iommu"))
                    .map(|t| t.text.to_string())
                    .collect()
            };
            assert_eq!(others(&l), others(&once), "line {l:?}");
            // What follows `--` is untouched byte for byte.
            if let Some(i) = l.find(" -- ") {
                assert!(once.ends_with(&l[i..]), "line {l:?} -> {once:?}");
            }
        }
    }
}
