//! Resolve a root-relative path inside the root, the way `chroot` sees it: an absolute symlink
//! target starts again at the root (never at this machine's `/`), a relative one is taken from
//! its directory, and a link whose `..` climbs above the root is refused (it would name a file of
//! another system). The result contains no symlink (but the last component, when asked), so
//! plain `std::fs` calls on it stay inside the root.
//!
//! Most paths (sysfs on the boot-time restore path above all) have no absolute link and never
//! climb: one `openat2(RESOLVE_BENEATH)` lets the kernel confirm that the plain path stays below
//! the root, and only a path it refuses (or a symlink in last place to follow) is walked here,
//! one component at a time.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

/// Links followed in one resolution before giving up (the kernel's limit, ELOOP).
const MAX_LINKS: u32 = 40;

/// What the path is for when its last component is a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    /// Open, read or list what the link points to: the result may still end in a link that
    /// stays inside the root, which the kernel then follows by itself.
    Follow,
    /// Replace what the link points to (a rename over it): the result is the target itself.
    Target,
    /// Look at, replace or remove the link itself.
    Keep,
}

/// A handle on the root directory for [`resolve`]'s fast path (None when it cannot be opened).
pub fn open_root(root: &Path) -> Option<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// `rel` (already clean: plain names only) resolved below `root`; `root_fd` is `root` opened
/// by [`open_root`], for the fast path.
pub fn resolve(
    root: &Path,
    root_fd: Option<BorrowedFd>,
    rel: &Path,
    last: Last,
) -> io::Result<PathBuf> {
    if let Some(fd) = root_fd {
        if rel.as_os_str().is_empty() {
            return Ok(root.to_path_buf());
        }
        if stays_beneath(fd, rel, last) {
            return Ok(root.join(rel));
        }
    }
    walk(root, rel, last)
}

/// Open `rel` below the root the fast way: Ok(None) when the kernel cannot decide it alone (an
/// absolute link or a `..` above the root on the way: EXDEV), to be walked instead.
pub fn open_beneath(root_fd: BorrowedFd, rel: &Path, flags: OFlag) -> io::Result<Option<OwnedFd>> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // EAGAIN: a rename or mount anywhere on the system raced a `..` of the lookup, and the
    // kernel could not tell whether it escaped (openat2(2) says to retry). Every sysfs device
    // link has `..` in it; under renames elsewhere 1 open in 8 was seen to fail at once.
    for _ in 0..EAGAIN_RETRIES {
        match openat2(root_fd, rel, how) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::EAGAIN) => continue,
            // Whatever else fails (ENOENT, ENOTDIR, EACCES) fails the same for the plain path
            // and as chroot sees it: the resolution up to there stayed below the root.
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EINVAL | Errno::EPERM) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    // Still racing: walk it component by component instead, which takes no such shortcut.
    Ok(None)
}

/// How often an open is retried on EAGAIN before the path is walked instead.
const EAGAIN_RETRIES: usize = 4;

/// The kernel resolves `rel` below the root without an absolute link or a `..` above it, and
/// the plain path names what `last` asks for.
fn stays_beneath(root_fd: BorrowedFd, rel: &Path, last: Last) -> bool {
    let nofollow = if last == Last::Follow {
        OFlag::empty()
    } else {
        OFlag::O_NOFOLLOW
    };
    match open_beneath(root_fd, rel, OFlag::O_PATH | nofollow) {
        Ok(Some(fd)) => {
            last != Last::Target
                || nix::sys::stat::fstat(fd.as_fd())
                    .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFLNK)
        }
        Ok(None) => false,
        Err(_) if last == Last::Follow => true,
        // Missing: fine when only the last component is (a dangling link opens as itself).
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => missing_last_only(root_fd, rel),
        Err(_) => false,
    }
}

/// Only the last component is missing, and its directory stays beneath the root.
fn missing_last_only(root_fd: BorrowedFd, rel: &Path) -> bool {
    let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return true;
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root_fd, parent, how).is_ok()
}

/// The slow path: one component at a time, symlinks expanded by hand.
fn walk(root: &Path, rel: &Path, last: Last) -> io::Result<PathBuf> {
    let mut todo: VecDeque<OsString> = rel.iter().map(|c| c.to_os_string()).collect();
    let mut done = root.to_path_buf();
    let mut depth = 0usize; // components of `done` below the root
    let mut links = 0;
    // Once a component is missing, nothing below it can be a link: skip the lookups.
    let mut missing = false;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if depth == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} leads out of the host root {} through a symlink",
                        root.join(rel).display(),
                        root.display()
                    ),
                ));
            }
            // `done` holds no symlink, so its parent is the real parent directory.
            done.pop();
            depth -= 1;
            continue;
        }
        done.push(&c);
        depth += 1;
        if missing || (todo.is_empty() && last == Last::Keep) {
            continue;
        }
        let target = match std::fs::symlink_metadata(&done) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&done)?,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::other(format!(
                "{}: too many levels of symbolic links",
                root.join(rel).display()
            )));
        }
        done.pop();
        depth -= 1;
        let mut expanded = VecDeque::new();
        for tc in target.components() {
            match tc {
                Component::RootDir | Component::Prefix(_) => {
                    done = root.to_path_buf();
                    depth = 0;
                }
                Component::CurDir => {}
                Component::ParentDir => expanded.push_back(OsString::from("..")),
                Component::Normal(n) => expanded.push_back(n.to_os_string()),
            }
        }
        while let Some(t) = expanded.pop_back() {
            todo.push_front(t);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/real")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("etc/grub-real"), "x").unwrap();
        symlink("/etc/grub-real", r.join("etc/grub")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/etc/real", r.join("etc/yunion")).unwrap();
        symlink("../../..", r.join("etc/real/up")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("real/new.conf", r.join("etc/dangling")).unwrap();
        d
    }

    #[test]
    fn absolute_links_start_at_the_root_relative_ones_at_their_directory() {
        let d = tree();
        let r = d.path();
        let fd = open_root(r).unwrap();
        // Both ways give the same file; Follow may leave a link inside the root unresolved.
        let f = |rel: &str, last| {
            let slow = walk(r, Path::new(rel), last).unwrap();
            let fast = resolve(r, Some(fd.as_fd()), Path::new(rel), last).unwrap();
            if last == Last::Follow {
                let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
                assert_eq!(canon(&fast), canon(&slow), "{rel}");
            } else {
                assert_eq!(fast, slow, "{rel}");
            }
            slow
        };
        assert_eq!(f("etc/grub", Last::Follow), r.join("etc/grub-real"));
        assert_eq!(f("etc/grub", Last::Keep), r.join("etc/grub"));
        assert_eq!(
            f("etc/yunion/host.conf", Last::Follow),
            r.join("etc/real/host.conf")
        );
        assert_eq!(f("lib/nvidia/x", Last::Keep), r.join("usr/lib/nvidia/x"));
        assert_eq!(
            f("etc/missing/a/b", Last::Follow),
            r.join("etc/missing/a/b")
        );
    }

    #[test]
    fn a_link_climbing_out_of_the_root_is_refused_and_loops_end() {
        let d = tree();
        let r = d.path();
        let fd = open_root(r).unwrap();
        let f = |rel: &str, last| resolve(r, Some(fd.as_fd()), Path::new(rel), last);
        let e = f("etc/real/up/x", Last::Follow).unwrap_err();
        assert!(e.to_string().contains("out of the host root"), "{e}");
        let e = f("loop1", Last::Target).unwrap_err();
        assert!(e.to_string().contains("too many levels"), "{e}");
        // Followed, the loop is the kernel's to report when the path is used.
        let p = f("loop1", Last::Follow).unwrap();
        assert!(std::fs::read(p).is_err());
        // Kept, the looping link itself can still be looked at or removed.
        assert_eq!(f("loop1", Last::Keep).unwrap(), r.join("loop1"));
    }

    /// openat2(2): with RESOLVE_BENEATH, a `..` on the way gives EAGAIN when a rename anywhere
    /// on the system raced the lookup (the kernel cannot tell whether `..` escaped). Every sysfs
    /// device link is `../../../devices/...`, and the simulated kernel renames its files into
    /// place all the time, as other programs do on a busy host: a read must not fail for it.
    /// (Before the retry, about 1 open in 1000 failed here; a VF then read as holding no vGPU.)
    #[test]
    fn a_rename_elsewhere_during_the_lookup_never_fails_an_open() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("sys/devices/pci0000:81/0000:81:00.4/nvidia")).unwrap();
        std::fs::write(
            r.join("sys/devices/pci0000:81/0000:81:00.4/nvidia/current_vgpu_type"),
            "1153\n",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:81/0000:81:00.4",
            r.join("sys/bus/pci/devices/0000:81:00.4"),
        )
        .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let renamer = {
            let (dir, stop) = (r.join("scratch"), stop.clone());
            std::fs::create_dir_all(&dir).unwrap();
            std::thread::spawn(move || {
                let (a, b) = (dir.join("a"), dir.join("b"));
                std::fs::write(&a, "x").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(&a, &b).unwrap();
                    std::fs::rename(&b, &a).unwrap();
                }
            })
        };
        let fd = open_root(r).unwrap();
        let rel = Path::new("sys/bus/pci/devices/0000:81:00.4/nvidia/current_vgpu_type");
        let mut failed = 0;
        for _ in 0..20_000 {
            match open_beneath(fd.as_fd(), rel, OFlag::O_RDONLY) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Walked instead: must then resolve the same file.
                    assert!(resolve(r, None, rel, Last::Follow).unwrap().is_file());
                }
                Err(_) => failed += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        renamer.join().unwrap();
        assert_eq!(failed, 0, "opens failed while a rename ran elsewhere");
    }
}
