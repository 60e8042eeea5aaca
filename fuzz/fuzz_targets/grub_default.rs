//! The GRUB defaults editor over `/etc/default/grub` and its `grub.d/*.cfg` drop-ins:
//! never panics; a plan, once applied, gives the boot entry's command line every wanted
//! argument and re-planning finds nothing to do (edit twice == edit once); every edit starts
//! from the file's current content; no line that does not mention GRUB_CMDLINE_LINUX changes,
//! nor any other argument of the effective command line; removal is idempotent.
//! Input: MAIN NUL DROPIN NUL DROPIN ... (Intel's arguments for even lengths, AMD's for odd).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use vgpuctl::edit::grub_default::{self, FileEdit};
use vgpuctl::edit::kargs;

const NAMES: &[&str] = &[
    "/etc/default/grub.d/50-cloudimg-settings.cfg",
    "/etc/default/grub.d/10-x.cfg",
    "/etc/default/grub.d/README",
    "/etc/default/grub.d/99-z.cfg",
];

fn apply<'a>(files: &[(&'a str, &'a str)], plan: &'a [FileEdit]) -> Vec<(&'a str, &'a str)> {
    grub_default::applied(files, plan)
}

/// Lines that must not change (line endings aside: appending an assignment may end a last
/// line that had none, in the file's CRLF or LF style).
fn untouched_lines(s: &str) -> Vec<&str> {
    common::line_bodies(s)
        .into_iter()
        .filter(|l| !l.is_empty() && !l.contains("GRUB_CMDLINE_LINUX"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data);
    let wanted = kargs::iommu_args(data.len() % 2 == 0);
    let keys: Vec<String> = wanted.iter().map(|a| common::key_of(a)).collect();
    let mut files: Vec<(&str, &str)> = vec![("/etc/default/grub", p[0].as_str())];
    for (i, d) in p.iter().skip(1).take(NAMES.len()).enumerate() {
        files.push((NAMES[i], d.as_str()));
    }
    let before_cmdline = grub_default::effective_cmdline(&files);
    // A vertical tab separates arguments for the kernel (its isspace()) but not for kargs
    // (Rust's is_ascii_whitespace), and effective_cmdline trims it only at the end: compare
    // arguments as the kernel splits them.
    let others = |s: &str| -> Vec<String> {
        let s = s.replace('\u{b}', " ");
        kargs::tokens(&s)
            .iter()
            .filter(|t| !keys.contains(&t.key().replace('-', "_")))
            .map(|t| t.text.to_string())
            .collect()
    };

    if let Ok(plan) = grub_default::plan_kernel_args(&files, wanted) {
        for e in &plan {
            let orig = files
                .iter()
                .find(|(n, _)| *n == e.name)
                .expect("edit of a known file");
            assert_eq!(e.before, orig.1);
            assert_ne!(e.before, e.after, "empty edit planned for {}", e.name);
            assert_eq!(
                untouched_lines(&e.before),
                untouched_lines(&e.after),
                "{}: a line outside the command-line variables changed",
                e.name
            );
        }
        let applied = apply(&files, &plan);
        let after_cmdline = grub_default::effective_cmdline(&applied);
        assert!(
            kargs::has_args(&after_cmdline, wanted),
            "{files:?} -> {after_cmdline:?}"
        );
        assert_eq!(
            others(&before_cmdline),
            others(&after_cmdline),
            "other arguments changed: {files:?}"
        );
        assert_eq!(
            grub_default::plan_kernel_args(&applied, wanted),
            Ok(vec![]),
            "edit twice != edit once: {files:?}"
        );
    }
    for var in [grub_default::DEFAULT_VAR, grub_default::LINUX_VAR] {
        if let Ok(plan) = grub_default::plan_cmdline_edit(&files, var, wanted) {
            let applied = apply(&files, &plan);
            assert!(kargs::has_args(
                &grub_default::effective_var(&applied, var),
                wanted
            ));
            assert_eq!(
                grub_default::plan_cmdline_edit(&applied, var, wanted),
                Ok(vec![]),
                "{var}: {files:?}"
            );
        }
        if let Ok(plan) = grub_default::plan_cmdline_removal(&files, var, wanted) {
            let applied = apply(&files, &plan);
            assert_eq!(
                grub_default::plan_cmdline_removal(&applied, var, wanted),
                Ok(vec![]),
                "{var}: removal twice != once: {files:?}"
            );
        }
        if let Ok(once) = grub_default::ensure_in_file("grub", &p[0], var, wanted) {
            assert_eq!(
                grub_default::ensure_in_file("grub", &once, var, wanted).as_ref(),
                Ok(&once)
            );
        }
    }
    let _ = grub_default::read_var(&p[0], grub_default::DEFAULT_VAR);
});
