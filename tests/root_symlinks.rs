//! Symlinks below `--root` are resolved inside it, as `chroot` sees them: an absolute link names
//! the root's file, never this machine's; a write through a link edits the file it points to and
//! keeps the link; a link climbing out of the root is refused.
//!
//! Each absolute link points at a path that also exists on this machine (a temp dir outside the
//! root) holding a decoy, so following it the host's way would read or change the decoy.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{profile_file, Sim};

const CLOUDPODS_PROFILE: &str = "\
[host]
reboot = \"never\"

[[gpus]]
select = \"0000:e8:00.0\"
vgpu_type = \"A40-8Q\"
count = 1

[cloudpods]
restart = false
";

const HOST_CONF: &str = "region: region0\nnvidia_vgpu_pfs:\n- 67:00.0\nport: 8885\n";
const DECOY: &str = "region: not-this-host\nnvidia_vgpu_pfs:\n- 01:00.0\n";

/// A directory outside the root (on this machine), and the same path inside the root.
fn outside_and_inside(s: &Sim) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let abs = out.path().to_path_buf();
    let inside = s.root().join(abs.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    (out, abs, inside)
}

#[test]
fn host_conf_behind_an_absolute_directory_link_is_edited_inside_the_root() {
    let s = Sim::new("a40x8-ready");
    let (_out, abs, inside) = outside_and_inside(&s);
    std::fs::write(abs.join("host.conf"), DECOY).unwrap();
    std::fs::write(inside.join("host.conf"), HOST_CONF).unwrap();
    symlink(&abs, s.root().join("etc/yunion")).unwrap();
    let p = profile_file(CLOUDPODS_PROFILE);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(abs.join("host.conf")).unwrap(),
        DECOY,
        "this machine's file was changed"
    );
    let edited = std::fs::read_to_string(inside.join("host.conf")).unwrap();
    assert!(edited.contains("- e8:00.4"), "{edited}");
    assert!(edited.contains("region: region0"), "{edited}");
    assert_eq!(
        std::fs::read_link(s.root().join("etc/yunion")).unwrap(),
        abs
    );
}

#[test]
fn a_symlinked_grub_default_is_edited_through_the_link_which_stays() {
    let s = Sim::new("a40x8");
    let (_out, abs, inside) = outside_and_inside(&s);
    let grub = s.root().join("etc/default/grub");
    let original = std::fs::read_to_string(&grub).unwrap();
    assert!(
        original.contains("GRUB_CMDLINE_LINUX_DEFAULT"),
        "{original}"
    );
    // The decoy has its own command line: reading it instead would plan a different edit.
    std::fs::write(abs.join("grub"), "GRUB_CMDLINE_LINUX_DEFAULT=\"decoy\"\n").unwrap();
    std::fs::rename(&grub, inside.join("grub")).unwrap();
    symlink(abs.join("grub"), &grub).unwrap();
    let prof = std::fs::read_to_string(common::repo().join("profiles/a40.toml")).unwrap();
    let p = profile_file(&prof.replace("reboot = \"prompt\"", "reboot = \"never\""));
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        !r.all().contains("decoy"),
        "the host's file was read: {r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(abs.join("grub")).unwrap(),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"decoy\"\n",
        "this machine's file was changed"
    );
    assert_eq!(
        std::fs::read_link(&grub).unwrap(),
        abs.join("grub"),
        "the link is kept"
    );
    let edited = std::fs::read_to_string(inside.join("grub")).unwrap();
    assert!(edited.contains("intel_iommu=on"), "{edited}");
    assert_eq!(
        s.read("var/lib/vgpuctl/backups/etc/default/grub"),
        original,
        "the backup keeps the old content"
    );
}

#[test]
fn a_link_climbing_out_of_the_root_is_refused_and_nothing_outside_changes() {
    let s = Sim::new("a40x8-ready");
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("host.conf"), DECOY).unwrap();
    // etc/yunion -> ../../..<out>: `..` past the root, then the outside directory.
    let depth = s.root().components().count() - 1;
    let up: PathBuf = std::iter::repeat_n(Path::new(".."), depth + 1).collect();
    let target = up.join(out.path().strip_prefix("/").unwrap());
    symlink(&target, s.root().join("etc/yunion")).unwrap();
    assert!(
        s.root().join("etc/yunion/host.conf").exists(),
        "the host's own resolution reaches the outside file"
    );
    let p = profile_file(CLOUDPODS_PROFILE);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("out of the host root"), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("host.conf")).unwrap(),
        DECOY
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        1,
        "nothing was added outside"
    );
}
