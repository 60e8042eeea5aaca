//! Shared by the targets: one fuzz input holds several texts separated by NUL bytes (the seed
//! corpus files are written the same way), each decoded lossily so every byte string is used.
#![allow(dead_code)]

pub fn parts(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Kernel arguments an editor may be asked to ensure: plain `key` or `key=value` words as the
/// installer uses them (no quotes, no whitespace, not `--`), one per parameter (the kernel's
/// `-`/`_` equivalence), at most four. Falls back to the IOMMU arguments setup really uses.
pub fn wanted_args(spec: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let norm = |k: &str| k.replace('-', "_");
    for w in spec.unwrap_or("").split_whitespace() {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        let plain = |s: &str, extra: &[u8]| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-,".contains(&b) || extra.contains(&b))
        };
        if k.is_empty() || w == "--" || !plain(k, b"") || !plain(v, b":/") {
            continue;
        }
        if out
            .iter()
            .any(|o| norm(o.split('=').next().unwrap()) == norm(k))
        {
            continue;
        }
        out.push(w.to_string());
        if out.len() == 4 {
            break;
        }
    }
    if out.is_empty() {
        out = vec!["intel_iommu=on".into(), "iommu=pt".into()];
    }
    out
}

/// The parameter name of an argument, as the kernel compares them.
pub fn key_of(arg: &str) -> String {
    arg.split('=').next().unwrap_or("").replace('-', "_")
}

/// Lines without their terminators (`\n` and any CRs before it or at the very end); an editor
/// that appends may terminate a last line that had none (turning a stray CR into a CRLF),
/// which is not a change of that line.
pub fn line_bodies(s: &str) -> Vec<&str> {
    s.split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l).trim_end_matches('\r'))
        .collect()
}
