//! Issue 14 item 11: real layouts (recorded-behaviour.md §0, §1) on the `rtxpro6000-vfio` model:
//! PCI domain 0001, the first VF at function .2, 48 `virtfnN` links (so `virtfn10` sorts before
//! `virtfn2`), six files in a 580-branch VF's `nvidia/` whose `gpu_instance_id` and
//! `placement_id` cannot be read before a vGPU exists, and type names with spaces.

mod common;
use common::*;

const PF: &str = "0001:04:00.0";
const DEV: &str = "sys/bus/pci/devices";

fn profile(count: u32, ty: &str) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"{PF}\"\nvgpu_type = \"{ty}\"\ncount = {count}\n"
    ))
}

/// The PF's VFs in N order, read from its `virtfnN` links.
fn vfs_by_n(s: &Sim) -> Vec<String> {
    let dir = s.root().join(format!("{DEV}/{PF}"));
    let mut links: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.file_name()?.to_str()?.to_string()))
        })
        .collect();
    links.sort();
    links.into_iter().map(|(_, vf)| vf).collect()
}

fn current(s: &Sim, vf: &str) -> String {
    s.read(&format!("{DEV}/{vf}/nvidia/current_vgpu_type"))
        .trim()
        .to_string()
}

fn pinned_parents(s: &Sim) -> Vec<String> {
    let t: toml::Value = toml::from_str(&s.read("etc/vgpuctl/vgpus.toml")).unwrap();
    let mut v: Vec<String> = t["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["parent"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn rtx_pro_6000_in_domain_0001_gets_its_vgpus_on_the_first_vfs_by_n() {
    let s = Sim::new("rtxpro6000-vfio-ready");
    // A type name with spaces, in another case than the driver prints it.
    let ty = "rtx pro 6000 blackwell dc-8q";

    // 12 x 8 GB fill the 96 GB card; a 13th does not fit, and the plan says so before any change.
    let hash = s.hash();
    let r = s.run(&[
        "setup",
        "--profile",
        profile(13, ty).path().to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("at most 12 per GPU"), "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");

    let p = profile(12, ty);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The layout as recorded: 48 VFs, the first at function 2, listed lexically by the kernel.
    let vfs = vfs_by_n(&s);
    assert_eq!(vfs.len(), 48);
    assert_eq!(vfs[0], "0001:04:00.2");
    assert_eq!(vfs[10], "0001:04:01.4");
    let mut names: Vec<String> = std::fs::read_dir(s.root().join(format!("{DEV}/{PF}")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("virtfn"))
        .collect();
    names.sort();
    assert_eq!(&names[..3], ["virtfn0", "virtfn1", "virtfn10"]);

    // The vGPUs are on virtfn0..virtfn11, i.e. the first twelve VFs by N.
    let mut want: Vec<String> = vfs[..12].to_vec();
    want.sort();
    assert_eq!(pinned_parents(&s), want);
    let id = current(&s, &vfs[0]);
    assert_ne!(id, "0");
    for (n, vf) in vfs.iter().enumerate() {
        assert_eq!(current(&s, vf) == id, n < 12, "virtfn{n} {vf}");
    }

    // Six files in a 580-branch VF's nvidia/; the two outputs read nothing before a vGPU exists.
    let free = &vfs[20];
    let mut files: Vec<String> = std::fs::read_dir(s.root().join(format!("{DEV}/{free}/nvidia")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "creatable_vgpu_types",
            "current_vgpu_type",
            "gpu_instance_id",
            "placement_id",
            "vgpu_params",
            "warm_update"
        ]
    );
    for f in ["gpu_instance_id", "placement_id"] {
        let path = s.root().join(format!("{DEV}/{free}/nvidia/{f}"));
        assert!(std::fs::read_to_string(&path).is_err(), "{f} reads");
    }

    // status and check name the domain-0001 addresses.
    let st = s.run(&["status"]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        st.stdout.contains(PF) && st.stdout.contains("on 0001:04:00.2"),
        "{st:?}"
    );
    assert!(st.stdout.contains("RTX Pro 6000 Blackwell DC-8Q"), "{st:?}");
    let ck = s.run(&["check"]);
    assert!(
        ck.stdout.contains("0001:04:00.0") && ck.stdout.contains("0001:c8:00.0"),
        "{ck:?}"
    );
    assert!(!ck.stdout.contains("0000:04:"), "{ck:?}");

    // After a reboot the restore unit brings back the same twelve, on the same VFs.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(
        rb.stdout.contains("vgpuctl-restore.service") && rb.stdout.contains("exit 0"),
        "{rb:?}"
    );
    for (n, vf) in vfs.iter().enumerate() {
        assert_eq!(
            current(&s, vf) == id,
            n < 12,
            "after reboot: virtfn{n} {vf}"
        );
    }
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}
