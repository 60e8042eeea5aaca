//! Issue 12 item 17: lowering `count` on a host with live vGPUs drops them. The plan names each
//! vGPU it removes or unpins; an unattended run needs `--allow-remove`; a vGPU a VM uses is never
//! removed or unpinned.

mod common;
use common::*;

fn profile(count: u32) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-12Q\"\ncount = {count}\n"
    ))
}

fn l40s_profile(count: u32) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"0000:41:00.0\"\nvgpu_type = \"L40S-12Q\"\ncount = {count}\n"
    ))
}

fn pinned_parents(s: &Sim) -> Vec<(String, String)> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["uuid"].as_str().unwrap().to_string(),
                v["parent"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pinned(s: &Sim) -> Vec<String> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["uuid"].as_str().unwrap().to_string())
        .collect()
}

/// Make the vGPU on VF `parent` in use: a process holds the VF's /dev/vfio/N open (QEMU does).
fn hold_open(s: &Sim, parent: &str, fd: u32) {
    let group = std::fs::read_link(
        s.root()
            .join(format!("sys/bus/pci/devices/{parent}/iommu_group")),
    )
    .unwrap();
    let g = group.file_name().unwrap().to_str().unwrap().to_string();
    let dir = s.root().join("proc/4242/fd");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(format!("/dev/vfio/{g}"), dir.join(fd.to_string())).unwrap();
}

fn setup_with(s: &Sim, p: &tempfile::NamedTempFile, extra: &[&str]) -> Run {
    let mut args = vec!["setup", "--profile", p.path().to_str().unwrap(), "--yes"];
    args.extend_from_slice(extra);
    s.run(&args)
}

#[test]
fn lowering_count_names_each_unpinned_vgpu_and_needs_allow_remove() {
    let s = Sim::new("a40x8-ready");
    let r = setup_with(&s, &profile(3), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = pinned(&s);
    assert_eq!(before.len(), 3);

    let lower = profile(1);
    // The dry run names what would be unpinned.
    let dry = s.run(&[
        "setup",
        "--profile",
        lower.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let dropped: Vec<&String> = before.iter().filter(|u| dry.stdout.contains(*u)).collect();
    assert!(dry.stdout.contains("Removed or unpinned"), "{dry:?}");
    // Unattended without consent: exit 2 before any change, naming each vGPU and the flag.
    let hash = s.hash();
    let r = setup_with(&s, &lower, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--allow-remove"), "{r:?}");
    let named = before.iter().filter(|u| r.stderr.contains(*u)).count();
    assert_eq!(named, 2, "each unpinned vGPU named: {r:?}");
    assert!(
        r.stderr.contains("A40-12Q") && r.stderr.contains("0000:"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash, "nothing changed");
    assert_eq!(dropped.len(), 2, "the dry run named both: {dry:?}");

    // With consent: two removed and unpinned, the kept one among the old pins; converged.
    let r = setup_with(&s, &lower, &["--allow-remove"]);
    assert_eq!(r.code, 0, "{r:?}");
    let after = pinned(&s);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(before.contains(&after[0]));
    let live: Vec<String> = s.live_vgpus().into_keys().collect();
    assert_eq!(live, after, "the dropped vGPUs are gone");
    let again = setup_with(&s, &lower, &[]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

#[test]
fn a_vgpu_in_use_is_never_removed_or_unpinned() {
    let s = Sim::new("l40s-vfio-ready");
    let r = setup_with(&s, &l40s_profile(3), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = pinned_parents(&s);
    assert_eq!(before.len(), 3, "{before:?}");
    // Two of the three are in use: count = 1 cannot keep both.
    hold_open(&s, &before[1].1, 17);
    hold_open(&s, &before[2].1, 18);
    let hash = s.hash();
    let r = setup_with(&s, &l40s_profile(1), &["--allow-remove"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("a VM is using"), "{r:?}");
    assert!(
        r.stderr.contains(&before[1].0) || r.stderr.contains(&before[2].0),
        "names the vGPU in use: {r:?}"
    );
    assert_eq!(s.hash(), hash, "nothing changed");

    // count = 2 keeps the two in use and drops only the idle one.
    let r = setup_with(&s, &l40s_profile(2), &["--allow-remove"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&before[0].0),
        "the dropped one is named: {r:?}"
    );
    let mut after = pinned_parents(&s);
    after.sort();
    let mut want = vec![before[1].clone(), before[2].clone()];
    want.sort();
    assert_eq!(after, want);
}

/// Make the vGPU on VF `parent` in use through iommufd: QEMU opened the VF's own cdev
/// `/dev/vfio/devices/vfioN` (named by its `vfio-dev/vfioN` directory), not its group.
fn hold_through_iommufd(s: &Sim, parent: &str, fd: u32) {
    let dir = s
        .root()
        .join(format!("sys/bus/pci/devices/{parent}/vfio-dev"));
    let cdev = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .find(|n| n.starts_with("vfio"))
        .expect("a vfio-dev/vfioN directory");
    let fds = s.root().join("proc/4343/fd");
    std::fs::create_dir_all(&fds).unwrap();
    std::os::unix::fs::symlink("/dev/iommu", fds.join("3")).unwrap_or(());
    std::os::unix::fs::symlink(
        format!("/dev/vfio/devices/{cdev}"),
        fds.join(fd.to_string()),
    )
    .unwrap();
}

#[test]
fn a_vgpu_held_through_iommufd_is_in_use_and_never_removed() {
    let s = Sim::new("l40s-vfio-ready");
    let r = setup_with(&s, &l40s_profile(3), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = pinned_parents(&s);
    assert_eq!(before.len(), 3, "{before:?}");
    hold_through_iommufd(&s, &before[1].1, 21);
    hold_through_iommufd(&s, &before[2].1, 22);

    let st = s.run(&["status"]);
    assert_eq!(st.code, 0, "{st:?}");
    for held in &before[1..] {
        let line = st
            .stdout
            .lines()
            .find(|l| l.contains(&held.1))
            .unwrap_or_else(|| panic!("{st:?}"));
        assert!(line.contains("in use by a VM"), "{st:?}");
    }

    // count = 1 cannot keep both held vGPUs: refused, nothing changed.
    let hash = s.hash();
    let r = setup_with(&s, &l40s_profile(1), &["--allow-remove"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("a VM is using"), "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");

    // count = 2 keeps the two held and drops only the idle one.
    let r = setup_with(&s, &l40s_profile(2), &["--allow-remove"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut after = pinned_parents(&s);
    after.sort();
    let mut want = before[1..].to_vec();
    want.sort();
    assert_eq!(after, want);
    let current = |vf: &str| {
        s.read(&format!(
            "sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"
        ))
        .trim()
        .to_string()
    };
    for held in &before[1..] {
        assert_ne!(current(&held.1), "0", "the vGPU in use is still there");
    }
    assert_eq!(current(&before[0].1), "0", "the idle one is gone");
}
