//! Layers (issue 13 item 5): `cli` holds clap types only, `main` dispatches, the `cmd/` modules
//! are thin and nothing below them names them, no two modules import each other (directly or in
//! a circle), and no module names one in a higher layer.
//!
//! The sources are read as text (installer/**/*.rs, the product's library and binary; the
//! simulator and catalog crates under installer/sim/ and installer/catalog/ are their own crates
//! and not part of this graph). Comments, string literals and `#[cfg(test)]` items are dropped;
//! every path that starts with `crate::`, `super::` or `self::` (`vgpuctl::` in the binary's
//! main.rs and simulator.rs) is one reference, resolved to the deepest module file it names
//! (`use crate::a::{b, c::D}` is two references).
//!
//! The layers, bottom to top (a module may name its own layer and the ones below):
//! values (exit, out, pci, ...) and the clap types in `cli`; `host`, the only way to touch a host,
//! with `privilege`; the files vgpuctl reads and writes (profile, state, edit, import, ...);
//! `facts` observes; `vgpu`, `driver`, `cloudpods`, `status` act on or read one part; `setup`
//! plans and applies; `check`, `integrations`, `wizard` judge, export and ask; `opener` opens
//! the host the global options name; `cmd/` runs one command each; `main` (with `simulator`)
//! parses and dispatches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: (what the layer is, its top-level modules). README.md's development section
/// says the same in a few lines.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "values: errors, output, parsers of words and numbers; no host",
        &[
            "exit",
            "interrupt",
            "out",
            "fault",
            "logging",
            "wait",
            "pci",
            "sysfs_parse",
            "models",
            "vgpu_name",
            "gpu_group",
            "table",
        ],
    ),
    ("the command line's clap types", &["cli"]),
    (
        "the host seam, and who may change it",
        &["host", "privilege"],
    ),
    (
        "the files vgpuctl reads and writes: formats, editors, records",
        &[
            "profile",
            "profile_load",
            "state",
            "active",
            "pins",
            "edit",
            "import",
            "vfio_persist",
        ],
    ),
    ("observe", &["facts"]),
    (
        "act on (or report) one part: vGPUs, the driver, CloudPods",
        &["vgpu", "driver", "cloudpods", "nova", "nova_conf", "status"],
    ),
    ("plan and apply", &["setup"]),
    (
        "judge, export, ask",
        &[
            "check",
            "integrations",
            "kubevirt",
            "proxmox",
            "platforms",
            "wizard",
        ],
    ),
    ("open the host the global options name", &["opener"]),
    ("one module per command", &["cmd"]),
    ("the binary: parse, open, dispatch", &["main", "simulator"]),
];

type Module = Vec<String>;

struct Source {
    /// Relative to installer/, e.g. `setup/apply.rs`.
    rel: String,
    module: Module,
    /// Code without comments, literals and test items.
    code: String,
}

struct Reference {
    file: String,
    from: Module,
    to: Module,
    /// The path as written, for messages.
    path: String,
}

fn installer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("installer")
}

fn module_of(rel: &str) -> Module {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<Source>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                // Own crates, with their own Cargo.toml: not modules of this one.
                if !p.join("Cargo.toml").exists() {
                    walk(&p, base, out);
                }
            } else if rel.ends_with(".rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push(Source {
                    module: module_of(&rel),
                    code: drop_test_items(&strip(&text)),
                    rel,
                });
            }
        }
    }
    let base = installer();
    let mut v = Vec::new();
    walk(&base, &base, &mut v);
    assert!(v.len() > 40, "found {} sources", v.len());
    v.sort_by(|a, b| a.rel.cmp(&b.rel));
    v
}

/// The text with comments blanked and string and character literals emptied, so that neither a
/// doc link nor a message that mentions `crate::x` counts as a reference.
fn strip(t: &str) -> String {
    let b = t.as_bytes();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    let ident_before = |i: usize| i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    while i < b.len() {
        if t[i..].starts_with("//") {
            i = t[i..].find('\n').map_or(b.len(), |j| i + j);
        } else if t[i..].starts_with("/*") {
            i = t[i + 2..].find("*/").map_or(b.len(), |j| i + 2 + j + 2);
        } else if (b[i] == b'r' || (b[i] == b'b' && b.get(i + 1) == Some(&b'r')))
            && !ident_before(i)
        {
            // A raw string r"..." / r#"..."# / br"...", else an identifier starting with r.
            let start = if b[i] == b'b' { i + 2 } else { i + 1 };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            if b.get(start + hashes) == Some(&b'"') {
                let end = format!("\"{}", "#".repeat(hashes));
                let body = start + hashes + 1;
                i = t[body..]
                    .find(&end)
                    .map_or(b.len(), |j| body + j + end.len());
                out.push_str("\"\"");
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let rest = &t[i + 1..];
            let len = if rest.starts_with('\\') {
                rest.find('\'').map(|j| j + 1)
            } else {
                let c = rest.chars().next().map_or(0, char::len_utf8);
                (rest[c..].starts_with('\'')).then_some(c + 1)
            };
            match len {
                Some(n) => {
                    i += 1 + n;
                    out.push_str("' '");
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = t[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Drop every `#[cfg(test)]` item (a `mod tests { ... }`, a test-only function or `use`).
fn drop_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at a `;` before any brace, or at the brace that closes its first one.
        let mut depth = 0usize;
        let mut end = item.len();
        for (j, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths of one use tree or expression path starting at `i` (after `prefix::`).
fn parse_tree(b: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut segs = prefix;
    loop {
        skip_ws(i);
        match b.get(*i) {
            Some(b'{') => {
                *i += 1;
                loop {
                    skip_ws(i);
                    match b.get(*i) {
                        None => return,
                        Some(b'}') => {
                            *i += 1;
                            return;
                        }
                        Some(b',') => *i += 1,
                        _ => {
                            let before = *i;
                            parse_tree(b, i, segs.clone(), out);
                            skip_ws(i);
                            if b[*i..].starts_with(b"as") {
                                *i += 2;
                                skip_ws(i);
                                while *i < b.len() && is_ident(b[*i]) {
                                    *i += 1;
                                }
                            }
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            Some(b'*') => {
                *i += 1;
                out.push(segs);
                return;
            }
            Some(&c) if is_ident(c) => {
                let start = *i;
                while *i < b.len() && is_ident(b[*i]) {
                    *i += 1;
                }
                let word = String::from_utf8_lossy(&b[start..*i]).into_owned();
                if word != "self" {
                    segs.push(word);
                }
                if b[*i..].starts_with(b"::") {
                    *i += 2;
                    continue;
                }
                out.push(segs);
                return;
            }
            _ => {
                out.push(segs);
                return;
            }
        }
    }
}

fn references(srcs: &[Source]) -> Vec<Reference> {
    let modules: BTreeSet<Module> = srcs.iter().map(|s| s.module.clone()).collect();
    let mut refs = Vec::new();
    for s in srcs {
        // The binary (main.rs and the simulator wiring it declares) reaches the library as
        // `vgpuctl::`; its own module is named after the file.
        let binary = s.rel == "main.rs" || s.rel == "simulator.rs";
        let from = if binary {
            vec![s.rel.trim_end_matches(".rs").to_string()]
        } else {
            s.module.clone()
        };
        let b = s.code.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !is_ident(b[i]) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b'$')) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            if !b[i..].starts_with(b"::") || (start >= 2 && &b[start - 2..start] == b"::") {
                continue;
            }
            let word = &s.code[start..i];
            let base: Module = match (word, binary) {
                ("crate", false) | ("vgpuctl", true) => vec![],
                ("self", false) => s.module.clone(),
                ("super", false) => {
                    let mut m = s.module.clone();
                    let mut j = i;
                    m.pop();
                    while s.code[j + 2..].starts_with("super::") {
                        m.pop();
                        j += "::super".len();
                    }
                    i = j;
                    m
                }
                _ => continue,
            };
            i += 2;
            let mut paths = Vec::new();
            parse_tree(b, &mut i, base, &mut paths);
            for p in paths {
                let to = (0..=p.len())
                    .rev()
                    .map(|k| p[..k].to_vec())
                    .find(|m| modules.contains(m))
                    .unwrap_or_default();
                if to.is_empty() || to == from {
                    continue;
                }
                refs.push(Reference {
                    file: s.rel.clone(),
                    from: from.clone(),
                    to,
                    path: format!(
                        "{}::{}",
                        if binary { "vgpuctl" } else { "crate" },
                        p.join("::")
                    ),
                });
            }
        }
    }
    refs
}

fn show(r: &Reference) -> String {
    format!("installer/{}: {}", r.file, r.path)
}

#[test]
fn nothing_below_cmd_names_cmd() {
    let bad: Vec<String> = references(&sources())
        .iter()
        .filter(|r| r.to[0] == "cmd" && !["cmd", "main", "simulator"].contains(&r.from[0].as_str()))
        .map(show)
        .collect();
    assert!(
        bad.is_empty(),
        "only main.rs dispatches to cmd/; these name it from below:\n{}",
        bad.join("\n")
    );
}

#[test]
fn cli_holds_clap_types_only() {
    let srcs = sources();
    let cli = srcs.iter().find(|s| s.rel == "cli.rs").unwrap();
    let named: Vec<String> = references(&srcs)
        .iter()
        .filter(|r| r.file == "cli.rs")
        .map(show)
        .collect();
    assert!(
        named.is_empty(),
        "cli.rs is the command line's types; it names no other module:\n{}",
        named.join("\n")
    );
    for item in ["fn ", "impl ", "trait "] {
        let defs: Vec<&str> = cli
            .code
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("pub {item}")) || l.starts_with(item))
            .collect();
        assert!(
            defs.is_empty(),
            "cli.rs defines no behaviour (dispatch is main.rs's, opening a host opener.rs's):\n{}",
            defs.join("\n")
        );
    }
}

#[test]
fn commands_do_not_call_each_other() {
    let bad: Vec<String> = references(&sources())
        .iter()
        .filter(|r| r.from.len() > 1 && r.from[0] == "cmd" && r.to[0] == "cmd")
        .map(show)
        .collect();
    assert!(
        bad.is_empty(),
        "a cmd/ module calls the library, never another command (move what they share below):\n{}",
        bad.join("\n")
    );
}

/// At every level of the module tree, the graph between sibling modules (each with everything
/// below it) has no cycle. A module and its own submodules are one unit at their parent's level:
/// a child naming its parent (`super::Error`) is not a circle.
#[test]
fn no_import_cycles() {
    let refs = references(&sources());
    // sibling edge -> one reference that makes it
    let mut edges: BTreeMap<(Module, Module), String> = BTreeMap::new();
    for r in &refs {
        let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
        if common == r.from.len() || common == r.to.len() {
            continue; // one contains the other
        }
        let a = r.from[..=common].to_vec();
        let b = r.to[..=common].to_vec();
        edges.entry((a, b)).or_insert_with(|| show(r));
    }
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    // Depth-first search; a node met again while on the stack closes a cycle.
    fn dfs<'a>(
        n: &'a Module,
        next: &BTreeMap<&'a Module, Vec<&'a Module>>,
        stack: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
        cycles: &mut Vec<Vec<&'a Module>>,
    ) {
        if let Some(at) = stack.iter().position(|m| *m == n) {
            cycles.push(stack[at..].to_vec());
            return;
        }
        if !done.insert(n) {
            return;
        }
        stack.push(n);
        for m in next.get(n).into_iter().flatten() {
            dfs(m, next, stack, done, cycles);
        }
        stack.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for n in next.keys() {
        dfs(n, &next, &mut Vec::new(), &mut done, &mut cycles);
    }
    let text: Vec<String> = cycles
        .iter()
        .map(|c| {
            let mut lines = vec![format!(
                "cycle: {} -> {}",
                c.iter()
                    .map(|m| m.join("::"))
                    .collect::<Vec<_>>()
                    .join(" -> "),
                c[0].join("::")
            )];
            for (k, a) in c.iter().enumerate() {
                let b = c[(k + 1) % c.len()];
                lines.push(format!("  {}", edges[&((*a).clone(), b.clone())]));
            }
            lines.join("\n")
        })
        .collect();
    assert!(cycles.is_empty(), "import circles:\n{}", text.join("\n"));
}

/// Every top-level module has a layer, and no reference goes from a lower layer to a higher one.
#[test]
fn no_module_names_a_higher_layer() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(k, (_, ms))| ms.iter().map(move |m| (*m, k)))
        .collect();
    let srcs = sources();
    let tops: BTreeSet<String> = srcs
        .iter()
        .filter(|s| !s.module.is_empty())
        .map(|s| {
            if s.rel == "main.rs" || s.rel == "simulator.rs" {
                s.rel.trim_end_matches(".rs").to_string()
            } else {
                s.module[0].clone()
            }
        })
        .collect();
    let missing: Vec<&String> = tops
        .iter()
        .filter(|t| !layer_of.contains_key(t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "give these modules a layer in LAYERS (tests/layers.rs): {missing:?}"
    );
    let refs = references(&srcs);
    let upward: Vec<String> = refs
        .iter()
        .filter(|r| layer_of[r.from[0].as_str()] < layer_of[r.to[0].as_str()])
        .map(|r| {
            format!(
                "{} (layer {:?} names layer {:?})",
                show(r),
                LAYERS[layer_of[r.from[0].as_str()]].0,
                LAYERS[layer_of[r.to[0].as_str()]].0
            )
        })
        .collect();
    eprintln!(
        "{} references between modules, {} of them upward",
        refs.len(),
        upward.len()
    );
    assert!(
        upward.is_empty(),
        "{} references go up a layer:\n{}",
        upward.len(),
        upward.join("\n")
    );
}

#[test]
fn the_reader_sees_the_paths_rust_sees() {
    let code = drop_test_items(&strip(
        "use crate::a::{b, c::{self, D}, e as f};\n\
         // crate::comment::X\n\
         let s = \"crate::string::X\"; let c = '\"'; fn f<'a>(x: &'a str) {}\n\
         super::super::g::h(); $crate::macro_path::x!();\n\
         #[cfg(test)]\nmod tests { use crate::test_only::X; }\n\
         crate::after::Y;",
    ));
    let src = Source {
        rel: "q/r.rs".into(),
        module: vec!["q".into(), "r".into()],
        code,
    };
    let mut paths = Vec::new();
    for s in [
        "a",
        "a/b",
        "a/c",
        "a/e",
        "comment",
        "string",
        "g",
        "macro_path",
        "test_only",
        "after",
    ] {
        paths.push(Source {
            rel: format!("{s}.rs"),
            module: module_of(&format!("{s}.rs")),
            code: String::new(),
        });
    }
    paths.push(src);
    let got: Vec<String> = references(&paths).iter().map(|r| r.to.join("::")).collect();
    assert_eq!(got, ["a::b", "a::c", "a::c", "a::e", "g", "after"]);
}
