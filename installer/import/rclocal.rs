//! Import from `/etc/rc.local`: the lines operators paste to recreate vGPUs and virtual
//! functions at boot (the seed's host has two), so that the restore unit can take over.
//!
//! Recognized (with or without `sudo`, quotes, `>` or `>>`, or `| tee [-a]`):
//! - `echo UUID > /sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/create`, also via
//!   `/sys/bus/pci/devices/<parent>/...` or any `/sys/...` path ending the same way. Any mdev
//!   parent counts (`mtty`, `0000:e8:00.4`, ...).
//! - `echo <type id> > /sys/bus/pci/devices/<VF>/nvidia/current_vgpu_type` (vendor-specific
//!   VFIO, kernel 6.8+ with vGPU 17+), also via any `/sys/...` path ending the same way. The id
//!   names a type only on that host's driver branch: the caller resolves it on the host.
//! - Either of those wrapped in `sh -c '...'` (or `bash -c`), as `sudo sh -c 'echo ... > ...'`
//!   is written because `sudo echo ... > file` redirects as the caller.
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
//! `;`, `&&`, `||` or `&`. Compound commands (`if`, loops, `case`, functions, `{ }`, `( )`),
//! here-documents and commands that go on over several lines are followed only far enough to
//! know that a command is inside one: such commands are reported, never imported, so that
//! [`super::rc_rewrite`] only ever edits plain lines.

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
    /// A vendor-specific VFIO vGPU: a type id written to the VF's `nvidia/current_vgpu_type`.
    VendorVgpu {
        /// Canonical VF address (`0000:41:00.4`).
        vf: String,
        /// The id as written (decimal, non-zero); valid only on the driver branch it came from.
        type_id: String,
    },
    /// `sriov-manage -e`.
    SriovEnable { target: SriovTarget },
    /// About vGPUs or SR-IOV, but not importable: why.
    Skipped { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcLine {
    /// 1-based line number (the first one when a command goes on over several).
    pub line: usize,
    /// Which command of the line (see [`commands`]): 0 for the first.
    pub cmd: usize,
    /// The line as written (without its line ending).
    pub text: String,
    pub item: RcItem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A word after quote removal; `dynamic` when it holds `$VAR`, `$(...)` or backquotes.
    Word {
        text: String,
        dynamic: bool,
    },
    Op(&'static str),
}

/// A token and its byte range in the line, so that one command can be rewritten in place.
pub(crate) type Spanned = (Tok, std::ops::Range<usize>);

/// Read `$(...)` (the `$` already taken) or a backquoted part into `cur`, balanced.
fn take_substitution(
    it: &mut std::iter::Peekable<std::str::CharIndices>,
    cur: &mut String,
    close: char,
) -> Result<(), String> {
    let mut depth = 0usize;
    for (_, x) in it.by_ref() {
        cur.push(x);
        if close == ')' && x == '(' {
            depth += 1;
        } else if x == close {
            if close == '`' || depth == 1 {
                return Ok(());
            }
            depth -= 1;
        }
    }
    Err(format!(
        "unterminated {}",
        if close == '`' { "`" } else { "$(" }
    ))
}

pub(crate) fn lex(line: &str) -> Result<Vec<Spanned>, String> {
    let mut out: Vec<Spanned> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut dynamic = false;
    let mut word_start = 0;
    let mut it = line.char_indices().peekable();
    macro_rules! end_word {
        ($at:expr) => {
            if in_word {
                out.push((
                    Tok::Word {
                        text: std::mem::take(&mut cur),
                        dynamic,
                    },
                    word_start..$at,
                ));
                in_word = false;
                dynamic = false;
            }
        };
    }
    macro_rules! start_word {
        ($at:expr) => {
            if !in_word {
                in_word = true;
                word_start = $at;
            }
        };
    }
    while let Some((at, c)) = it.next() {
        let next = it.peek().map(|&(_, x)| x);
        // Two-character operators first: (first, second, op).
        let two: Option<&'static str> = match (c, next) {
            ('&', Some('&')) => Some("&&"),
            ('|', Some('|')) => Some("||"),
            ('>', Some('>')) => Some(">>"),
            ('>', Some('&')) => Some(">&"),
            ('>', Some('|')) => Some(">|"),
            ('<', Some('<')) => Some("<<"),
            ('<', Some('&')) => Some("<&"),
            ('&', Some('>')) => Some("&>"),
            _ => None,
        };
        if let Some(op) = two {
            end_word!(at);
            it.next();
            let mut op = op;
            let mut end = at + 2;
            if op == "<<" && it.peek().map(|&(_, x)| x) == Some('-') {
                it.next();
                op = "<<-";
                end += 1;
            }
            out.push((Tok::Op(op), at..end));
            continue;
        }
        match c {
            ' ' | '\t' | '\r' | '\n' => end_word!(at),
            '#' if !in_word => break,
            '\'' => {
                start_word!(at);
                loop {
                    match it.next() {
                        Some((_, '\'')) => break,
                        Some((_, x)) => cur.push(x),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                start_word!(at);
                loop {
                    match it.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match it.next() {
                            Some((_, x @ ('$' | '`' | '"' | '\\'))) => cur.push(x),
                            Some((_, x)) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some((_, '`')) => {
                            dynamic = true;
                            cur.push('`');
                            take_substitution(&mut it, &mut cur, '`')?;
                        }
                        Some((_, '$')) => {
                            dynamic = true;
                            cur.push('$');
                            if it.peek().map(|&(_, x)| x) == Some('(') {
                                take_substitution(&mut it, &mut cur, ')')?;
                            }
                        }
                        Some((_, x)) => cur.push(x),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                start_word!(at);
                match it.next() {
                    // A line continuation: nothing of it belongs to the word.
                    Some((_, '\n')) => {}
                    Some((_, x)) => cur.push(x),
                    None => {}
                }
            }
            '$' => {
                start_word!(at);
                dynamic = true;
                cur.push('$');
                if next == Some('(') {
                    take_substitution(&mut it, &mut cur, ')')?;
                }
            }
            '`' => {
                start_word!(at);
                dynamic = true;
                cur.push('`');
                take_substitution(&mut it, &mut cur, '`')?;
            }
            '>' | '<' | '|' | '&' | ';' | '(' | ')' => {
                end_word!(at);
                let op = match c {
                    '>' => ">",
                    '<' => "<",
                    '|' => "|",
                    '&' => "&",
                    ';' => ";",
                    '(' => "(",
                    _ => ")",
                };
                out.push((Tok::Op(op), at..at + 1));
            }
            _ => {
                start_word!(at);
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push((Tok::Word { text: cur, dynamic }, word_start..line.len()));
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
    if matches!(program, "sh" | "bash" | "dash") {
        return classify_shell_c(&cmd[1..]);
    }
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
    if path.ends_with("/current_vgpu_type") {
        return classify_vendor(program, &args, path, path_dynamic);
    }
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

/// `sh -c 'SCRIPT'`: the script's one command, classified as if it stood on the line. A script of
/// several commands, or one computed at run time, is reported (only a whole command is taken out
/// of rc.local, and `sh -c` is one command).
fn classify_shell_c(args: &[Tok]) -> Option<RcItem> {
    let words: Vec<W<'_>> = args.iter().filter_map(word).collect();
    let [("-c", false), (script, dynamic), ..] = words.as_slice() else {
        return None;
    };
    if !script.contains("current_vgpu_type")
        && !script.contains("mdev_supported_types")
        && !script.contains("sriov-manage")
    {
        return None;
    }
    let skipped = |reason: &str| {
        Some(RcItem::Skipped {
            reason: format!("the shell -c script {script:?}: {reason}"),
        })
    };
    if *dynamic {
        return skipped("the script depends on a variable");
    }
    let Ok(toks) = lex(script) else {
        return skipped("cannot read the script");
    };
    let cmds = commands(&toks);
    let structural = follow_structure(&toks, &mut Vec::new());
    if cmds.len() != 1 || structural || !heredocs(&toks).is_empty() {
        return skipped("the script does more than one plain command");
    }
    let inner: Vec<Tok> = toks[cmds[0].clone()]
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    match classify(&inner)? {
        RcItem::Skipped { reason } => skipped(&reason),
        // `echo X | tee FILE` is the one pipeline understood, as on a line of its own.
        _ if inner.iter().filter(|t| **t == Tok::Op("|")).count() > 1 => {
            skipped("the script is a pipeline that does more than write the value")
        }
        item => Some(item),
    }
}

/// `<...>/<VF>/nvidia/current_vgpu_type` under `/sys/` -> the canonical VF address.
fn parse_vendor_path(path: &str) -> Result<String, String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if !path.starts_with("/sys/") {
        return Err(format!("{path} is not under /sys"));
    }
    if comps.iter().any(|c| *c == ".." || *c == ".") {
        return Err(format!("{path} contains '.' or '..'"));
    }
    let n = comps.len();
    if n < 4 || comps[n - 2] != "nvidia" {
        return Err(format!("{path} is not <VF>/nvidia/current_vgpu_type"));
    }
    PciAddr::parse(comps[n - 3])
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

/// `echo ID > .../<VF>/nvidia/current_vgpu_type`.
fn classify_vendor(program: &str, args: &[W<'_>], path: &str, dynamic: bool) -> Option<RcItem> {
    let skipped = |reason: String| Some(RcItem::Skipped { reason });
    if dynamic {
        return skipped(format!("the path {path} depends on a variable"));
    }
    let vf = match parse_vendor_path(path) {
        Ok(vf) => vf,
        Err(e) => return skipped(e),
    };
    if !matches!(program, "echo" | "printf") {
        return skipped(format!(
            "{program} writes to {path}; only echo <type id> is understood"
        ));
    }
    let vals: Vec<W<'_>> = args[1..]
        .iter()
        .filter(|(w, _)| !(program == "echo" && matches!(*w, "-n" | "-e" | "-ne" | "-en")))
        .cloned()
        .collect();
    match vals.as_slice() {
        [(id, false)] if id.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() => {
            let id = id.trim_start_matches('0');
            if id.is_empty() {
                skipped(format!(
                    "writing 0 to {vf}'s current_vgpu_type removes its vGPU; nothing to restore"
                ))
            } else if id.len() > 9 {
                skipped(format!("type id {id} on {vf} is not a vGPU type id"))
            } else {
                Some(RcItem::VendorVgpu {
                    vf,
                    type_id: id.to_string(),
                })
            }
        }
        [(_, true)] => skipped(format!(
            "the type id written to {vf}'s current_vgpu_type is computed at boot, not fixed"
        )),
        _ => skipped(format!(
            "no single type id is written to {vf}'s current_vgpu_type"
        )),
    }
}

/// Separators between commands: list operators, and parentheses (whose lines are refused).
fn is_separator(t: &Tok) -> bool {
    matches!(t, Tok::Op(";" | "&&" | "||" | "&" | "(" | ")"))
}

/// The commands of a lexed line as index ranges into its tokens, empty ones left out. The
/// index of a command in this list is [`RcLine::cmd`].
pub(crate) fn commands(toks: &[Spanned]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, (t, _)) in toks.iter().enumerate() {
        if is_separator(t) {
            if i > start {
                out.push(start..i);
            }
            start = i + 1;
        }
    }
    if toks.len() > start {
        out.push(start..toks.len());
    }
    out
}

/// Reserved words that open or close a compound command, and `!` (negation).
const OPENERS: &[&str] = &["if", "case", "for", "while", "until", "select", "{"];
const CLOSERS: &[&str] = &["fi", "esac", "done", "}"];
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "select", "do",
    "done", "{", "}", "!", "function",
];

/// Follow compound commands across lines: push openers, pop closers. Returns whether the
/// line itself holds shell structure (a reserved word in command position or parentheses).
fn follow_structure(toks: &[Spanned], stack: &mut Vec<&'static str>) -> bool {
    let mut structural = false;
    let mut command_start = true;
    for (t, _) in toks {
        match t {
            Tok::Op("(") | Tok::Op(")") => {
                structural = true;
                // Inside `case`, parentheses belong to the patterns.
                if stack.last() != Some(&"case") {
                    if *t == Tok::Op("(") {
                        stack.push("(");
                    } else if stack.last() == Some(&"(") {
                        stack.pop();
                    }
                }
                command_start = true;
            }
            Tok::Op(op) => command_start = !op.starts_with(['>', '<']),
            Tok::Word { text, dynamic } => {
                if command_start && !dynamic && KEYWORDS.contains(&text.as_str()) {
                    structural = true;
                    if let Some(o) = OPENERS.iter().find(|o| **o == text) {
                        stack.push(o);
                    } else if CLOSERS.contains(&text.as_str()) {
                        stack.pop();
                    }
                    // `then echo ...`, `do echo ...`: the next word starts a command again.
                    command_start = true;
                } else {
                    command_start = false;
                }
            }
        }
    }
    structural
}

/// The line goes on to the next one: an open quote, a trailing `\`, or an operator that needs
/// another command (`&&`, `||`, `|`).
fn continues(text: &str, lexed: &Result<Vec<Spanned>, String>) -> bool {
    match lexed {
        Err(_) => true,
        Ok(toks) => {
            let trailing = text.len() - text.trim_end_matches('\\').len();
            trailing % 2 == 1 || matches!(toks.last(), Some((Tok::Op("&&" | "||" | "|"), _)))
        }
    }
}

/// Here-document delimiters opened on a line (`<<EOF`, `<<-'EOF'`), with whether tabs are
/// stripped (`<<-`).
fn heredocs(toks: &[Spanned]) -> Vec<(String, bool)> {
    toks.windows(2)
        .filter_map(|w| match (&w[0].0, &w[1].0) {
            (Tok::Op(op @ ("<<" | "<<-")), Tok::Word { text, .. }) => {
                Some((text.clone(), *op == "<<-"))
            }
            _ => None,
        })
        .collect()
}

fn mentions_vgpu(text: &str) -> bool {
    text.contains("mdev_supported_types") || text.contains("sriov-manage") || writes_vendor(text)
}

/// Whether the text may write a VF's `current_vgpu_type`: the name comes after a `>` or a `tee`.
/// A line that only reads it (the `grep -qvx 0 ...` test [`super::rc_rewrite`] leaves) is not
/// about creating vGPUs.
fn writes_vendor(text: &str) -> bool {
    text.match_indices("current_vgpu_type").any(|(at, _)| {
        let before = &text[..at];
        before.contains('>') || before.contains("tee")
    })
}

/// Why a command on this line cannot be imported however it reads, or `None`.
fn refusal(
    first: usize,
    last: usize,
    in_block: bool,
    structural: bool,
    heredoc: bool,
) -> Option<String> {
    if in_block {
        Some("it is inside an if/for/while/case block, a function, a { } group or a ( ) subshell, where it runs only when that code does".into())
    } else if structural {
        Some("it is part of an if/for/while/case, a function, a { } group, a ( ) subshell or a negation (!) on this line".into())
    } else if last > first {
        Some(format!(
            "the command goes on over lines {}-{} (a trailing \\, &&, || or | or an open quote)",
            first + 1,
            last + 1
        ))
    } else if heredoc {
        Some("the line starts a here-document".into())
    } else {
        None
    }
}

/// Whether removing or replacing this command keeps the line's meaning (see
/// [`super::rc_rewrite`]): pipelines other than `echo UUID | tee FILE`, and `sriov-manage -e ALL`
/// followed by `&&`/`||` (no single test says whether it succeeded), are refused.
fn rewrite_refusal(toks: &[Spanned], cmd: std::ops::Range<usize>, item: &RcItem) -> Option<String> {
    let pipes: Vec<usize> = (cmd.clone())
        .filter(|&i| toks[i].0 == Tok::Op("|"))
        .collect();
    match item {
        RcItem::Vgpu { .. } | RcItem::VendorVgpu { .. } => {
            let tee = pipes.len() == 1 && {
                let after: Vec<Tok> = toks[pipes[0] + 1..cmd.end]
                    .iter()
                    .map(|(t, _)| t.clone())
                    .collect();
                matches!(strip_sudo(&after).first(), Some(Tok::Word { text, .. }) if text == "tee")
            };
            if !pipes.is_empty() && !tee {
                return Some(
                    "it is part of a pipeline that does more than write the UUID or type id".into(),
                );
            }
        }
        RcItem::SriovEnable { target } => {
            if !pipes.is_empty() {
                return Some("its output goes into a pipeline".into());
            }
            // Last in `B && A` it is replaced by `true` (what follows does not depend on it);
            // before `&&`/`||` something would, and no single test stands for "all GPUs".
            let joined = matches!(toks.get(cmd.end), Some((Tok::Op("&&" | "||"), _)));
            if *target == SriovTarget::All && joined {
                return Some("sriov-manage -e ALL is followed by && or ||, and no single test stands for its result".into());
            }
        }
        RcItem::Skipped { .. } => {}
    }
    None
}

/// Every vGPU and SR-IOV command of an rc.local, in order. Comment lines (including ones
/// already commented out by [`comment_out`]) are ignored. A command vgpuctl could import but
/// cannot take out of the file without changing what the rest of it does (inside a block,
/// over several lines, in a here-document, ...) is [`RcItem::Skipped`] with the reason.
pub fn parse(content: &str) -> Vec<RcLine> {
    let phys: Vec<&str> = content
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = Vec::new();
    let mut stack: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < phys.len() {
        let first = i;
        let mut text = phys[i].to_string();
        let mut lexed = lex(&text);
        while i + 1 < phys.len() && continues(&text, &lexed) {
            i += 1;
            text.push('\n');
            text.push_str(phys[i]);
            lexed = lex(&text);
        }
        let last = i;
        i += 1;
        let toks = match lexed {
            Ok(t) => t,
            Err(e) => {
                if mentions_vgpu(&text) {
                    out.push(RcLine {
                        line: first + 1,
                        cmd: 0,
                        text,
                        item: RcItem::Skipped {
                            reason: format!("cannot read this line: {e}"),
                        },
                    });
                }
                continue;
            }
        };
        let in_block = !stack.is_empty();
        let structural = follow_structure(&toks, &mut stack);
        let docs = heredocs(&toks);
        let refused = refusal(first, last, in_block, structural, !docs.is_empty());
        let mut found = false;
        for (n, cmd) in commands(&toks).into_iter().enumerate() {
            let plain: Vec<Tok> = toks[cmd.clone()].iter().map(|(t, _)| t.clone()).collect();
            let Some(item) = classify(&plain) else {
                continue;
            };
            found = true;
            let why = match &item {
                RcItem::Skipped { .. } => None,
                _ => refused
                    .clone()
                    .or_else(|| rewrite_refusal(&toks, cmd.clone(), &item)),
            };
            let item = match why {
                Some(why) => RcItem::Skipped {
                    reason: format!(
                        "{}, but {why}; not imported and left as it is (put it on a line of its own, or create the vGPU with vgpuctl)",
                        describe(&item)
                    ),
                },
                None => item,
            };
            out.push(RcLine {
                line: first + 1,
                cmd: n,
                text: text.clone(),
                item,
            });
        }
        if !found && !text.trim_start().starts_with('#') && mentions_vgpu(&text) {
            out.push(RcLine {
                line: first + 1,
                cmd: 0,
                text: text.clone(),
                item: RcItem::Skipped {
                    reason: "mentions vGPU sysfs or sriov-manage but is not a command vgpuctl understands".into(),
                },
            });
        }
        // Here-document bodies are text for a command, not commands.
        for (delim, tabs) in docs {
            while i < phys.len() {
                let body = phys[i];
                i += 1;
                let t = if tabs {
                    body.trim_start_matches('\t')
                } else {
                    body
                };
                if t == delim {
                    break;
                }
                if mentions_vgpu(body) {
                    out.push(RcLine {
                        line: i,
                        cmd: 0,
                        text: body.to_string(),
                        item: RcItem::Skipped {
                            reason: "inside a here-document (text given to a command, not a command); left as it is".into(),
                        },
                    });
                }
            }
        }
    }
    out
}

/// What a recognized command does, for messages.
fn describe(item: &RcItem) -> String {
    match item {
        RcItem::Vgpu {
            uuid,
            parent,
            type_dir,
        } => format!("it creates vGPU {uuid} ({type_dir} on {parent})"),
        RcItem::VendorVgpu { vf, type_id } => {
            format!("it creates a vGPU of type id {type_id} on VF {vf}")
        }
        RcItem::SriovEnable {
            target: SriovTarget::All,
        } => "it enables SR-IOV on all GPUs".into(),
        RcItem::SriovEnable {
            target: SriovTarget::Gpu(a),
        } => format!("it enables SR-IOV on {a}"),
        RcItem::Skipped { reason } => reason.clone(),
    }
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

    fn vendor(vf: &str, id: &str) -> RcItem {
        RcItem::VendorVgpu {
            vf: vf.into(),
            type_id: id.into(),
        }
    }

    /// Vendor-specific VFIO lines as operators write them on an L40S host (kernel 6.8).
    #[test]
    fn vendor_vfio_lines() {
        let nv = |vf: &str| format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type");
        let rc = format!(
            "#!/bin/bash\n\
             echo 1153 > {}\n\
             echo 1153 | sudo tee {} >/dev/null\n\
             sudo sh -c 'echo 1153 > {}'\n\
             bash -c \"echo 2164 >> /sys/devices/pci0000:40/0000:40:01.1/0000:41:01.0/nvidia/current_vgpu_type\"\n\
             echo 0 > {}\n\
             echo $TYPE > {}\n\
             sh -c 'echo 1153 > {}; echo done'\n\
             cat {}\n\
             grep -qvx 0 {} && logger up\n",
            nv("0000:41:00.4"),
            nv("0000:41:00.5"),
            nv("41:00.6"),
            nv("0000:41:00.7"),
            nv("0000:41:01.1"),
            nv("0000:41:01.2"),
            nv("0000:41:01.3"),
            nv("0000:41:01.3"),
        );
        let items = parse(&rc);
        let got: Vec<(usize, &RcItem)> = items.iter().map(|i| (i.line, &i.item)).collect();
        assert_eq!(got[0], (2, &vendor("0000:41:00.4", "1153")));
        assert_eq!(got[1], (3, &vendor("0000:41:00.5", "1153")));
        assert_eq!(got[2], (4, &vendor("0000:41:00.6", "1153")));
        assert_eq!(got[3], (5, &vendor("0000:41:01.0", "2164")));
        for (n, (line, item)) in got[4..].iter().enumerate() {
            assert_eq!(*line, 6 + n, "{got:?}");
            assert!(matches!(item, RcItem::Skipped { .. }), "{got:?}");
        }
        // Reading the attribute is not about creating vGPUs.
        assert_eq!(got.len(), 7, "{got:?}");
        let RcItem::Skipped { reason } = &items[4].item else {
            unreachable!()
        };
        assert!(reason.contains("removes its vGPU"), "{reason}");
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
        // An open quote goes on over the next lines, as in the shell: the unterminated one
        // comes last so that it swallows nothing.
        let s = "for d in /sys/class/mdev_bus/*; do ls $d/mdev_supported_types; done\r\n\
                 echo 'unterminated > /sys/class/mdev_bus/x/mdev_supported_types/y/create\n";
        let items = parse(s);
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .all(|i| matches!(i.item, RcItem::Skipped { .. })));
        assert!(!items[0].text.ends_with('\r'));
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
