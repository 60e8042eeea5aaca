//! `export -o PATH` writes only a regular file in a directory that exists: a symlink, FIFO,
//! device or directory at PATH is refused (exit 2) and left as it is, and no directory is created.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::Sim;

fn export_to(s: &Sim, path: &Path) -> common::Run {
    s.run(&["export", "-o", path.to_str().unwrap()])
}

#[test]
fn a_fifo_a_symlink_or_a_directory_at_the_output_path_is_refused_and_kept() {
    let s = Sim::new("a40x8-ready");
    let d = tempfile::tempdir().unwrap();

    let fifo = d.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = export_to(&s, &fifo);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("is a FIFO") && r.stderr.contains("fifo.toml"),
        "{r:?}"
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    let target = d.path().join("target.toml");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = d.path().join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = export_to(&s, &link);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is a symlink"), "{r:?}");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");

    let r = export_to(&s, d.path());
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is a directory"), "{r:?}");

    // A device node of our own (a copy of /dev/null's numbers; creating one needs CAP_MKNOD).
    let dev = d.path().join("dev.toml");
    let made = nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    );
    if made.is_ok() {
        let r = export_to(&s, &dev);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("is a device"), "{r:?}");
        assert!(std::fs::symlink_metadata(&dev)
            .unwrap()
            .file_type()
            .is_char_device());
        std::fs::remove_file(&dev).unwrap();
    } else {
        eprintln!("no device node case: mknod failed ({made:?})");
    }

    // Nothing else appeared next to them (no temp file left behind).
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo.toml", "link.toml", "target.toml"]);
}

#[test]
fn a_missing_directory_is_named_and_not_created_a_regular_file_is_replaced() {
    let s = Sim::new("a40x8-ready");
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nonexistent/dir");
    let r = export_to(&s, &missing.join("x.toml"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("{} does not exist", missing.display())),
        "{r:?}"
    );
    assert!(
        !d.path().join("nonexistent").exists(),
        "a directory was created"
    );

    let file = d.path().join("profile.toml");
    std::fs::write(&file, "old\n").unwrap();
    let r = export_to(&s, &file);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("Exported by vgpuctl"));
}
