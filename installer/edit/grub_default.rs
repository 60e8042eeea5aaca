//! Editor for Debian/Ubuntu GRUB defaults: `/etc/default/grub` and the drop-ins in
//! `/etc/default/grub.d/*.cfg`.
//!
//! These are shell fragments that `grub-mkconfig` (`update-grub`) sources with `/bin/sh`: the
//! main file first, then every `grub.d/*.cfg` in glob (name) order, so a later assignment wins
//! and may build on an earlier one (`X="$X console=ttyS0"`). Ubuntu cloud images override
//! `GRUB_CMDLINE_LINUX_DEFAULT` in `50-cloudimg-settings.cfg`: editing only the main file there
//! changes nothing at boot. The normal boot entry gets
//! `${GRUB_CMDLINE_LINUX} ${GRUB_CMDLINE_LINUX_DEFAULT}` (grub's `10_linux`).
//!
//! Only the assignment being edited changes, and inside it only the arguments asked about (see
//! [`super::kargs`]); comments, other lines, the quoting style, an `export` prefix, trailing
//! comments and line endings (LF or CRLF) are kept byte for byte.
//!
//! Limits (reported as errors, never guessed): values spanning several lines, command
//! substitution. Assignments inside `if` blocks are treated as if they always ran.

use super::lines;
use std::collections::HashMap;
use std::ops::Range;

use super::kargs;

pub const DEFAULT_VAR: &str = "GRUB_CMDLINE_LINUX_DEFAULT";
pub const LINUX_VAR: &str = "GRUB_CMDLINE_LINUX";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrubEditError {
    #[error("{file}:{line}: the value of {var} is not closed on its line; edit it by hand to one line and run again")]
    Unterminated {
        file: String,
        line: usize,
        var: String,
    },
    #[error("{file}:{line}: cannot safely change {var}: {reason}; edit it by hand and run again")]
    Complex {
        file: String,
        line: usize,
        var: String,
        reason: String,
    },
    #[error("{var} would still not contain {wanted} after editing {files}: check the files for constructs vgpuctl does not follow (if-blocks, command substitution)")]
    NotEffective {
        var: String,
        wanted: String,
        files: String,
    },
    #[error("{file}:{line}: {reason}, so vgpuctl cannot tell what the kernel command line becomes; write the assignment of GRUB_CMDLINE_LINUX_DEFAULT as a line of its own (VAR=\"...\"), or add the arguments by hand")]
    Unsupported {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}:{line}: `unset {var}` runs after every assignment of it, and no variable of the kernel command line is left to carry {wanted}; remove the unset, or add the arguments by hand")]
    Unset {
        file: String,
        line: usize,
        var: String,
        wanted: String,
    },
    #[error("adding {wanted} in {files} would also change other kernel arguments (an unbalanced quote?); edit the files by hand and run again")]
    WouldChangeOthers { wanted: String, files: String },
}

/// A planned change of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEdit {
    pub name: String,
    pub before: String,
    pub after: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    /// Inner text of `"..."`, raw (escapes not processed).
    Double(String),
    /// Inner text of `'...'`.
    Single(String),
    /// Unquoted text, raw.
    Bare(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Assign {
    /// 0-based line index in the file.
    line: usize,
    /// Index among the file's assignments (stable across in-place edits of values).
    ord: usize,
    name: String,
    /// Byte range of the value inside the line body (without line ending).
    value: Range<usize>,
    segs: Vec<Seg>,
    /// The value's quote was not closed on this line.
    unterminated: bool,
    /// `unset NAME`: no value, nothing to edit.
    unset: bool,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}
fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The variables whose value the kernel gets.
fn watched(name: &str) -> bool {
    name == DEFAULT_VAR || name == LINUX_VAR
}

/// The quoting segments of an assignment's value (the whole shell word after `=`).
fn segments(raw: &str) -> (Vec<Seg>, bool) {
    let b = raw.as_bytes();
    let mut segs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let s = i + 1;
                let mut j = s;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j >= b.len() {
                    segs.push(Seg::Double(raw[s..].to_string()));
                    return (segs, true);
                }
                segs.push(Seg::Double(raw[s..j].to_string()));
                i = j + 1;
            }
            b'\'' => {
                let s = i + 1;
                match raw[s..].find('\'') {
                    Some(k) => {
                        segs.push(Seg::Single(raw[s..s + k].to_string()));
                        i = s + k + 1;
                    }
                    None => {
                        segs.push(Seg::Single(raw[s..].to_string()));
                        return (segs, true);
                    }
                }
            }
            _ => {
                let s = i;
                while i < b.len() && !matches!(b[i], b'"' | b'\'') {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let e = i.min(b.len());
                segs.push(Seg::Bare(raw[s..e].to_string()));
                i = e;
            }
        }
    }
    (segs, false)
}

/// Every assignment in a file, and why an assignment of a watched variable cannot be followed.
struct Analysis {
    assigns: Vec<Assign>,
    /// (0-based line, reason) for constructs that make the watched variables unknowable.
    problems: Vec<(usize, String)>,
}

/// What `/bin/sh` does with the file (see [`super::sh_scan`]): the assignments and unsets that
/// certainly run in the sourcing shell, and the constructs that may change a watched variable
/// in a way an editor cannot follow (refused by [`check_file`]).
fn analyze(content: &str) -> Analysis {
    let scan = super::sh_scan::scan(content);
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(content.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_of = |off: usize| line_starts.partition_point(|s| *s <= off) - 1;
    let body_len = |l: usize| {
        let end = line_starts.get(l + 1).map_or(content.len(), |s| s - 1);
        let body = &content[line_starts[l]..end];
        body.strip_suffix('\r').unwrap_or(body).len()
    };
    let mut out = Analysis {
        assigns: Vec::new(),
        problems: Vec::new(),
    };
    let mentions = content.contains(LINUX_VAR);
    for (off, what) in &scan.unsupported {
        if mentions {
            out.problems
                .push((line_of(*off), format!("{what} is not supported")));
        }
    }
    for c in &scan.commands {
        let text = |w: &super::sh_scan::Word| &content[w.start..w.end];
        let line = line_of(c.words[0].start);
        let lead = c
            .words
            .iter()
            .take_while(|w| super::sh_scan::assignment_name(text(w)).is_some())
            .count();
        let cmd = c.words.get(lead).map(text);
        let mut assign_words: Vec<&super::sh_scan::Word> = Vec::new();
        match cmd {
            None => assign_words.extend(&c.words),
            Some(cmd) => {
                for w in &c.words[..lead] {
                    let n = super::sh_scan::assignment_name(text(w)).unwrap_or(0);
                    if watched(&text(w)[..n]) {
                        out.problems.push((
                            line,
                            format!(
                                "`{}=... {cmd}` is a prefix assignment (sh keeps it only for special builtins such as `:`)",
                                &text(w)[..n]
                            ),
                        ));
                    }
                }
                let args = &c.words[lead + 1..];
                match cmd {
                    "export" if lead == 0 => assign_words.extend(
                        args.iter()
                            .filter(|w| super::sh_scan::assignment_name(text(w)).is_some()),
                    ),
                    "unset" => {
                        let functions = args.iter().any(|w| text(w) == "-f");
                        for w in args.iter().filter(|w| watched(text(w)) && !functions) {
                            if c.conditional || c.subshell {
                                out.problems.push((
                                    line,
                                    format!("`unset {}` may or may not run", text(w)),
                                ));
                            } else {
                                out.assigns.push(Assign {
                                    line: line_of(w.start),
                                    ord: out.assigns.len(),
                                    name: text(w).to_string(),
                                    value: 0..0,
                                    segs: Vec::new(),
                                    unterminated: false,
                                    unset: true,
                                });
                            }
                        }
                    }
                    "." | "source" | "eval" => out
                        .problems
                        .push((line, format!("`{cmd}` runs shell code vgpuctl cannot see"))),
                    "readonly" | "local" | "declare" | "typeset" | "read" | "getopts"
                    | "printf" | "mapfile" | "readarray" | "let" | "export" => {
                        for w in args {
                            let t = text(w);
                            let n = super::sh_scan::assignment_name(t).unwrap_or(t.len());
                            if watched(&t[..n]) || t.split(['-', '=']).any(watched) {
                                out.problems
                                    .push((line, format!("`{cmd}` may change {}", &t[..n])));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for w in assign_words {
            let t = text(w);
            let n = super::sh_scan::assignment_name(t).unwrap_or(0);
            let name = &t[..n];
            let raw = &t[n + 1..];
            if watched(name) {
                if c.subshell {
                    out.problems.push((
                        line,
                        format!("{name} is assigned in a subshell (pipeline, `&` or parentheses)"),
                    ));
                    continue;
                }
                if c.conditional {
                    out.problems.push((
                        line,
                        format!(
                            "{name} is assigned conditionally (after `&&`/`||`, inside if/case/a loop/braces/a function, or after `return`)"
                        ),
                    ));
                    continue;
                }
                if raw.contains("$(") || raw.contains('`') {
                    out.problems.push((
                        line,
                        format!("the value of {name} uses command substitution"),
                    ));
                    continue;
                }
                let plain_braces = raw.match_indices("${").all(|(i, _)| {
                    raw[i + 2..]
                        .find('}')
                        .is_some_and(|k| k > 0 && raw[i + 2..i + 2 + k].bytes().all(is_name))
                });
                if !plain_braces {
                    out.problems.push((
                        line,
                        format!(
                            "the value of {name} uses a parameter expansion other than ${{NAME}}"
                        ),
                    ));
                    continue;
                }
            } else if c.conditional || c.subshell {
                continue;
            }
            let l = line_of(w.start);
            let vs = w.start + n + 1 - line_starts[l];
            let (segs, open) = segments(raw);
            let multi_line = raw.contains('\n');
            let ve = if multi_line {
                body_len(l)
            } else {
                (w.end - line_starts[l]).min(body_len(l))
            };
            out.assigns.push(Assign {
                line: l,
                ord: out.assigns.len(),
                name: name.to_string(),
                value: vs.min(ve)..ve,
                segs,
                unterminated: open || multi_line,
                unset: false,
            });
        }
    }
    out
}

/// Parse the first assignment on a line (tests and re-reads of one edited line).
fn parse_assign(idx: usize, body: &str) -> Option<Assign> {
    analyze(body)
        .assigns
        .into_iter()
        .find(|a| !a.unset)
        .map(|a| Assign { line: idx, ..a })
}

fn assignments(content: &str) -> Vec<Assign> {
    analyze(content).assigns
}

/// Refuse a file in which the watched variables may change in ways the editor cannot follow:
/// conditional or subshell assignments, prefix assignments, `eval`/`.`, `read VAR`, command
/// substitution, here-documents. `name` is used in the error.
pub fn check_file(name: &str, content: &str) -> Result<(), GrubEditError> {
    match analyze(content).problems.into_iter().next() {
        Some((line, reason)) => Err(GrubEditError::Unsupported {
            file: name.to_string(),
            line: line + 1,
            reason,
        }),
        None => Ok(()),
    }
}

/// Expand `$NAME` and `${NAME}` from `env`, and process backslashes the way `sh` does inside
/// double quotes (`in_double`) or unquoted.
fn expand(raw: &str, env: &HashMap<String, String>, in_double: bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() => {
                let c = b[i + 1];
                if !in_double || matches!(c, b'$' | b'`' | b'"' | b'\\') {
                    out.push(raw[i + 1..].chars().next().unwrap_or_default());
                    i += 1 + raw[i + 1..].chars().next().map_or(1, char::len_utf8);
                } else {
                    out.push('\\');
                    i += 1;
                }
            }
            b'$' if i + 1 < b.len() && b[i + 1] == b'{' => match raw[i + 2..].find('}') {
                Some(k) if raw[i + 2..i + 2 + k].bytes().all(is_name) && k > 0 => {
                    out.push_str(env.get(&raw[i + 2..i + 2 + k]).map_or("", |s| s));
                    i += 2 + k + 1;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            },
            b'$' if i + 1 < b.len() && is_name_start(b[i + 1]) => {
                let s = i + 1;
                let mut j = s;
                while j < b.len() && is_name(b[j]) {
                    j += 1;
                }
                out.push_str(env.get(&raw[s..j]).map_or("", |s| s));
                i = j;
            }
            _ => {
                let c = raw[i..].chars().next().unwrap_or_default();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn eval(segs: &[Seg], env: &HashMap<String, String>) -> String {
    segs.iter()
        .map(|s| match s {
            Seg::Double(r) => expand(r, env, true),
            Seg::Single(r) => r.clone(),
            Seg::Bare(r) => expand(r, env, false),
        })
        .collect()
}

fn self_refs(a: &Assign) -> bool {
    let dollar = format!("${}", a.name);
    let braced = format!("${{{}}}", a.name);
    a.segs.iter().any(|s| match s {
        Seg::Double(r) | Seg::Bare(r) => {
            r.contains(&braced)
                || r.match_indices(&dollar).any(|(i, _)| {
                    r.as_bytes()
                        .get(i + dollar.len())
                        .is_none_or(|c| !is_name(*c))
                })
        }
        Seg::Single(_) => false,
    })
}

fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The order in which update-grub reads `files`: `files[0]` is `/etc/default/grub`, then the
/// drop-ins whose name ends in `.cfg`, sorted by file name (the shell glob's order). Other
/// names are not sourced (a `.cfg.dpkg-old` or `README` left in grub.d).
pub fn sourcing_order(files: &[(&str, &str)]) -> Vec<usize> {
    if files.is_empty() {
        return Vec::new();
    }
    let mut drop_ins: Vec<usize> = (1..files.len())
        .filter(|&i| base_name(files[i].0).ends_with(".cfg"))
        .collect();
    drop_ins.sort_by(|&a, &b| base_name(files[a].0).cmp(base_name(files[b].0)));
    std::iter::once(0).chain(drop_ins).collect()
}

fn run_env(files: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for i in sourcing_order(files) {
        for a in assignments(files[i].1) {
            if a.unset {
                env.remove(&a.name);
                continue;
            }
            if a.unterminated {
                continue;
            }
            let v = eval(&a.segs, &env);
            env.insert(a.name, v);
        }
    }
    env
}

/// The value `var` has once update-grub has sourced every file (see [`sourcing_order`]).
pub fn effective_var(files: &[(&str, &str)], var: &str) -> String {
    run_env(files).remove(var).unwrap_or_default()
}

/// The command line update-grub gives the normal boot entry:
/// `GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT`, whitespace-trimmed.
/// The files as they are after `plan` is applied (files the plan does not touch unchanged).
pub fn applied<'a>(files: &[(&'a str, &'a str)], plan: &'a [FileEdit]) -> Vec<(&'a str, &'a str)> {
    files
        .iter()
        .map(|(n, c)| {
            plan.iter()
                .find(|e| e.name == *n)
                .map_or((*n, *c), |e| (*n, e.after.as_str()))
        })
        .collect()
}

pub fn effective_cmdline(files: &[(&str, &str)]) -> String {
    let env = run_env(files);
    let get = |k: &str| env.get(k).map_or("", |s| s.trim());
    [get(LINUX_VAR), get(DEFAULT_VAR)]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of the last assignment of `var` in one file, expanded with only this file's
/// earlier assignments known. `None` when the file does not assign it.
pub fn read_var(content: &str, var: &str) -> Option<String> {
    effective_in(&[("file", content)], var)
}

fn effective_in(files: &[(&str, &str)], var: &str) -> Option<String> {
    run_env(files).remove(var)
}

enum Op<'a> {
    Ensure(&'a [&'a str]),
    Replace(&'a [&'a str]),
    Remove(&'a [&'a str]),
}

impl Op<'_> {
    fn apply(&self, s: &str) -> String {
        match self {
            Op::Ensure(w) => kargs::ensure_args(s, w),
            Op::Replace(w) => kargs::replace_conflicts(s, w),
            Op::Remove(w) => kargs::remove_args(s, w),
        }
    }
}

/// Rewrite the value of assignment `a` in `body` with `op`, keeping its quoting style.
fn edit_value(file: &str, body: &str, a: &Assign, op: &Op) -> Result<String, GrubEditError> {
    if a.unterminated {
        return Err(GrubEditError::Unterminated {
            file: file.to_string(),
            line: a.line + 1,
            var: a.name.clone(),
        });
    }
    let raw = &body[a.value.clone()];
    let new_raw = match a.segs.as_slice() {
        [] => {
            let v = op.apply("");
            if v.is_empty() {
                String::new()
            } else {
                format!("\"{v}\"")
            }
        }
        [Seg::Double(s)] => format!("\"{}\"", op.apply(s)),
        [Seg::Single(s)] => format!("'{}'", op.apply(s)),
        [Seg::Bare(s)] => {
            let v = op.apply(s);
            if v == *s {
                s.clone()
            } else if !v.bytes().any(|c| c.is_ascii_whitespace()) {
                v
            } else if !s.contains('\\') {
                format!("\"{v}\"")
            } else if let Some(tail) = v
                .strip_prefix(s.as_str())
                .map(|tail| format!("{s}\"{tail}\""))
                .filter(|new| {
                    // Re-read: a trailing backslash would escape the quote we open.
                    parse_assign(0, &format!("X={new}")).is_some_and(|b| {
                        !b.unterminated
                            && b.segs.len() == 2
                            && b.segs[0] == Seg::Bare(s.clone())
                            && b.value.len() == new.len()
                    })
                })
            {
                // Backslash escapes mean something else inside double quotes (`\ ` stays a
                // backslash): keep the unquoted part as it is and quote only what is appended.
                tail
            } else {
                return Err(GrubEditError::Complex {
                    file: file.to_string(),
                    line: a.line + 1,
                    var: a.name.clone(),
                    reason: "its unquoted value has backslash escapes".into(),
                });
            }
        }
        segs => {
            // A concatenation like "a"$X'b': only appending is safe. Any change inside it is
            // refused rather than guessed.
            let concat: String = segs
                .iter()
                .map(|s| match s {
                    Seg::Double(r) | Seg::Single(r) | Seg::Bare(r) => r.as_str(),
                })
                .collect();
            let (wanted, removing) = match op {
                Op::Ensure(w) | Op::Replace(w) => (*w, false),
                Op::Remove(w) => (*w, true),
            };
            let unchanged = match op {
                Op::Remove(_) => kargs::remove_args(&concat, wanted) == concat,
                _ => kargs::replace_conflicts(&concat, wanted) == concat,
            };
            if !unchanged {
                return Err(GrubEditError::Complex {
                    file: file.to_string(),
                    line: a.line + 1,
                    var: a.name.clone(),
                    reason: format!(
                        "its value mixes quoting styles and {} one of {}",
                        if removing {
                            "contains"
                        } else {
                            "sets another value for"
                        },
                        wanted.join(" ")
                    ),
                });
            }
            let toks = kargs::tokens(&concat);
            let missing: Vec<&str> = match op {
                Op::Ensure(w) => w
                    .iter()
                    .filter(|x| !toks.iter().any(|t| t.text == **x))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            if missing.is_empty() {
                raw.to_string()
            } else {
                // An unbalanced double quote in the value would swallow what is appended.
                let appended = format!("{concat} {}", missing.join(" "));
                let seen = kargs::tokens(&appended);
                if !missing.iter().all(|m| seen.iter().any(|t| t.text == *m)) {
                    return Err(GrubEditError::Complex {
                        file: file.to_string(),
                        line: a.line + 1,
                        var: a.name.clone(),
                        reason: "its value mixes quoting styles and has an unbalanced double quote"
                            .into(),
                    });
                }
                format!("{raw}\" {}\"", missing.join(" "))
            }
        }
    };
    let mut out = body.to_string();
    out.replace_range(a.value.clone(), &new_raw);
    Ok(out)
}

fn rebuild(content: &str, line: usize, new_body: &str) -> String {
    lines(content)
        .iter()
        .enumerate()
        .map(|(i, (b, e))| {
            if i == line {
                format!("{new_body}{e}")
            } else {
                format!("{b}{e}")
            }
        })
        .collect()
}

fn edit_assign(file: &str, content: &str, a: &Assign, op: &Op) -> Result<String, GrubEditError> {
    let ls = lines(content);
    let body = ls[a.line].0;
    let nb = edit_value(file, body, a, op)?;
    Ok(rebuild(content, a.line, &nb))
}

/// Append `VAR="args"` as a new last line, keeping the file's line-ending style.
fn append_assignment(content: &str, var: &str, args: &[&str]) -> String {
    let eol = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = content.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(eol);
    }
    out.push_str(&format!("{var}=\"{}\"{eol}", args.join(" ")));
    out
}

/// [`append_assignment`], refused when the shell would not read the new line as an assignment
/// of its own (the file ends inside a quote or with a line continuation).
fn append_checked(
    file: &str,
    content: &str,
    var: &str,
    args: &[&str],
) -> Result<String, GrubEditError> {
    let out = append_assignment(content, var, args);
    let last = lines(&out).len().saturating_sub(1);
    let ok = analyze(&out)
        .assigns
        .last()
        .is_some_and(|a| a.name == var && a.line == last && !a.unterminated && !a.unset)
        && check_file(file, &out).is_ok();
    if ok {
        Ok(out)
    } else {
        Err(GrubEditError::Complex {
            file: file.to_string(),
            line: lines(content).len().max(1),
            var: var.to_string(),
            reason: "the file ends inside a quote or with a line continuation, so a line added at its end would not be an assignment".into(),
        })
    }
}

/// In one file (`name` is used in errors): make the last assignment of `var` contain `wanted` (see
/// [`kargs::ensure_args`]), or append an assignment when the file has none. For a single file;
/// use [`plan_cmdline_edit`] when drop-ins exist.
pub fn ensure_in_file(
    name: &str,
    content: &str,
    var: &str,
    wanted: &[&str],
) -> Result<String, GrubEditError> {
    check_file(name, content)?;
    match assignments(content)
        .into_iter()
        .rev()
        .find(|a| a.name == var)
    {
        Some(a) if a.unset => Err(GrubEditError::Unset {
            file: name.to_string(),
            line: a.line + 1,
            var: var.to_string(),
            wanted: wanted.join(" "),
        }),
        Some(a) => {
            let once = edit_assign(name, content, &a, &Op::Ensure(wanted))?;
            // Refuse an edit that the next run would not take as done (quoting too tangled to
            // follow): every run would change the file again.
            let again = assignments(&once)
                .into_iter()
                .rev()
                .find(|b| b.name == var)
                .map(|b| edit_assign(name, &once, &b, &Op::Ensure(wanted)));
            match again {
                Some(Ok(twice)) if twice == once => Ok(once),
                _ => Err(GrubEditError::Complex {
                    file: name.to_string(),
                    line: a.line + 1,
                    var: var.to_string(),
                    reason: "its quoting is too tangled to edit reliably".into(),
                }),
            }
        }
        None if wanted.is_empty() => Ok(content.to_string()),
        None => append_checked(name, content, var, wanted),
    }
}

/// In one file: remove `remove` (see [`kargs::remove_args`]) from every assignment of `var`.
pub fn remove_in_file(
    name: &str,
    content: &str,
    var: &str,
    remove: &[&str],
) -> Result<String, GrubEditError> {
    let mut out = content.to_string();
    for a in assignments(content)
        .into_iter()
        .filter(|a| a.name == var && !a.unset)
    {
        out = edit_assign(name, &out, &a, &Op::Remove(remove))?;
    }
    Ok(out)
}

/// Which files to change, and how, so that the value update-grub computes for `var` contains
/// every `wanted` argument and no conflicting value (see module docs for the sourcing rules).
///
/// The last assignment of `var` (in sourcing order) decides; if it refers to the variable itself
/// (`"$VAR ..."`) the assignment before it contributes too, and so on. Conflicting values are
/// replaced in every contributing assignment; missing arguments are appended to the last one;
/// when nothing assigns `var`, an assignment is appended to the main file (`files[0]`).
/// Returns only files that change; empty when the effective value already has the arguments.
pub fn plan_cmdline_edit(
    files: &[(&str, &str)],
    var: &str,
    wanted: &[&str],
) -> Result<Vec<FileEdit>, GrubEditError> {
    plan_with(files, &[var], &[var], wanted, &|f| effective_var(f, var))
}

/// The IOMMU step's plan: what to change so that the normal boot entry's command line
/// ([`effective_cmdline`]: `GRUB_CMDLINE_LINUX` then `GRUB_CMDLINE_LINUX_DEFAULT`) has every
/// `wanted` argument and no conflicting value. Conflicts are replaced wherever they come from
/// (either variable, any file); missing arguments go to `GRUB_CMDLINE_LINUX_DEFAULT`, as
/// Debian and Ubuntu document, or to `GRUB_CMDLINE_LINUX` when only that one is assigned
/// (RHEL-family files); a new `GRUB_CMDLINE_LINUX_DEFAULT` line when neither is.
pub fn plan_kernel_args(
    files: &[(&str, &str)],
    wanted: &[&str],
) -> Result<Vec<FileEdit>, GrubEditError> {
    plan_with(
        files,
        &[LINUX_VAR, DEFAULT_VAR],
        &[DEFAULT_VAR, LINUX_VAR],
        wanted,
        &|f| effective_cmdline(f),
    )
}

/// The assignments of `var` that make its final value, last first: the last assignment, and
/// while it refers to the variable itself, the one before it.
fn chain(files: &[(&str, &str)], var: &str) -> Vec<(usize, Assign)> {
    let all: Vec<(usize, Assign)> = sourcing_order(files)
        .into_iter()
        .flat_map(|fi| {
            assignments(files[fi].1)
                .into_iter()
                .filter(|a| a.name == var)
                .map(move |a| (fi, a))
        })
        .collect();
    let mut out = Vec::new();
    for item in all.into_iter().rev() {
        let stop = item.1.unset || item.1.unterminated || !self_refs(&item.1);
        out.push(item);
        if stop {
            break;
        }
    }
    out
}

/// Computes the value being ensured from (name, content) files.
type Effective<'a> = dyn Fn(&[(&str, &str)]) -> String + 'a;

fn plan_with(
    files: &[(&str, &str)],
    replace_vars: &[&str],
    target_vars: &[&str],
    wanted: &[&str],
    effective: &Effective<'_>,
) -> Result<Vec<FileEdit>, GrubEditError> {
    for i in sourcing_order(files) {
        check_file(files[i].0, files[i].1)?;
    }
    if files.is_empty() || kargs::has_args(&effective(files), wanted) {
        return Ok(Vec::new());
    }
    let mut contents: Vec<String> = files.iter().map(|(_, c)| c.to_string()).collect();
    let view = |contents: &[String]| -> Vec<(String, String)> {
        files
            .iter()
            .zip(contents)
            .map(|((n, _), c)| (n.to_string(), c.clone()))
            .collect()
    };
    let eval_now = |contents: &[String]| -> String {
        let v = view(contents);
        let refs: Vec<(&str, &str)> = v.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        effective(&refs)
    };
    // Replace conflicts in every contributing assignment. Each edit changes one line in place,
    // so the line numbers of the other assignments stay valid; re-parse each line before use.
    for var in replace_vars {
        for (fi, a) in chain(files, var).into_iter().filter(|(_, a)| !a.unset) {
            let fresh = assignments(&contents[fi])
                .into_iter()
                .find(|b| b.ord == a.ord)
                .expect("edited line is still an assignment");
            contents[fi] = edit_assign(files[fi].0, &contents[fi], &fresh, &Op::Replace(wanted))?;
        }
    }
    let eff = eval_now(&contents);
    let toks = kargs::tokens(&eff);
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !toks.iter().any(|t| t.text == **w))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let v = view(&contents);
        let refs: Vec<(&str, &str)> = v.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        // The first target variable that is assigned somewhere gets the missing arguments;
        // when none is, the first one is added to the main file.
        // A variable whose last word is an `unset` cannot carry them (the unset is someone's
        // decision, and its file may not be ours): the next variable is tried, then refused.
        let heads: Vec<Option<(usize, Assign)>> = target_vars
            .iter()
            .map(|v| chain(&refs, v).into_iter().next())
            .collect();
        if let Some((fi, a)) = heads.iter().flatten().find(|(_, a)| !a.unset) {
            contents[*fi] = edit_assign(files[*fi].0, &contents[*fi], a, &Op::Ensure(&missing))?;
        } else if let Some(k) = heads.iter().position(Option::is_none) {
            contents[0] = append_checked(files[0].0, &contents[0], target_vars[k], &missing)?;
        } else if let Some((fi, a)) = heads.into_iter().flatten().next() {
            return Err(GrubEditError::Unset {
                file: files[fi].0.to_string(),
                line: a.line + 1,
                var: target_vars.join(" and "),
                wanted: missing.join(" "),
            });
        }
    }
    let after = eval_now(&contents);
    if !kargs::has_args(&after, wanted) {
        return Err(GrubEditError::NotEffective {
            var: target_vars[0].to_string(),
            wanted: wanted.join(" "),
            files: files.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
        });
    }
    // Nothing but the wanted parameters may change in what the kernel gets.
    if other_args(&effective(files), wanted) != other_args(&after, wanted) {
        return Err(GrubEditError::WouldChangeOthers {
            wanted: wanted.join(" "),
            files: files.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(files
        .iter()
        .zip(contents)
        .filter(|((_, before), after)| *before != after.as_str())
        .map(|((name, before), after)| FileEdit {
            name: name.to_string(),
            before: before.to_string(),
            after,
        })
        .collect())
}

/// The arguments of a command line whose parameters are not among `wanted`'s, as the kernel
/// splits them (its isspace() includes the vertical tab).
fn other_args(line: &str, wanted: &[&str]) -> Vec<String> {
    let norm = |k: &str| k.replace('-', "_");
    let keys: Vec<String> = wanted
        .iter()
        .map(|w| norm(w.split('=').next().unwrap_or(w)))
        .collect();
    let line = line.replace('\u{b}', " ");
    kargs::tokens(&line)
        .iter()
        .filter(|t| !keys.contains(&norm(t.key())))
        .map(|t| t.text.to_string())
        .collect()
}

/// Judge an edit by what `/bin/sh` printed for `(GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT)`
/// before and after it: every other argument of the boot entry survives, in order, and each
/// wanted argument is there exactly once (no other value of its parameter). `Err` says what is
/// wrong.
pub fn judge_sourced(
    before: &(String, String),
    after: &(String, String),
    wanted: &[&str],
) -> Result<(), String> {
    let line = |v: &(String, String)| format!("{} {}", v.0, v.1).replace('\u{b}', " ");
    let (b, a) = (line(before), line(after));
    if other_args(&b, wanted) != other_args(&a, wanted) {
        return Err(format!(
            "the other kernel arguments would change: `{}` would become `{}`",
            b.trim(),
            a.trim()
        ));
    }
    let norm = |k: &str| k.replace('-', "_");
    let toks = kargs::tokens(&a);
    for w in wanted {
        let key = norm(w.split('=').next().unwrap_or(w));
        let same: Vec<&str> = toks
            .iter()
            .filter(|t| norm(t.key()) == key)
            .map(|t| t.text)
            .collect();
        if same != [*w] {
            return Err(format!(
                "the kernel would get {} for {w} (`{}`)",
                if same.is_empty() {
                    "nothing".to_string()
                } else {
                    same.join(" ")
                },
                a.trim()
            ));
        }
    }
    Ok(())
}

/// For uninstall: remove `remove` from every assignment of `var` in every file.
pub fn plan_cmdline_removal(
    files: &[(&str, &str)],
    var: &str,
    remove: &[&str],
) -> Result<Vec<FileEdit>, GrubEditError> {
    let mut out = Vec::new();
    for (name, content) in files {
        let mut after = content.to_string();
        for a in assignments(content)
            .into_iter()
            .filter(|a| a.name == var && !a.unset)
        {
            after = edit_assign(name, &after, &a, &Op::Remove(remove))?;
        }
        if after != *content {
            out.push(FileEdit {
                name: name.to_string(),
                before: content.to_string(),
                after,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &[&str] = &["intel_iommu=on", "iommu=pt"];

    /// Ubuntu 22.04's /etc/default/grub as shipped by the grub2-common package.
    const UBUNTU_2204: &str = r#"# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
# This works with Linux (no patch required) and with any kernel that obtains
# the memory map information from GRUB (GNU Mach, kernel of FreeBSD ...)
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console

# The resolution used on graphical terminal
# note that you can use only modes which your graphic card supports via VBE
# you can see them in real GRUB with the command `vbeinfo'
#GRUB_GFXMODE=640x480

# Uncomment if you don't want GRUB to pass "root=UUID=xxx" parameter to Linux
#GRUB_DISABLE_LINUX_UUID=true

# Uncomment to disable generation of recovery mode menu entries
#GRUB_DISABLE_RECOVERY="true"

# Uncomment to get a beep at grub start
#GRUB_INIT_TUNE="480 440 1"
"#;

    /// Ubuntu 22.04 cloud image: /etc/default/grub.d/50-cloudimg-settings.cfg.
    const CLOUDIMG: &str = r#"# Cloud Image specific Grub settings for Generic Cloud Images
# CLOUD_IMG: This file was created/modified by the Cloud Image build process

# Set the recordfail timeout
GRUB_RECORDFAIL_TIMEOUT=0

# Do not wait on grub prompt
GRUB_TIMEOUT=0

# Set the default commandline
GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"

# Set the grub console type
GRUB_TERMINAL=console
"#;

    /// Ubuntu cloud image: /etc/default/grub.d/40-force-partuuid.cfg.
    const PARTUUID: &str = "# Force the use of a PARTUUID\nGRUB_FORCE_PARTUUID=\n";

    fn changed_lines(a: &str, b: &str) -> Vec<(String, String)> {
        a.lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect()
    }

    #[test]
    fn ubuntu_default_file_gains_args_only_on_its_line() {
        let out = ensure_in_file("/etc/default/grub", UBUNTU_2204, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            changed_lines(UBUNTU_2204, &out),
            vec![(
                r#"GRUB_CMDLINE_LINUX_DEFAULT="quiet splash""#.to_string(),
                r#"GRUB_CMDLINE_LINUX_DEFAULT="quiet splash intel_iommu=on iommu=pt""#.to_string()
            )]
        );
        assert_eq!(
            out.len(),
            UBUNTU_2204.len() + " intel_iommu=on iommu=pt".len()
        );
        assert_eq!(
            ensure_in_file("/etc/default/grub", &out, DEFAULT_VAR, W).unwrap(),
            out
        );
        assert_eq!(
            remove_in_file("/etc/default/grub", &out, DEFAULT_VAR, W).unwrap(),
            UBUNTU_2204
        );
    }

    #[test]
    fn effective_cmdline_of_ubuntu_defaults() {
        assert_eq!(
            effective_cmdline(&[("/etc/default/grub", UBUNTU_2204)]),
            "quiet splash"
        );
        let edited = ensure_in_file("/etc/default/grub", UBUNTU_2204, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            effective_cmdline(&[("/etc/default/grub", &edited)]),
            "quiet splash intel_iommu=on iommu=pt"
        );
    }

    #[test]
    fn cloud_image_drop_in_overrides_the_main_file() {
        let files = [
            ("/etc/default/grub", UBUNTU_2204),
            ("/etc/default/grub.d/50-cloudimg-settings.cfg", CLOUDIMG),
            ("/etc/default/grub.d/40-force-partuuid.cfg", PARTUUID),
        ];
        assert_eq!(effective_cmdline(&files), "console=tty1 console=ttyS0");
        assert_eq!(sourcing_order(&files), vec![0, 2, 1]);
        let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].name, "/etc/default/grub.d/50-cloudimg-settings.cfg");
        assert_eq!(
            changed_lines(CLOUDIMG, &plan[0].after),
            vec![(
                r#"GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0""#.to_string(),
                r#"GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0 intel_iommu=on iommu=pt""#
                    .to_string()
            )]
        );
        // Applying the plan, then planning again: nothing to do.
        let applied = [files[0], (files[1].0, plan[0].after.as_str()), files[2]];
        assert_eq!(
            effective_cmdline(&applied),
            "console=tty1 console=ttyS0 intel_iommu=on iommu=pt"
        );
        assert!(plan_cmdline_edit(&applied, DEFAULT_VAR, W)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn editing_only_the_main_file_would_not_take_effect_with_a_drop_in() {
        let main = ensure_in_file("/etc/default/grub", UBUNTU_2204, DEFAULT_VAR, W).unwrap();
        let files = [
            ("/etc/default/grub", main.as_str()),
            ("/etc/default/grub.d/50-cloudimg-settings.cfg", CLOUDIMG),
        ];
        assert!(!kargs::has_args(&effective_cmdline(&files), W));
    }

    #[test]
    fn self_referencing_drop_in_carries_earlier_value() {
        let main = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet iommu=soft\"\n";
        let drop = "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0\"\n";
        let files = [
            ("/etc/default/grub", main),
            ("/etc/default/grub.d/60-serial.cfg", drop),
        ];
        assert_eq!(
            effective_var(&files, DEFAULT_VAR),
            "quiet iommu=soft console=ttyS0"
        );
        let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(
            plan[0].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet iommu=pt\"\n"
        );
        assert_eq!(
            plan[1].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0 intel_iommu=on\"\n"
        );
        let applied = [
            (files[0].0, plan[0].after.as_str()),
            (files[1].0, plan[1].after.as_str()),
        ];
        assert_eq!(
            effective_var(&applied, DEFAULT_VAR),
            "quiet iommu=pt console=ttyS0 intel_iommu=on"
        );
        assert!(plan_cmdline_edit(&applied, DEFAULT_VAR, W)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn braced_self_reference_and_export() {
        let main = "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\n";
        let drop = "export GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} nomodeset\" # keep\n";
        let files = [
            ("/etc/default/grub", main),
            ("/etc/default/grub.d/z.cfg", drop),
        ];
        assert_eq!(effective_var(&files, DEFAULT_VAR), "quiet nomodeset");
        let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(
            plan[0].after,
            "export GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} nomodeset intel_iommu=on iommu=pt\" # keep\n"
        );
    }

    #[test]
    fn quoting_styles_are_kept() {
        assert_eq!(
            ensure_in_file(
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT='quiet splash'\n",
                DEFAULT_VAR,
                W
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet splash intel_iommu=on iommu=pt'\n"
        );
        // Unquoted single word: quotes are needed once there is a space.
        assert_eq!(
            ensure_in_file(
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=quiet\n",
                DEFAULT_VAR,
                W
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n"
        );
        // Unquoted replacement that stays one word keeps no quotes.
        assert_eq!(
            ensure_in_file(
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=iommu=soft\n",
                DEFAULT_VAR,
                &["iommu=pt"]
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=iommu=pt\n"
        );
        // Empty values.
        for empty in [
            "GRUB_CMDLINE_LINUX_DEFAULT=\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"\"\n",
        ] {
            assert_eq!(
                ensure_in_file("/etc/default/grub", empty, DEFAULT_VAR, W).unwrap(),
                "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n"
            );
        }
        assert_eq!(
            ensure_in_file(
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=''\n",
                DEFAULT_VAR,
                W
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT='intel_iommu=on iommu=pt'\n"
        );
    }

    #[test]
    fn escaped_quotes_inside_double_quotes() {
        let l = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\"\"\n";
        assert_eq!(
            read_var(l, DEFAULT_VAR).unwrap(),
            "quiet acpi_osi=\"Windows 2015\""
        );
        let out = ensure_in_file("/etc/default/grub", l, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" intel_iommu=on iommu=pt\"\n"
        );
        assert_eq!(
            read_var(&out, DEFAULT_VAR).unwrap(),
            "quiet acpi_osi=\"Windows 2015\" intel_iommu=on iommu=pt"
        );
    }

    #[test]
    fn comments_mentioning_the_variable_are_ignored() {
        let f = "# GRUB_CMDLINE_LINUX_DEFAULT=\"iommu=soft\" was here\n#GRUB_CMDLINE_LINUX_DEFAULT=\"x\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\" # GRUB_CMDLINE_LINUX_DEFAULT=\"y\"\n";
        let out = ensure_in_file("/etc/default/grub", f, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            out,
            "# GRUB_CMDLINE_LINUX_DEFAULT=\"iommu=soft\" was here\n#GRUB_CMDLINE_LINUX_DEFAULT=\"x\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\" # GRUB_CMDLINE_LINUX_DEFAULT=\"y\"\n"
        );
    }

    #[test]
    fn does_not_confuse_linux_and_linux_default() {
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";
        let out = ensure_in_file("/etc/default/grub", f, LINUX_VAR, W).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\"\n"
        );
        assert_eq!(
            effective_cmdline(&[("g", &out)]),
            "intel_iommu=on iommu=pt quiet"
        );
    }

    #[test]
    fn adds_the_variable_when_absent() {
        assert_eq!(
            ensure_in_file("/etc/default/grub", "GRUB_TIMEOUT=5\n", DEFAULT_VAR, W).unwrap(),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n"
        );
        // No trailing newline.
        assert_eq!(
            ensure_in_file("/etc/default/grub", "GRUB_TIMEOUT=5", DEFAULT_VAR, W).unwrap(),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n"
        );
        assert_eq!(
            ensure_in_file("/etc/default/grub", "", DEFAULT_VAR, W).unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n"
        );
        // Plan with no assignment anywhere: the main file gets it.
        let files = [
            ("/etc/default/grub", "GRUB_TIMEOUT=5\n"),
            ("d/10-x.cfg", "GRUB_TIMEOUT=1\n"),
        ];
        let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].name, "/etc/default/grub");
    }

    #[test]
    fn crlf_and_missing_trailing_newline() {
        let f = "GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\r\n# end\r\n";
        assert_eq!(
            ensure_in_file("/etc/default/grub", f, DEFAULT_VAR, W).unwrap(),
            "GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\r\n# end\r\n"
        );
        assert_eq!(
            ensure_in_file("/etc/default/grub", "GRUB_TIMEOUT=5\r\n", DEFAULT_VAR, W).unwrap(),
            "GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\r\n"
        );
        assert_eq!(
            ensure_in_file(
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"",
                DEFAULT_VAR,
                W
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\""
        );
    }

    #[test]
    fn conflicting_values_replaced_in_the_file() {
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=off quiet iommu=soft\"\n";
        assert_eq!(
            ensure_in_file("/etc/default/grub", f, DEFAULT_VAR, W).unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on quiet iommu=pt\"\n"
        );
    }

    #[test]
    fn later_assignment_in_the_same_file_wins() {
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash\"\n";
        let plan = plan_cmdline_edit(&[("g", f)], DEFAULT_VAR, W).unwrap();
        assert_eq!(
            plan[0].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash intel_iommu=on iommu=pt\"\n"
        );
    }

    #[test]
    fn unterminated_value_is_an_error_naming_file_and_line() {
        let f = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\n splash\"\n";
        let e = plan_cmdline_edit(&[("/etc/default/grub", f)], DEFAULT_VAR, W).unwrap_err();
        assert_eq!(
            e,
            GrubEditError::Unterminated {
                file: "/etc/default/grub".into(),
                line: 2,
                var: DEFAULT_VAR.into()
            }
        );
        assert!(e.to_string().starts_with("/etc/default/grub:2:"));
    }

    #[test]
    fn mixed_quoting_appends_a_segment_or_refuses() {
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet \"'splash'\n";
        let out = ensure_in_file("/etc/default/grub", f, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet \"'splash'\" intel_iommu=on iommu=pt\"\n"
        );
        assert_eq!(
            read_var(&out, DEFAULT_VAR).unwrap(),
            "quiet splash intel_iommu=on iommu=pt"
        );
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet \"'iommu=soft'\n";
        assert!(matches!(
            ensure_in_file("/etc/default/grub", f, DEFAULT_VAR, W),
            Err(GrubEditError::Complex { line: 1, .. })
        ));
    }

    #[test]
    fn non_cfg_files_in_grub_d_are_not_sourced() {
        let files = [
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
            ),
            (
                "/etc/default/grub.d/50-x.cfg.dpkg-old",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"old\"\n",
            ),
        ];
        assert_eq!(effective_var(&files, DEFAULT_VAR), "quiet");
        let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan[0].name, "/etc/default/grub");
    }

    #[test]
    fn removal_plan_touches_every_file() {
        let files = [
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n",
            ),
            (
                "/etc/default/grub.d/50-cloudimg-settings.cfg",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 iommu=pt\"\n",
            ),
        ];
        let plan = plan_cmdline_removal(&files, DEFAULT_VAR, W).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].after, "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n");
        assert_eq!(
            plan[1].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1\"\n"
        );
    }

    #[test]
    fn kernel_args_plan_looks_at_both_variables() {
        // Already in GRUB_CMDLINE_LINUX: nothing to do.
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\"\n";
        assert!(plan_kernel_args(&[("g", f)], W).unwrap().is_empty());
        // One of them there: only the other is added, to _DEFAULT.
        let f =
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on\"\n";
        let p = plan_kernel_args(&[("g", f)], W).unwrap();
        assert_eq!(
            p[0].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash iommu=pt\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on\"\n"
        );
        // A conflict in GRUB_CMDLINE_LINUX is replaced there; nothing is duplicated.
        let f = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"iommu=soft\"\n";
        let p = plan_kernel_args(&[("g", f)], W).unwrap();
        assert_eq!(
            p[0].after,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on\"\nGRUB_CMDLINE_LINUX=\"iommu=pt\"\n"
        );
        assert_eq!(
            effective_cmdline(&[("g", &p[0].after)]),
            "iommu=pt quiet intel_iommu=on"
        );
        // Ubuntu cloud image: goes to the drop-in.
        let files = [
            ("/etc/default/grub", UBUNTU_2204),
            ("/etc/default/grub.d/50-cloudimg-settings.cfg", CLOUDIMG),
        ];
        let p = plan_kernel_args(&files, W).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, files[1].0);
        assert_eq!(
            effective_cmdline(&[files[0], (files[1].0, &p[0].after)]),
            "console=tty1 console=ttyS0 intel_iommu=on iommu=pt"
        );
    }

    /// `/bin/sh` as the oracle: update-grub sources these files with it, so our evaluation
    /// must agree with it on every sample and on every file our plans produce.
    #[test]
    fn effective_value_matches_sh() {
        use std::process::Command;
        if Command::new("sh").arg("-c").arg("true").status().is_err() {
            eprintln!("no sh: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<Vec<(&str, String)>> = vec![
            vec![("grub", UBUNTU_2204.to_string())],
            vec![("grub", UBUNTU_2204.to_string()), ("50-cloudimg-settings.cfg", CLOUDIMG.to_string())],
            vec![
                ("grub", "GRUB_CMDLINE_LINUX_DEFAULT='quiet  a'\n".to_string()),
                ("60-a.cfg", "export GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} x=\\\"y z\\\"\" # c\n".to_string()),
                ("70-b.cfg", "GRUB_CMDLINE_LINUX_DEFAULT=$GRUB_CMDLINE_LINUX_DEFAULT\\ w\nGRUB_CMDLINE_LINUX=\"iommu=soft\"\n".to_string()),
            ],
            vec![("grub", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet \"'splash'$GRUB_TIMEOUT\nGRUB_TIMEOUT=5\n".to_string())],
        ];
        for files in samples {
            let refs: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
            let mut variants = vec![refs
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect::<Vec<_>>()];
            for plan in [
                plan_kernel_args(&refs, W).unwrap(),
                plan_cmdline_edit(&refs, DEFAULT_VAR, W).unwrap(),
            ] {
                variants.push(
                    refs.iter()
                        .map(|(n, c)| {
                            let after = plan
                                .iter()
                                .find(|e| e.name == *n)
                                .map_or(*c, |e| e.after.as_str());
                            (n.to_string(), after.to_string())
                        })
                        .collect(),
                );
            }
            for v in variants {
                let mut paths = Vec::new();
                for (n, c) in &v {
                    let p = dir.path().join(n);
                    std::fs::write(&p, c).unwrap();
                    paths.push(p);
                }
                // Source main file, then drop-ins in name order, like grub-mkconfig.
                let script = "for f in \"$@\"; do . \"$f\"; done; printf '%s|%s' \"$GRUB_CMDLINE_LINUX\" \"$GRUB_CMDLINE_LINUX_DEFAULT\"";
                let mut ordered: Vec<_> = paths.clone();
                ordered[1..].sort();
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .arg("sh")
                    .args(&ordered)
                    .output()
                    .unwrap();
                let got = String::from_utf8(out.stdout).unwrap();
                let vr: Vec<(&str, &str)> =
                    v.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
                let ours = format!(
                    "{}|{}",
                    effective_var(&vr, LINUX_VAR),
                    effective_var(&vr, DEFAULT_VAR)
                );
                assert_eq!(ours, got, "{v:?}");
            }
        }
    }

    #[test]
    fn rhel_defaults_file_gets_args_in_grub_cmdline_linux() {
        // Rocky Linux 9's /etc/default/grub.
        let rocky = "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\nGRUB_CMDLINE_LINUX=\"crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet\"\nGRUB_DISABLE_RECOVERY=\"true\"\nGRUB_ENABLE_BLSCFG=true\n";
        let p = plan_kernel_args(&[("/etc/default/grub", rocky)], W).unwrap();
        assert_eq!(p.len(), 1);
        let changed = changed_lines(rocky, &p[0].after);
        assert_eq!(changed.len(), 1);
        assert!(changed[0]
            .1
            .starts_with("GRUB_CMDLINE_LINUX=\"crashkernel="));
        assert!(changed[0]
            .1
            .ends_with("rhgb quiet intel_iommu=on iommu=pt\""));
        assert_eq!(p[0].after.lines().count(), rocky.lines().count());
    }

    /// Found by the `grub_default` fuzz target: appending to a mixed-quoting value whose text
    /// has an unbalanced double quote made arguments the kernel would not see as arguments, and
    /// every run appended them again. Refused instead.
    #[test]
    fn mixed_quoting_with_unbalanced_quote_is_refused() {
        let c = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"$EXTRA' acpi_osi=\"Windows'\n";
        assert!(matches!(
            ensure_in_file("grub", c, DEFAULT_VAR, W),
            Err(GrubEditError::Complex { line: 1, .. })
        ));
        // Balanced: appended as before.
        let c = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"$EXTRA' splash'\n";
        let once = ensure_in_file("grub", c, DEFAULT_VAR, W).unwrap();
        assert_eq!(ensure_in_file("grub", &once, DEFAULT_VAR, W).unwrap(), once);
    }

    /// Found by the `grub_default` fuzz target: a value with a trailing run of backslashes after
    /// mixed quoting was appended to once and then refused by the next run. An edit the next
    /// run would not take as done is refused up front.
    #[test]
    fn tangled_quoting_is_refused_or_stable() {
        for c in [
            "X=a\nGRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} RA\u{fffd}\u{07cc}\u{fffd}lasINUX_DEFAULT=\"qui~etT$ER\\\\\\\\\\\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\\\\\\",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"a\"b\\\\\\\n",
        ] {
            if let Ok(once) = ensure_in_file("grub", c, DEFAULT_VAR, W) {
                assert_eq!(ensure_in_file("grub", &once, DEFAULT_VAR, W), Ok(once.clone()));
            }
        }
    }

    /// Found by the `grub_default` fuzz target's "no other argument changes" check: a bare value
    /// with a backslash escape (`$V\ w`) was wrapped whole in double quotes, where `\ ` keeps its
    /// backslash, so the kernel got `\` glued to the previous argument.
    #[test]
    fn bare_value_with_escapes_keeps_them_outside_quotes() {
        let c = "GRUB_CMDLINE_LINUX_DEFAULT=quiet\\ splash\n";
        let once = ensure_in_file("grub", c, DEFAULT_VAR, W).unwrap();
        assert_eq!(
            once,
            "GRUB_CMDLINE_LINUX_DEFAULT=quiet\\ splash\" intel_iommu=on iommu=pt\"\n"
        );
        assert_eq!(
            read_var(&once, DEFAULT_VAR).unwrap(),
            "quiet splash intel_iommu=on iommu=pt"
        );
        // A trailing backslash would escape the quote: refused.
        assert!(
            ensure_in_file("grub", "GRUB_CMDLINE_LINUX_DEFAULT=a\\\n", DEFAULT_VAR, W).is_err()
        );
    }

    /// Found by the `grub_default` fuzz target: with an unbalanced quote in a value that a
    /// drop-in repeats (`"$GRUB_CMDLINE_LINUX_DEFAULT ..."`), an appended argument also landed
    /// inside another argument's quoted value. Refused instead.
    #[test]
    fn edit_that_would_change_other_arguments_is_refused() {
        let files = [
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"'x=\"a'\n",
            ),
            (
                "/etc/default/grub.d/50-x.cfg",
                "GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} splash\"\n",
            ),
        ];
        match plan_kernel_args(&files, W) {
            Ok(plan) => {
                let applied: Vec<(&str, &str)> = applied(&files, &plan);
                assert_eq!(
                    other_args(&effective_cmdline(&files), W),
                    other_args(&effective_cmdline(&applied), W)
                );
            }
            Err(e) => assert!(
                matches!(
                    e,
                    GrubEditError::WouldChangeOthers { .. }
                        | GrubEditError::Complex { .. }
                        | GrubEditError::NotEffective { .. }
                ),
                "{e}"
            ),
        }
    }

    #[test]
    fn invariant_plan_twice_is_plan_once() {
        let mains = [
            UBUNTU_2204,
            "",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"iommu=soft\"\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=quiet",
            "export GRUB_CMDLINE_LINUX_DEFAULT='a  b'\r\n",
        ];
        let drops = [
            None,
            Some(CLOUDIMG),
            Some("GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=off\"\n"),
            Some("GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT}\"\n"),
        ];
        for m in mains {
            for d in drops {
                let mut files = vec![("/etc/default/grub", m)];
                if let Some(d) = d {
                    files.push(("/etc/default/grub.d/50-x.cfg", d));
                }
                let plan = plan_cmdline_edit(&files, DEFAULT_VAR, W).unwrap();
                let applied: Vec<(&str, &str)> = applied(&files, &plan);
                assert!(
                    kargs::has_args(&effective_var(&applied, DEFAULT_VAR), W),
                    "{m:?} {d:?}"
                );
                assert!(
                    plan_cmdline_edit(&applied, DEFAULT_VAR, W)
                        .unwrap()
                        .is_empty(),
                    "{m:?} {d:?}"
                );
                // Lines other than assignments of the variable are unchanged.
                for e in &plan {
                    let keep = |s: &str| -> Vec<String> {
                        s.lines()
                            .filter(|l| parse_assign(0, l).is_none_or(|a| a.name != DEFAULT_VAR))
                            .map(String::from)
                            .collect()
                    };
                    assert_eq!(keep(&e.before), keep(&e.after));
                }
            }
        }
    }
    /// Issue 12 item 11: shapes the shell executes that a line-start parser did not see. Each
    /// is edited so that `/bin/sh`, sourcing the files like grub-mkconfig, gives every other
    /// argument unchanged and the IOMMU arguments exactly once, or refused naming file and line.
    #[test]
    fn every_shape_is_edited_as_sh_sees_it_or_refused() {
        use crate::setup::grub_shell;
        let d = "/etc/default/grub.d/60-x.cfg";
        // (main, drop-in, edited: true / refused: false)
        let shapes: &[(&str, Option<&str>, bool)] = &[
            ("GRUB_TIMEOUT=5; GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\n", None, true),
            ("GRUB_TIMEOUT=5 GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\n", None, true),
            ("export A=1 GRUB_CMDLINE_LINUX_DEFAULT='quiet splash nomodeset' # c\n", None, true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"; GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT splash nomodeset\"\n", None, true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\" && GRUB_TIMEOUT=1\n", None, true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n", None, true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\n", Some("unset GRUB_CMDLINE_LINUX_DEFAULT\n"), true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\nGRUB_CMDLINE_LINUX=\"\"\n", Some("unset GRUB_CMDLINE_LINUX_DEFAULT GRUB_CMDLINE_LINUX\n"), false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n[ -e /etc/x ] && GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\n", None, false),
            ("[ -e /nonexistent ] || GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"\n", None, false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\" true\n", None, false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\" :\n", None, false),
            ("if true; then GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash nomodeset\"; fi\n", None, false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\" | cat\n", None, false),
            ("f() { GRUB_CMDLINE_LINUX_DEFAULT=\"x\"; }\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nf\n", None, false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n", Some("return 0\nGRUB_CMDLINE_LINUX_DEFAULT=\"x\"\n"), false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"$(echo quiet)\"\n", None, false),
            ("eval 'GRUB_CMDLINE_LINUX_DEFAULT=quiet'\n", None, false),
            ("read GRUB_CMDLINE_LINUX_DEFAULT < /dev/null\n", None, false),
            ("GRUB_CMDLINE_LINUX_DEFAULT=\"${X:-quiet splash}\"\n", None, false),
        ];
        let has_sh = std::path::Path::new("/bin/sh").exists();
        for (main, drop, edited) in shapes {
            let mut files = vec![("/etc/default/grub", *main)];
            if let Some(dr) = drop {
                files.push((d, dr));
            }
            match plan_kernel_args(&files, W) {
                Ok(plan) => {
                    assert!(edited, "{main:?} {drop:?} was edited: {plan:?}");
                    assert!(!plan.is_empty(), "{main:?}");
                    let after = applied(&files, &plan);
                    assert_eq!(plan_kernel_args(&after, W), Ok(vec![]), "{main:?}");
                    if has_sh {
                        let sh = |f: &[(&str, &str)]| {
                            let b: Vec<(&str, &[u8])> =
                                f.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
                            grub_shell::source(&b, &|c| {
                                let o = std::process::Command::new(&c.program)
                                    .args(&c.args)
                                    .output()?;
                                Ok(crate::host::RunOutput {
                                    status: o.status.code().unwrap_or(-1),
                                    stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                                    stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                                })
                            })
                            .unwrap()
                        };
                        let (b, a) = (sh(&files), sh(&after));
                        assert_eq!(
                            judge_sourced(&b, &a, W),
                            Ok(()),
                            "{main:?} {drop:?} -> {after:?}"
                        );
                        if drop.is_none() {
                            assert!(format!("{} {}", b.0, b.1).contains("nomodeset"), "{main:?}");
                        }
                    }
                }
                Err(e) => {
                    assert!(!edited, "{main:?} {drop:?} refused: {e}");
                    let msg = e.to_string();
                    assert!(msg.starts_with("/etc/default/grub"), "{msg}");
                    assert!(
                        matches!(
                            e,
                            GrubEditError::Unsupported { .. } | GrubEditError::Unset { .. }
                        ),
                        "{msg}"
                    );
                }
            }
        }
    }
}
