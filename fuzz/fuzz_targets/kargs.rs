//! The kernel command-line editors (kargs, /etc/kernel/cmdline, BLS `options`): never panic;
//! ensure twice == ensure once and the result has the arguments; arguments of other parameters
//! keep their order and text; what follows `--` (init's arguments) is kept byte for byte;
//! remove twice == remove once and leaves none of the removed arguments.
//! Input: LINE NUL WANTED-ARGS (space separated; default the IOMMU arguments).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use vgpuctl::edit::{kargs, kernel_cmdline_file};

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data);
    let line = p[0].as_str();
    let wanted = common::wanted_args(p.get(1).map(String::as_str));
    let w: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let keys: Vec<String> = w.iter().map(|a| common::key_of(a)).collect();

    let once = kargs::ensure_args(line, &w);
    assert_eq!(
        kargs::ensure_args(&once, &w),
        once,
        "ensure not idempotent: {line:?}"
    );
    assert!(
        kargs::has_args(&once, &w),
        "{line:?} -> {once:?} lacks {w:?}"
    );
    let others = |s: &str| -> Vec<String> {
        kargs::tokens(s)
            .iter()
            .filter(|t| !keys.contains(&t.key().replace('-', "_")))
            .map(|t| t.text.to_string())
            .collect()
    };
    assert_eq!(others(line), others(&once), "{line:?} -> {once:?}");
    // init's arguments: everything from a bare `--` token on.
    if let Some(pos) = dashdash(line) {
        assert!(once.ends_with(&line[pos..]), "{line:?} -> {once:?}");
    }

    let replaced = kargs::replace_conflicts(line, &w);
    assert_eq!(kargs::replace_conflicts(&replaced, &w), replaced);

    let removed = kargs::remove_args(line, &w);
    assert_eq!(kargs::remove_args(&removed, &w), removed);
    for a in &w {
        assert!(
            !kargs::tokens(&removed).iter().any(|t| t.text == *a),
            "{a} still in {removed:?}"
        );
    }
    assert_eq!(others(line), others(&removed), "{line:?} -> {removed:?}");

    let k = kernel_cmdline_file::ensure_kernel_cmdline(line, &w);
    assert_eq!(kernel_cmdline_file::ensure_kernel_cmdline(&k, &w), k);
    let r = kernel_cmdline_file::remove_kernel_cmdline(line, &w);
    assert_eq!(kernel_cmdline_file::remove_kernel_cmdline(&r, &w), r);
    if let Ok(b) = kernel_cmdline_file::ensure_bls_options("fuzz.conf", line, &w) {
        assert_eq!(
            kernel_cmdline_file::ensure_bls_options("fuzz.conf", &b, &w).as_ref(),
            Ok(&b),
            "{line:?}"
        );
        assert!(kargs::has_args(&kernel_cmdline_file::bls_options(&b), &w));
    }
    if let Ok(b) = kernel_cmdline_file::remove_bls_options("fuzz.conf", line, &w) {
        assert_eq!(
            kernel_cmdline_file::remove_bls_options("fuzz.conf", &b, &w).as_ref(),
            Ok(&b)
        );
    }
});

/// Byte offset of the first `--` token the kernel would stop at, if any.
fn dashdash(line: &str) -> Option<usize> {
    let toks = vgpuctl::edit::kargs::tokens(line);
    let end = toks.last().map_or(0, |t| t.span.end);
    // tokens() stops before `--`; find it right after the last kernel argument.
    let rest = &line[end..];
    let t = rest.trim_start();
    let start = end + (rest.len() - t.len());
    let after = t.strip_prefix("--")?;
    (after.is_empty() || after.starts_with(|c: char| c.is_ascii_whitespace())).then_some(start)
}
