//! The simulator against the real layouts and behaviours it must play.

use super::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn sim(dir: &tempfile::TempDir, model: &str, opts: &[&str]) -> SimHost {
    let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    open(&dir.path().join("root"), model, &opts).unwrap()
}

/// Run a program; after `sriov-manage -e`, also wait for every VF's vGPU group to appear (they
/// come in per VF after it returned, as on a real host), so a test can use the types at once.
fn run(h: &SimHost, prog: &str, args: &[&str]) -> RunOutput {
    let out = h.run(&Cmd::new(prog).args(args.iter().copied())).unwrap();
    if prog.ends_with("sriov-manage") && args.first() == Some(&"-e") {
        wait_groups(h);
    }
    out
}

fn wait_groups(h: &SimHost) {
    let mut n = 0;
    while state_of(h)
        .unwrap()
        .pending
        .iter()
        .any(|p| matches!(p.event, state::Event::VfGroup { .. }))
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
        n += 1;
        assert!(n < 2000, "VF groups never appeared");
    }
}

const E8: &str = "sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types";

#[test]
fn every_model_builds_fresh_and_ready() {
    for m in MODELS {
        for name in [m.to_string(), format!("{m}-ready")] {
            let d = tmp();
            let h = sim(&d, &name, &[]);
            assert_eq!(detect(h.root()).as_deref(), Some(name.as_str()));
            assert!(h
                .read_trim("etc/os-release")
                .unwrap()
                .contains("VERSION_ID"));
            assert!(
                h.read_trim("proc/cmdline")
                    .unwrap()
                    .starts_with("BOOT_IMAGE=")
                    || m == &"proxmox-l4"
            );
            assert_eq!(
                h.read_trim("proc/sys/kernel/random/boot_id").unwrap().len(),
                36
            );
            let gpus: Vec<String> = h
                .list("sys/bus/pci/devices")
                .into_iter()
                .filter(|a| {
                    h.read_trim(&format!("sys/bus/pci/devices/{a}/vendor"))
                        .as_deref()
                        == Some("0x10de")
                })
                .collect();
            assert!(!gpus.is_empty(), "{name}");
            assert!(h.exists("sys/bus/pci/devices/0000:00:00.0/vendor"));
            let sb = h.read_bytes(layout::SECURE_BOOT_VAR).unwrap();
            assert_eq!(sb, vec![6, 0, 0, 0, 0]);
            if name.ends_with("-ready") && !matches!(*m, "cloud-h100" | "geforce") {
                let first = &gpus[0];
                assert_eq!(
                    h.link_name(&format!("sys/bus/pci/devices/{first}/driver"))
                        .as_deref(),
                    Some("nvidia"),
                    "{name}"
                );
                assert!(h.read_trim("proc/modules").unwrap().contains("nvidia "));
                assert!(
                    !h.read_trim("proc/modules").unwrap().contains("nouveau"),
                    "{name}"
                );
                assert!(
                    h.exists(&format!("sys/bus/pci/devices/{first}/iommu_group")),
                    "{name}"
                );
                assert!(h.exists("usr/lib/nvidia/sriov-manage"));
                assert_eq!(
                    h.read_trim("sys/module/nvidia/version").as_deref(),
                    Some(models::find(m).unwrap().driver)
                );
                assert!(
                    h.exists("etc/systemd/system/multi-user.target.wants/nvidia-vgpu-mgr.service")
                );
                let active = run(&h, "systemctl", &["is-active", "nvidia-vgpu-mgr"]);
                assert_eq!(active.stdout, "active\n", "{name}");
                assert!(h.list("sys/bus/mdev/devices").is_empty());
            }
        }
    }
}

#[test]
fn a40x8_fresh_looks_like_the_seed_host() {
    let d = tmp();
    let h = sim(&d, "a40x8", &[]);
    let pf = "sys/bus/pci/devices/0000:e8:00.0";
    assert_eq!(
        h.read_trim(&format!("{pf}/device")).as_deref(),
        Some("0x2235")
    );
    assert_eq!(
        h.read_trim(&format!("{pf}/subsystem_device")).as_deref(),
        Some("0x145a")
    );
    assert_eq!(
        h.read_trim(&format!("{pf}/class")).as_deref(),
        Some("0x030200")
    );
    assert_eq!(
        h.link_name(&format!("{pf}/driver")).as_deref(),
        Some("vfio-pci")
    );
    assert!(
        !h.exists(&format!("{pf}/iommu_group")),
        "Intel without intel_iommu=on"
    );
    assert!(h.exists("sys/firmware/acpi/tables/DMAR"));
    assert!(h
        .read_trim("proc/cpuinfo")
        .unwrap()
        .contains("GenuineIntel"));
    assert!(h.read_trim("proc/modules").unwrap().contains("nouveau"));
    assert!(h
        .read_trim("etc/default/grub")
        .unwrap()
        .contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\""));
    assert!(h.exists(&format!("root/{}", driver_pkg::zip_name(DRIVER_VERSION))));
    // The seed's unbind line works.
    h.write_attr(&format!("{pf}/driver/unbind"), "0000:e8:00.0")
        .unwrap();
    assert!(!h.exists(&format!("{pf}/driver")));
    // sysfs cannot create files
    let e = h.write_attr(&format!("{pf}/nonexistent"), "1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::ENOENT));
}

#[test]
fn mdev_create_until_full_and_placement_rule() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    assert!(h.list("sys/class/mdev_bus").is_empty());
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_totalvfs")
            .as_deref(),
        Some("32")
    );
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs")
            .as_deref(),
        Some("0")
    );
    let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0:e8:0.0"]);
    assert!(out.success());
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs")
            .as_deref(),
        Some("32")
    );
    let parents = h.list("sys/class/mdev_bus");
    assert_eq!(parents.len(), 32);
    assert_eq!(parents[0], "0000:e8:00.4");
    assert_eq!(parents[31], "0000:e8:04.3");
    assert_eq!(
        h.link_name("sys/bus/pci/devices/0000:e8:00.4/physfn")
            .as_deref(),
        Some("0000:e8:00.0")
    );
    assert_eq!(
        h.link_name("sys/bus/pci/devices/0000:e8:00.0/virtfn31")
            .as_deref(),
        Some("0000:e8:04.3")
    );
    // The seed's listing.
    assert_eq!(h.list(E8).len(), 22);
    assert_eq!(
        h.read_trim(&format!("{E8}/nvidia-555/name")).as_deref(),
        Some("NVIDIA A40-1B")
    );
    assert_eq!(
        h.read_trim(&format!("{E8}/nvidia-555/description")).as_deref(),
        Some("num_heads=4, frl_config=45, framebuffer=1024M, max_resolution=5120x2880, max_instance=32")
    );
    assert_eq!(
        h.read_trim(&format!("{E8}/nvidia-555/available_instances"))
            .as_deref(),
        Some("1")
    );
    assert!(h.exists("sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create"));
    // The seed's first vGPU.
    let u1 = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    h.write_attr(&format!("{E8}/nvidia-555/create"), u1)
        .unwrap();
    assert_eq!(
        h.list(&format!("{E8}/nvidia-555/devices")),
        vec![u1.to_string()]
    );
    assert_eq!(
        h.link_name(&format!("sys/bus/mdev/devices/{u1}/mdev_type"))
            .as_deref(),
        Some("nvidia-555")
    );
    for t in h.list(E8) {
        assert_eq!(
            h.read_trim(&format!("{E8}/{t}/available_instances"))
                .as_deref(),
            Some("0"),
            "{t}"
        );
    }
    // Same VF again: EINVAL; other type elsewhere on this GPU: placement says no.
    let e = h
        .write_attr(
            &format!("{E8}/nvidia-555/create"),
            &uuid::Uuid::new_v4().to_string(),
        )
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL));
    let other = "sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575";
    assert_eq!(
        h.read_trim(&format!("{other}/available_instances"))
            .as_deref(),
        Some("0")
    );
    assert!(h
        .write_attr(
            &format!("{other}/create"),
            &uuid::Uuid::new_v4().to_string()
        )
        .is_err());
    let same = "sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-555";
    assert_eq!(
        h.read_trim(&format!("{same}/available_instances"))
            .as_deref(),
        Some("1")
    );
    // Bad UUID.
    let e = h
        .write_attr(&format!("{same}/create"), "not-a-uuid")
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL));
    // Fill the GPU: 32 x A40-1B.
    for p in parents.iter().skip(1) {
        let t = format!(
            "sys/class/mdev_bus/{p}/mdev_supported_types/{}/create",
            if p.contains(":04.") {
                "vfio-pci-555"
            } else {
                "nvidia-555"
            }
        );
        h.write_attr(&t, &uuid::Uuid::new_v4().to_string()).unwrap();
    }
    assert_eq!(h.list("sys/bus/mdev/devices").len(), 32);
    // Remove one: its VF offers A40-1B again, still not other types.
    h.write_attr(&format!("sys/bus/mdev/devices/{u1}/remove"), "1")
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{E8}/nvidia-555/available_instances"))
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        h.read_trim(&format!("{E8}/nvidia-565/available_instances"))
            .as_deref(),
        Some("0")
    );
    assert!(!h.exists(&format!("sys/bus/mdev/devices/{u1}")));
}

#[test]
fn a40_24q_is_capped_at_two_per_gpu() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:68:00.0"]);
    let mk = |vf: &str| {
        h.write_attr(
            &format!("sys/class/mdev_bus/{vf}/mdev_supported_types/nvidia-565/create"),
            &uuid::Uuid::new_v4().to_string(),
        )
    };
    mk("0000:67:00.4").unwrap();
    mk("0000:67:00.5").unwrap();
    assert_eq!(
        h.read_trim(
            "sys/class/mdev_bus/0000:67:00.6/mdev_supported_types/nvidia-565/available_instances"
        )
        .as_deref(),
        Some("0")
    );
    assert_eq!(
        mk("0000:67:00.6").unwrap_err().raw_os_error(),
        Some(nix::libc::EDQUOT)
    );
    // Another GPU is independent.
    mk("0000:68:00.4").unwrap();
}

#[test]
fn t4_pf_holds_many_vgpus() {
    let d = tmp();
    let h = sim(&d, "t4x2-ready", &[]);
    // A phantom SR-IOV capability (§2): VFs advertised, none ever made.
    let pf = "sys/bus/pci/devices/0000:3b:00.0";
    assert_eq!(
        h.read_trim(&format!("{pf}/sriov_totalvfs")).as_deref(),
        Some("16")
    );
    let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "ALL"]);
    assert!(out.success(), "exit 0 like 17.x");
    assert_eq!(
        h.read_trim(&format!("{pf}/sriov_numvfs")).as_deref(),
        Some("0")
    );
    assert!(!h.exists(&format!("{pf}/virtfn0")));
    let smi = run(&h, "nvidia-smi", &["-q"]);
    assert!(
        smi.stdout
            .contains("Host VGPU Mode                    : Non SR-IOV"),
        "{smi:?}"
    );
    let t = "sys/class/mdev_bus/0000:3b:00.0/mdev_supported_types/nvidia-231";
    assert_eq!(
        h.read_trim(&format!("{t}/name")).as_deref(),
        Some("GRID T4-2Q")
    );
    assert_eq!(
        h.read_trim(&format!("{t}/available_instances")).as_deref(),
        Some("8")
    );
    h.write_attr(&format!("{t}/create"), &uuid::Uuid::new_v4().to_string())
        .unwrap();
    h.write_attr(&format!("{t}/create"), &uuid::Uuid::new_v4().to_string())
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{t}/available_instances")).as_deref(),
        Some("6")
    );
    assert_eq!(
        h.read_trim(
            "sys/class/mdev_bus/0000:3b:00.0/mdev_supported_types/nvidia-222/available_instances"
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn vendor_vfio_on_l40s() {
    let d = tmp();
    let h = sim(&d, "l40s-vfio-ready", &[]);
    assert!(!h.exists("sys/class/mdev_bus"));
    assert!(h.exists("sys/firmware/acpi/tables/IVRS"));
    assert!(h.exists("sys/class/iommu/ivhd0"));
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:01:00.0"]);
    let vf = "sys/bus/pci/devices/0000:01:00.4";
    assert_eq!(
        h.link_name(&format!("{vf}/driver")).as_deref(),
        Some("nvidia")
    );
    let list = h
        .read(&format!("{vf}/nvidia/creatable_vgpu_types"))
        .unwrap();
    assert!(
        list.starts_with("ID    : vGPU Name\n1145  : NVIDIA L40S-1B\n"),
        "{list}"
    );
    assert!(list.contains("1147  : NVIDIA L40S-1Q\n"));
    assert_eq!(
        h.read_trim(&format!("{vf}/nvidia/current_vgpu_type"))
            .as_deref(),
        Some("0")
    );
    h.write_attr(&format!("{vf}/nvidia/current_vgpu_type"), "1147")
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{vf}/nvidia/current_vgpu_type"))
            .as_deref(),
        Some("1147")
    );
    assert_eq!(
        h.read(&format!("{vf}/nvidia/creatable_vgpu_types"))
            .unwrap(),
        "ID    : vGPU Name\n"
    );
    let next = h
        .read("sys/bus/pci/devices/0000:01:00.5/nvidia/creatable_vgpu_types")
        .unwrap();
    assert_eq!(next, "ID    : vGPU Name\n1147  : NVIDIA L40S-1Q\n");
    assert_eq!(
        h.write_attr(&format!("{vf}/nvidia/current_vgpu_type"), "1147")
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::EPERM)
    );
    h.write_attr(&format!("{vf}/nvidia/current_vgpu_type"), "0")
        .unwrap();
    assert!(h
        .read(&format!("{vf}/nvidia/creatable_vgpu_types"))
        .unwrap()
        .contains("1145"));
}

#[test]
fn vf_delay_materializes_on_tick_and_vfs_never_never() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["vf_delay_ms=300", "vf_group_ms=50"]);
    // sriov-manage returns once its sriov_numvfs write did: the VFs exist when it returns
    // (recorded-behaviour §2), their vGPU groups come in afterwards, per VF.
    let out = h
        .run(&Cmd::new("/usr/lib/nvidia/sriov-manage").args(["-e", "0000:67:00.0"]))
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, "Enabling VFs on 0000:67:00.0\n");
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:67:00.0/sriov_numvfs")
            .as_deref(),
        Some("32")
    );
    assert!(h.exists("sys/bus/pci/devices/0000:67:04.3"));
    let st = state_of(&h).unwrap();
    assert!(!st
        .pending
        .iter()
        .any(|p| matches!(p.event, state::Event::EnableVfs { .. })));
    let groups = |h: &SimHost| {
        h.list("sys/bus/pci/devices/0000:67:00.0")
            .iter()
            .filter(|f| f.starts_with("virtfn"))
            .filter(|f| {
                h.exists(&format!(
                    "sys/bus/pci/devices/0000:67:00.0/{f}/mdev_supported_types"
                ))
            })
            .count()
    };
    assert!(
        groups(&h) < 32,
        "the groups appear after sriov-manage returns: {:?} {:?}",
        state_of(&h).unwrap().pending,
        state_of(&h).unwrap().vf_groups.len()
    );
    wait_groups(&h);
    assert_eq!(groups(&h), 32);
    assert_eq!(h.list("sys/class/mdev_bus").len(), 32);
    // A second run finds them there and says so.
    let again = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
    assert_eq!(
        again.stdout,
        "GPU at 0000:67:00.0 already has VFs enabled.\n"
    );
    // -d disables.
    let off = run(&h, "/usr/lib/nvidia/sriov-manage", &["-d", "0000:67:00.0"]);
    assert_eq!(off.stdout, "Disabling VFs on 0000:67:00.0\n");
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:67:00.0/sriov_numvfs")
            .as_deref(),
        Some("0")
    );
    assert!(h.list("sys/class/mdev_bus").is_empty());

    let d2 = tmp();
    let h2 = sim(&d2, "a40x8-ready", &["vfs_never=1"]);
    assert!(run(&h2, "/usr/lib/nvidia/sriov-manage", &["-e", "ALL"]).success());
    assert_eq!(
        h2.read_trim("sys/bus/pci/devices/0000:67:00.0/sriov_numvfs")
            .as_deref(),
        Some("0")
    );
    // Options are persisted and can be cleared by a later open.
    let h2 = open(h2.root(), "a40x8-ready", &["vfs_never=".to_string()]).unwrap();
    run(&h2, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
    assert_eq!(
        h2.read_trim("sys/bus/pci/devices/0000:67:00.0/sriov_numvfs")
            .as_deref(),
        Some("32")
    );
}

#[test]
fn create_fail_gives_ebusy_on_that_gpu_only() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["create_fail=0000:e8:00.0"]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
    let e = h
        .write_attr(
            &format!("{E8}/nvidia-555/create"),
            &uuid::Uuid::new_v4().to_string(),
        )
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EBUSY));
    h.write_attr(
        "sys/class/mdev_bus/0000:67:00.4/mdev_supported_types/nvidia-555/create",
        &uuid::Uuid::new_v4().to_string(),
    )
    .unwrap();
}

#[test]
fn opts_are_validated() {
    let d = tmp();
    let e = open(&d.path().join("r"), "a40x8", &["bogus=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("vf_delay_ms") && e.contains("bogus"), "{e}");
    let e = open(&d.path().join("r"), "nope", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("a40x8"), "{e}");
    sim(&d, "t4x2", &[]);
    let e = open(&d.path().join("root"), "a40x8", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("t4x2") && e.contains("a40x8"), "{e}");
    std::fs::create_dir_all(d.path().join("other/x")).unwrap();
    assert!(open(&d.path().join("other"), "a40x8", &[]).is_err());
}

#[test]
fn reboot_clears_vgpus_and_takes_cmdline_from_grub_cfg() {
    let d = tmp();
    let h = sim(&d, "a40x8", &[]);
    let id0 = h.read_trim("proc/sys/kernel/random/boot_id").unwrap();
    // Edit the defaults without update-grub: no effect at the next boot.
    let g = h
        .read("etc/default/grub")
        .unwrap()
        .replace("quiet splash", "quiet splash intel_iommu=on iommu=pt");
    std::fs::write(h.path("etc/default/grub"), g).unwrap();
    let r = reboot(&h, &[]).unwrap();
    assert!(!r.cmdline.contains("intel_iommu=on"));
    assert_ne!(h.read_trim("proc/sys/kernel/random/boot_id").unwrap(), id0);
    // vfio-pci binding was run-time only; nouveau owns the GPU after a boot.
    assert_eq!(
        h.link_name("sys/bus/pci/devices/0000:e8:00.0/driver")
            .as_deref(),
        Some("nouveau")
    );
    assert!(run(&h, "update-grub", &[]).success());
    let r = reboot(&h, &[]).unwrap();
    assert!(
        r.cmdline.contains("quiet splash intel_iommu=on iommu=pt"),
        "{}",
        r.cmdline
    );
    assert_eq!(h.read_trim("proc/cmdline").unwrap(), r.cmdline);
    assert!(h.exists("sys/bus/pci/devices/0000:e8:00.0/iommu_group"));
    assert!(h.exists("sys/class/iommu/dmar0"));

    // A drop-in overrides the defaults, as a shell sourcing them would.
    std::fs::create_dir_all(h.path("etc/default/grub.d")).unwrap();
    std::fs::write(
        h.path("etc/default/grub.d/50-cloudimg-settings.cfg"),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"console=ttyS0\"\n",
    )
    .unwrap();
    run(&h, "grub-mkconfig", &["-o", "/boot/grub/grub.cfg"]);
    let r = reboot(&h, &[]).unwrap();
    assert!(
        r.cmdline.contains("console=ttyS0") && !r.cmdline.contains("intel_iommu"),
        "{}",
        r.cmdline
    );
}

#[test]
fn reboot_of_a_ready_host_drops_vfs_and_vgpus() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    h.write_attr(
        &format!("{E8}/nvidia-555/create"),
        "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
    )
    .unwrap();
    reboot(&h, &[]).unwrap();
    assert!(h.list("sys/class/mdev_bus").is_empty());
    assert!(h.list("sys/bus/mdev/devices").is_empty());
    assert!(!h.exists("sys/bus/pci/devices/0000:e8:00.4"));
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        h.link_name("sys/bus/pci/devices/0000:e8:00.0/driver")
            .as_deref(),
        Some("nvidia")
    );
}

#[test]
fn nouveau_needs_blacklist_and_initramfs_rebuild() {
    let d = tmp();
    let h = sim(&d, "geforce", &[]);
    std::fs::write(
        h.path("etc/modprobe.d/blacklist-nouveau.conf"),
        "blacklist nouveau\noptions nouveau modeset=0\n",
    )
    .unwrap();
    reboot(&h, &[]).unwrap();
    assert!(
        h.read_trim("proc/modules").unwrap().contains("nouveau"),
        "initramfs not rebuilt"
    );
    assert!(run(&h, "update-initramfs", &["-u"]).success());
    reboot(&h, &[]).unwrap();
    assert!(!h.read_trim("proc/modules").unwrap().contains("nouveau"));
    assert!(!h.exists("sys/bus/pci/devices/0000:01:00.0/driver"));
}

/// recorded-behaviour.md §7: nvidia-installer refuses while nouveau drives a GPU, with its own
/// words, and stops (exit 1); the blacklist, the initramfs and a reboot get past it.
#[test]
fn driver_installer_refuses_while_nouveau_drives_a_gpu() {
    let d = tmp();
    let h = sim(&d, "l40s-vfio", &[]);
    let run_file = "root/d.run";
    driver_pkg::build_run(&h.path(run_file), DRIVER_VERSION).unwrap();
    let out = run(&h, "/root/d.run", &["--dkms", "-s"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out
        .stderr
        .contains("ERROR: The Nouveau kernel driver is currently in use by your system."));
    assert!(!h.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
    // The console is on nouveau's framebuffer: it cannot be unloaded.
    assert!(h.read("proc/fb").unwrap().contains("nouveaudrmfb"));
    let line = h.read("proc/modules").unwrap();
    let nv = line.lines().find(|l| l.starts_with("nouveau ")).unwrap();
    assert_eq!(nv.split_whitespace().nth(2), Some("1"), "{nv}");
    let rm = run(&h, "modprobe", &["-r", "nouveau"]);
    assert!(!rm.success() && rm.stderr.contains("in use"), "{rm:?}");
    std::fs::write(
        h.path("etc/modprobe.d/blacklist-nouveau.conf"),
        "blacklist nouveau\noptions nouveau modeset=0\n",
    )
    .unwrap();
    assert!(run(&h, "update-initramfs", &["-u"]).success());
    reboot(&h, &[]).unwrap();
    let out = run(&h, "/root/d.run", &["--dkms", "-s"]);
    assert!(out.success(), "{out:?}");
}

/// Without the console on it (`nouveau_fbcon=0`), nouveau's use count is 0 and `modprobe -r`
/// unbinds its GPUs and unloads it: the installer then runs without a reboot.
#[test]
fn unused_nouveau_unloads_and_the_installer_then_runs() {
    let d = tmp();
    let h = sim(&d, "rhel-a10", &["nouveau_fbcon=0"]);
    let mods = h.read("proc/modules").unwrap();
    let nv = mods.lines().find(|l| l.starts_with("nouveau ")).unwrap();
    assert_eq!(nv.split_whitespace().nth(2), Some("0"), "{nv}");
    assert_eq!(h.read("proc/fb").unwrap(), "");
    assert!(run(&h, "modprobe", &["-r", "nouveau"]).success());
    assert!(!h.read("proc/modules").unwrap().contains("nouveau"));
    driver_pkg::build_run(&h.path("root/d.run"), DRIVER_VERSION).unwrap();
    assert!(run(&h, "/root/d.run", &["--dkms", "-s"]).success());
}

#[test]
fn grubby_and_proxmox_boot_tool() {
    let d = tmp();
    let h = sim(&d, "rhel-a10", &[]);
    assert_eq!(
        run(&h, "update-grub", &[]).status,
        127,
        "no update-grub on RHEL"
    );
    assert!(run(
        &h,
        "grubby",
        &["--update-kernel=ALL", "--args=intel_iommu=on iommu=pt"]
    )
    .success());
    assert!(h
        .read("etc/default/grub")
        .unwrap()
        .contains("rhgb quiet intel_iommu=on iommu=pt\""));
    let info = run(&h, "grubby", &["--info=ALL"]).stdout;
    assert!(info.contains("intel_iommu=on iommu=pt"), "{info}");
    let r = reboot(&h, &[]).unwrap();
    assert!(
        r.cmdline
            .starts_with("BOOT_IMAGE=(hd0,gpt2)/vmlinuz-5.14.0"),
        "{}",
        r.cmdline
    );
    assert!(
        r.cmdline.ends_with("rhgb quiet intel_iommu=on iommu=pt"),
        "{}",
        r.cmdline
    );

    let d = tmp();
    let h = sim(&d, "proxmox-l4", &[]);
    assert!(h.exists("usr/bin/pveversion") && h.exists("etc/pve"));
    std::fs::write(
        h.path("etc/kernel/cmdline"),
        "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on\n",
    )
    .unwrap();
    // update-grub does not change what systemd-boot boots.
    run(&h, "update-grub", &[]);
    assert!(!reboot(&h, &[]).unwrap().cmdline.contains("intel_iommu"));
    assert!(run(&h, "proxmox-boot-tool", &["refresh"]).success());
    let r = reboot(&h, &[]).unwrap();
    assert!(
        r.cmdline
            .ends_with("root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on"),
        "{}",
        r.cmdline
    );
}

#[test]
fn driver_install_takes_effect_after_reboot_and_checks_the_archive() {
    let d = tmp();
    // A headless host (console not on nouveau): nouveau can be unloaded before the install.
    let h = sim(&d, "l40s-vfio", &["nouveau_fbcon=0"]);
    assert!(run(&h, "modprobe", &["-r", "nouveau"]).success());
    let zip = format!("root/{}", driver_pkg::zip_name(DRIVER_VERSION));
    assert!(h.exists(&zip));
    let run_file = format!("root/{}", driver_pkg::run_name(DRIVER_VERSION));
    driver_pkg::build_run(&h.path(&run_file), DRIVER_VERSION).unwrap();
    let chk = run(&h, &format!("/{run_file}"), &["--check"]);
    assert!(chk.success() && chk.stdout.contains("OK"));
    let mut bytes = std::fs::read(h.path(&run_file)).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(h.path("root/bad.run"), &bytes).unwrap();
    assert!(!run(&h, "/root/bad.run", &["--check"]).success());
    assert!(!run(&h, "/root/bad.run", &["--dkms", "-s"]).success());
    // (Writing the install log is the product's part: tests/driver_sim.rs checks it.)
    let inst = h
        .run(&Cmd::new(format!("/{run_file}")).args(["--dkms", "-s"]))
        .unwrap();
    assert!(inst.success(), "{}", inst.tail(5));
    assert!(inst.stdout.contains("is now complete"), "{}", inst.stdout);
    assert!(h.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
    assert!(
        !h.exists("proc/driver/nvidia/version"),
        "loaded only after a reboot"
    );
    assert_eq!(
        run(&h, "sriov-manage", &["-e", "ALL"]).status,
        127,
        "not on PATH"
    );
    reboot(&h, &[]).unwrap();
    assert!(h
        .read_trim("proc/driver/nvidia/version")
        .unwrap()
        .contains(DRIVER_VERSION));
    assert_eq!(
        run(&h, "systemctl", &["is-active", "nvidia-vgpu-mgr.service"]).stdout,
        "active\n"
    );
    assert!(run(&h, "nvidia-smi", &["-q"]).stdout.contains("Host VGPU"));
}

/// `.run --uninstall` (a guess, see the README) takes away what the install wrote: the tree
/// is the one before the install, apart from the installer's logs; the module stays loaded until
/// the next boot, which then comes up without a driver.
#[test]
fn driver_uninstall_removes_what_the_install_wrote() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let listing = |h: &SimHost| {
        let mut out = Vec::new();
        let root = h.path("");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(&root).unwrap().display().to_string();
                if ["sys", "proc", ".vgpuctl-sim", "var/log"]
                    .iter()
                    .any(|x| rel == *x || rel.starts_with(&format!("{x}/")))
                {
                    continue;
                }
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    };
    // The ready host came with its driver; take it away first, then install and uninstall.
    let run_file = "root/d.run";
    driver_pkg::build_run(&h.path(run_file), DRIVER_VERSION).unwrap();
    let un = run(&h, "/root/d.run", &["--uninstall", "--silent"]);
    assert!(un.success(), "{}", un.tail(5));
    let bare = listing(&h);
    assert!(!bare.iter().any(|p| p.contains("nvidia.ko")), "{bare:?}");
    let again = run(&h, "/root/d.run", &["--uninstall", "--silent"]);
    assert!(!again.success(), "nothing left to uninstall");
    assert!(run(&h, "/root/d.run", &["--dkms", "-s"]).success());
    assert_ne!(listing(&h), bare);
    assert!(run(&h, "/root/d.run", &["--uninstall", "--silent"]).success());
    assert_eq!(listing(&h), bare);
    reboot(&h, &[]).unwrap();
    assert!(
        !h.exists("proc/driver/nvidia/version"),
        "no driver after the boot"
    );
}

/// A driver installed from a package (`apt-get install -y FILE.deb`, `dnf install -y FILE.rpm`)
/// is removed by its package name (`apt-get remove -y NAME`, `dnf remove -y NAME`), which takes
/// away what the install wrote; other names fail in the package manager's words.
#[test]
fn a_package_install_is_removed_by_its_package_name() {
    for (model, pm, file, name) in [
        (
            "a40x8-ready",
            "apt-get",
            "nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
            "nvidia-vgpu-ubuntu-550",
        ),
        (
            "rhel-a10-ready",
            "dnf",
            "NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm",
            "NVIDIA-vGPU-rhel",
        ),
    ] {
        let d = tmp();
        let h = sim(&d, model, &[]);
        let listing = |h: &SimHost| {
            let mut out = Vec::new();
            let mut stack = vec![h.path("")];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap().flatten() {
                    let p = e.path();
                    let rel = p.strip_prefix(h.path("")).unwrap().display().to_string();
                    if ["sys", "proc", ".vgpuctl-sim", "var/log"]
                        .iter()
                        .any(|x| rel == *x || rel.starts_with(&format!("{x}/")))
                    {
                        continue;
                    }
                    if p.is_dir() && !p.is_symlink() {
                        stack.push(p);
                    }
                    out.push(rel);
                }
            }
            out.sort();
            out
        };
        assert!(run(&h, "/usr/bin/nvidia-uninstall", &["--silent"]).success());
        std::fs::write(h.path(&format!("root/{file}")), b"package").unwrap();
        let bare = listing(&h);
        let out = run(&h, pm, &["install", "-y", &format!("/root/{file}")]);
        assert!(out.success(), "{model}: {}", out.tail(5));
        assert!(h.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
        assert!(
            !h.exists("usr/bin/nvidia-uninstall"),
            "{model}: a package leaves no nvidia-uninstall"
        );
        let wrong = run(&h, pm, &["remove", "-y", "nvidia-vgpu"]);
        assert!(!wrong.success(), "{model}");
        let words = if pm == "dnf" {
            "No match for argument: nvidia-vgpu\nError: No packages marked for removal."
        } else {
            "E: Unable to locate package nvidia-vgpu"
        };
        assert!(wrong.stderr.contains(words), "{model}: {wrong:?}");
        let out = run(&h, pm, &["remove", "-y", name]);
        assert!(out.success(), "{model}: {}", out.tail(5));
        assert_eq!(listing(&h), bare, "{model}");
        let again = run(&h, pm, &["remove", "-y", name]);
        if pm == "dnf" {
            assert!(!again.success(), "{model}: {again:?}");
        } else {
            assert!(again.success(), "{again:?}");
            assert!(again.stdout.contains(&format!(
                "Package '{name}' is not installed, so not removed"
            )));
        }
        // `apt-get purge` / `dnf erase` remove it the same way.
        let install = run(&h, pm, &["install", "-y", &format!("/root/{file}")]);
        assert!(install.success(), "{model}");
        let verb = if pm == "dnf" { "erase" } else { "purge" };
        assert!(run(&h, pm, &[verb, "-y", name]).success(), "{model}");
        assert_eq!(listing(&h), bare, "{model}: {verb}");
    }
}

/// A driver of another branch installs as that version (issue 17 item 5): the files change at
/// once, the loaded module (version files, `nvidia-smi`, the type ids) at the next boot, and its
/// type ids are that branch's (the catalog's rule, a guess: 550 + 30 on 580, no `-1A` type).
#[test]
fn a_driver_of_another_branch_runs_as_that_version_after_the_boot() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let type_names = |h: &SimHost| -> Vec<(String, String)> {
        let dir = "sys/class/mdev_bus/0000:e8:00.5/mdev_supported_types";
        let mut v: Vec<(String, String)> = h
            .list(dir)
            .into_iter()
            .map(|t| {
                let name = h.read(&format!("{dir}/{t}/name")).unwrap();
                (t, name.trim().to_string())
            })
            .collect();
        v.sort();
        v
    };
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    let before = type_names(&h);
    assert!(
        before.contains(&("nvidia-555".into(), "NVIDIA A40-1B".into())),
        "{before:?}"
    );
    assert!(before.iter().any(|(_, n)| n == "NVIDIA A40-1A"));

    let old = "root/old.run";
    driver_pkg::build_run(&h.path(old), DRIVER_VERSION).unwrap();
    assert!(run(&h, "/usr/bin/nvidia-uninstall", &["--silent"]).success());
    assert!(
        !h.exists("usr/bin/nvidia-uninstall"),
        "the uninstaller goes with the driver"
    );
    let new = "root/new.run";
    driver_pkg::build_run(&h.path(new), "580.105.06").unwrap();
    let out = run(&h, "/root/new.run", &["--dkms", "-s"]);
    assert!(out.success(), "{}", out.tail(5));
    assert!(h.exists("usr/src/nvidia-580.105.06/dkms.conf"));
    assert!(
        !h.exists("usr/src/nvidia-550.163.02"),
        "the old DKMS sources are gone"
    );
    // Until the boot the old module runs.
    assert_eq!(
        h.read("sys/module/nvidia/version").unwrap().trim(),
        DRIVER_VERSION
    );
    assert_eq!(type_names(&h), before);

    reboot(&h, &[]).unwrap();
    assert_eq!(
        h.read("sys/module/nvidia/version").unwrap().trim(),
        "580.105.06"
    );
    assert!(run(&h, "nvidia-smi", &["-q"])
        .stdout
        .contains("Driver Version                            : 580.105.06"));
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    let after = type_names(&h);
    assert!(
        after.contains(&("nvidia-585".into(), "NVIDIA A40-1B".into())),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|(_, n)| n == "NVIDIA A40-1A"),
        "{after:?}"
    );
    assert_eq!(after.len(), before.len() - 1);
}

/// The same on vendor-specific VFIO: `creatable_vgpu_types` lists the new branch's ids, and a
/// stale id from the old branch names another type (or none) there.
#[test]
fn vendor_vfio_lists_the_new_branchs_ids() {
    let d = tmp();
    let h = sim(&d, "l40s-vfio-ready", &[]);
    driver_pkg::build_run(&h.path("root/new.run"), "580.105.06").unwrap();
    assert!(run(&h, "/usr/bin/nvidia-uninstall", &["--silent"]).success());
    assert!(run(&h, "/root/new.run", &["--dkms", "-s"]).success());
    reboot(&h, &[]).unwrap();
    let pf = models::find("l40s-vfio").unwrap().pfs[0];
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", pf]);
    let vf = h
        .list(&format!("sys/bus/pci/devices/{pf}"))
        .into_iter()
        .find(|n| n == "virtfn0");
    assert!(vf.is_some());
    let vf_addr = std::fs::read_link(h.path(&format!("sys/bus/pci/devices/{pf}/virtfn0")))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let list = h
        .read(&format!(
            "sys/bus/pci/devices/{vf_addr}/nvidia/creatable_vgpu_types"
        ))
        .unwrap();
    assert!(list.contains("1175  : NVIDIA L40S-1B"), "{list}");
    assert!(!list.contains("L40S-1A"), "{list}");
}

#[test]
fn secure_boot_refuses_unsigned_install() {
    let d = tmp();
    let h = sim(&d, "a40x8", &["secure_boot=1"]);
    assert_eq!(h.read_bytes(layout::SECURE_BOOT_VAR).unwrap()[4], 1);
    let run_file = "root/d.run";
    driver_pkg::build_run(&h.path(run_file), DRIVER_VERSION).unwrap();
    let out = run(&h, "/root/d.run", &["--dkms", "-s"]);
    assert!(!out.success() && out.stderr.contains("Secure boot"));
    let out = run(
        &h,
        "/root/d.run",
        &[
            "--dkms",
            "-s",
            "--module-signing-secret-key=/root/k.key",
            "--module-signing-public-key=/root/k.der",
        ],
    );
    assert!(out.success());
}

/// systemd.unit(5): plain conditions all hold; of the triggering (`|`) ones, at least one.
#[test]
fn triggering_path_conditions_need_one_of_them() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let unit = "[Unit]\nConditionPathExists=|/etc/a\nConditionPathExists=|/etc/b\n\
                ConditionPathExists=!/etc/off\n[Service]\nExecStart=/usr/local/sbin/vgpuctl restore\n\
                [Install]\nWantedBy=multi-user.target\n";
    std::fs::create_dir_all(h.path("etc/systemd/system")).unwrap();
    std::fs::write(h.path("etc/systemd/system/vgpuctl-restore.service"), unit).unwrap();
    assert!(run(&h, "systemctl", &["enable", "vgpuctl-restore.service"]).success());
    let root = h.root().to_path_buf();
    let ok = |root: &std::path::Path| crate::programs::enabled_vgpuctl_units(root)[0].2;
    assert!(!ok(&root), "neither triggering path exists");
    std::fs::write(h.path("etc/b"), "").unwrap();
    assert!(ok(&root), "one triggering path is enough");
    std::fs::write(h.path("etc/off"), "").unwrap();
    assert!(!ok(&root), "a plain condition still has to hold");
}

#[test]
fn reboot_runs_enabled_vgpuctl_units_via_relaunch() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let unit = "[Unit]\nDescription=restore\nConditionPathExists=/etc/vgpuctl/profile.toml\n[Service]\nType=oneshot\n\
                ExecStart=/usr/local/sbin/vgpuctl restore\n[Install]\nWantedBy=multi-user.target\n";
    std::fs::create_dir_all(h.path("etc/systemd/system")).unwrap();
    std::fs::write(h.path("etc/systemd/system/vgpuctl-restore.service"), unit).unwrap();
    // Not enabled: nothing runs.
    assert!(reboot(&h, &["/bin/echo".into()]).unwrap().units.is_empty());
    assert!(run(&h, "systemctl", &["enable", "vgpuctl-restore.service"]).success());
    assert_eq!(
        run(&h, "systemctl", &["is-enabled", "vgpuctl-restore"]).stdout,
        "enabled\n"
    );
    let wants = "etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service";
    assert!(
        h.read(wants).unwrap().contains("vgpuctl restore"),
        "link resolves in the root"
    );
    let r = reboot(&h, &["/bin/echo".into(), "relaunched".into()]).unwrap();
    assert_eq!(r.units.len(), 1);
    assert_eq!(r.units[0].status, None, "condition not met");
    std::fs::create_dir_all(h.path("etc/vgpuctl")).unwrap();
    std::fs::write(h.path("etc/vgpuctl/profile.toml"), "").unwrap();
    let r = reboot(&h, &["/bin/echo".into(), "relaunched".into()]).unwrap();
    assert_eq!(
        r.units[0].status,
        Some(203),
        "the binary is not in the root yet"
    );
    std::fs::create_dir_all(h.path("usr/local/sbin")).unwrap();
    std::fs::write(h.path("usr/local/sbin/vgpuctl"), "binary").unwrap();
    let r = reboot(&h, &["/bin/echo".into(), "relaunched".into()]).unwrap();
    assert_eq!(r.units[0].status, Some(0));
    assert_eq!(r.units[0].output, "relaunched restore\n");
    assert_eq!(
        run(&h, "systemctl", &["is-active", "vgpuctl-restore"]).stdout,
        "active\n"
    );
    assert!(run(&h, "systemctl", &["disable", "vgpuctl-restore"]).success());
    assert!(reboot(&h, &["/bin/echo".into()]).unwrap().units.is_empty());
    // systemctl reboot only records the request.
    assert!(run(&h, "systemctl", &["reboot"]).success());
    assert!(state_of(&h).unwrap().reboot_requested);
}

#[test]
fn state_is_shared_between_host_handles() {
    let d = tmp();
    let h1 = sim(&d, "a40x8-ready", &[]);
    let h2 = open(h1.root(), "a40x8-ready", &[]).unwrap();
    run(&h1, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    h2.write_attr(
        &format!("{E8}/nvidia-555/create"),
        "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
    )
    .unwrap();
    assert_eq!(state_of(&h1).unwrap().vgpus.len(), 1);
    let e = h1
        .write_attr(
            &format!("{E8}/nvidia-555/create"),
            "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
        )
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL));
}

#[test]
fn cloud_h100_is_a_guest_with_a_passthrough_gpu() {
    let d = tmp();
    let h = sim(&d, "cloud-h100", &[]);
    assert!(h.read("proc/cpuinfo").unwrap().contains(" hypervisor"));
    assert_eq!(
        h.read_trim("sys/class/dmi/id/sys_vendor").as_deref(),
        Some("Amazon EC2")
    );
    assert!(
        !h.exists("sys/firmware/acpi/tables/DMAR") && !h.exists("sys/firmware/acpi/tables/IVRS")
    );
    let pf = "sys/bus/pci/devices/0000:00:1e.0";
    assert_eq!(
        h.read_trim(&format!("{pf}/device")).as_deref(),
        Some("0x2330")
    );
    assert_eq!(
        h.link_name(&format!("{pf}/driver")).as_deref(),
        Some("nvidia")
    );
    assert!(h
        .read_trim("proc/driver/nvidia/version")
        .unwrap()
        .contains("550.127.08"));
    assert!(run(&h, "nvidia-smi", &["-q"])
        .stdout
        .contains("Pass-Through"));
    assert!(!h.exists("usr/lib/nvidia/sriov-manage"));
}

#[test]
#[ignore]
fn timing_probe() {
    let d = tmp();
    let t = std::time::Instant::now();
    let h = sim(&d, "a40x8-ready", &[]);
    eprintln!("build ready {:?}", t.elapsed());
    let t = std::time::Instant::now();
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    eprintln!("enable 1 gpu {:?}", t.elapsed());
    let t = std::time::Instant::now();
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "ALL"]);
    eprintln!("enable 7 gpus {:?}", t.elapsed());
    let t = std::time::Instant::now();
    for _ in 0..32 {
        let _ = h.read("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs");
    }
    eprintln!("32 reads {:?}", t.elapsed());
    let t = std::time::Instant::now();
    h.write_attr(
        &format!("{E8}/nvidia-555/create"),
        "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
    )
    .unwrap();
    eprintln!("create {:?}", t.elapsed());
    let t = std::time::Instant::now();
    h.write_attr(
        "sys/class/mdev_bus/0000:e8:00.5/mdev_supported_types/nvidia-555/create",
        "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
    )
    .unwrap();
    eprintln!("create 2 {:?}", t.elapsed());
    let t = std::time::Instant::now();
    reboot(&h, &[]).unwrap();
    eprintln!("reboot {:?}", t.elapsed());
}

/// What the simulator costs in issue 3's benchmark shape (8 GPUs x 32 A40-1B, sriov-manage
/// 250 ms each and serialized, groups 2 ms apart, creations 20 ms): run with
/// `--ignored --nocapture`. The floor is 8 x 250 + 2 + 32 x 20 = 2642 ms.
#[test]
#[ignore]
fn restore_shape_probe() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["vf_delay_ms=250", "create_ms=20"]);
    let t0 = std::time::Instant::now();
    let lock = std::sync::Mutex::new(());
    std::thread::scope(|s| {
        for pf in models::find("a40x8").unwrap().pfs {
            let h = h.clone();
            let lock = &lock;
            s.spawn(move || {
                {
                    let _g = lock.lock().unwrap();
                    h.run(&Cmd::new("/usr/lib/nvidia/sriov-manage").args(["-e", pf]))
                        .unwrap();
                }
                eprintln!("{pf}: VFs at {:?}", t0.elapsed());
                let m = models::find("a40x8").unwrap();
                for vf in m.vfs_of(pf) {
                    let dir = m.type_dir(&vf, 555);
                    let create =
                        format!("sys/class/mdev_bus/{vf}/mdev_supported_types/{dir}/create");
                    while !h.exists(&create) {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    h.write_attr(&create, &uuid::Uuid::new_v4().to_string())
                        .unwrap();
                }
                eprintln!("{pf}: done at {:?}", t0.elapsed());
            });
        }
    });
    eprintln!("restore shape: {:?} (floor 2.642 s)", t0.elapsed());
    assert_eq!(h.list("sys/bus/mdev/devices").len(), 256);
}

#[test]
fn pf_driver_binding_drives_sriov_files() {
    let d = tmp();
    let h = sim(&d, "rhel-a10-ready", &["driver_delay_ms=200"]);
    // Right after boot udev has not bound the PF yet: no SR-IOV attributes, sriov-manage fails
    // quietly (exit 0).
    let pf = "sys/bus/pci/devices/0000:17:00.0";
    if !h.exists(&format!("{pf}/driver")) {
        assert!(!h.exists(&format!("{pf}/sriov_totalvfs")));
        assert!(run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "ALL"]).success());
        assert_eq!(h.read_trim(&format!("{pf}/sriov_numvfs")), None);
    }
    let mut n = 0;
    while !h.exists(&format!("{pf}/sriov_totalvfs")) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        n += 1;
        assert!(n < 500, "driver never bound");
    }
    assert_eq!(
        h.link_name(&format!("{pf}/driver")).as_deref(),
        Some("nvidia")
    );
    // Direct sriov_numvfs writes act as the kernel's.
    assert_eq!(
        h.write_attr(&format!("{pf}/sriov_numvfs"), "33")
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::ERANGE)
    );
    // NVIDIA's driver rejects a raw write (recorded-behaviour §2): no sriov_configure, so the
    // kernel answers ENOENT; sriov-manage is the way.
    assert_eq!(
        h.write_attr(&format!("{pf}/sriov_numvfs"), "4")
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::ENOENT)
    );
    assert!(h.list("sys/class/mdev_bus").is_empty());
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:17:00.0"]);
    assert_eq!(h.list("sys/class/mdev_bus").len(), 32);
    let t = "sys/class/mdev_bus/0000:17:00.4/mdev_supported_types/nvidia-597";
    assert_eq!(
        h.read_trim(&format!("{t}/name")).as_deref(),
        Some("NVIDIA A10-24Q")
    );
    h.write_attr(&format!("{t}/create"), &uuid::Uuid::new_v4().to_string())
        .unwrap();
    // Losing the PF driver takes the VFs and vGPUs with it; rebinding brings SR-IOV back.
    h.write_attr(&format!("{pf}/driver/unbind"), "0000:17:00.0")
        .unwrap();
    assert!(!h.exists(&format!("{pf}/sriov_totalvfs")));
    assert!(h.list("sys/bus/mdev/devices").is_empty());
    assert!(!h.exists("sys/bus/pci/devices/0000:17:00.4"));
    h.write_attr("sys/bus/pci/drivers/nvidia/bind", "0000:17:00.0")
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{pf}/sriov_numvfs")).as_deref(),
        Some("0")
    );
    // vfio-pci takes it only through driver_override, as the kernel's new_id/override rules.
    h.write_attr(&format!("{pf}/driver/unbind"), "0000:17:00.0")
        .unwrap();
    run(&h, "modprobe", &["vfio-pci"]);
    assert!(h
        .write_attr("sys/bus/pci/drivers/vfio-pci/bind", "0000:17:00.0")
        .is_err());
    h.write_attr(&format!("{pf}/driver_override"), "vfio-pci")
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{pf}/driver_override")).as_deref(),
        Some("vfio-pci")
    );
    h.write_attr("sys/bus/pci/drivers_probe", "0000:17:00.0")
        .unwrap();
    assert_eq!(
        h.link_name(&format!("{pf}/driver")).as_deref(),
        Some("vfio-pci")
    );
}

#[test]
fn reopening_repairs_files_a_crash_left_behind() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    let u = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    h.write_attr(&format!("{E8}/nvidia-555/create"), u).unwrap();
    // A process died after the kernel state changed but before the files were rendered.
    std::fs::remove_file(h.root().join(format!("sys/bus/mdev/devices/{u}"))).unwrap();
    let h = open(h.root(), "a40x8-ready", &[]).unwrap();
    assert_eq!(h.list("sys/bus/mdev/devices"), vec![u.to_string()]);
}

/// Every path under a directory with its content or link target.
fn tree(base: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                ));
            } else if ft.is_dir() {
                out.push((rel, "dir".into()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn staged_vfs_equal_vfs_built_on_the_spot() {
    let d1 = tmp();
    let direct = sim(&d1, "a40x8-ready", &[]);
    run(
        &direct,
        "/usr/lib/nvidia/sriov-manage",
        &["-e", "0000:e5:00.0"],
    );
    let d2 = tmp();
    let staged = sim(&d2, "a40x8-ready", &["vf_delay_ms=1500"]);
    run(
        &staged,
        "/usr/lib/nvidia/sriov-manage",
        &["-e", "0000:e5:00.0"],
    );
    let staging = staged.path(".vgpuctl-sim/staging");
    let mut n = 0;
    // Wait for the background build (not required for correctness: a late one is ignored).
    while !std::fs::read_dir(&staging)
        .map(|rd| rd.flatten().any(|e| e.path().join(".complete").exists()))
        .unwrap_or(false)
        && n < 400
    {
        std::thread::sleep(std::time::Duration::from_millis(25));
        n += 1;
    }
    while staged
        .read_trim("sys/bus/pci/devices/0000:e5:00.0/sriov_numvfs")
        .as_deref()
        != Some("32")
    {
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let a = tree(&direct.path("sys/devices/pci0000:e5"));
    let b = tree(&staged.path("sys/devices/pci0000:e5"));
    assert_eq!(a.len(), b.len());
    assert_eq!(a, b);
    assert_eq!(
        tree(&direct.path("sys/class/mdev_bus")),
        tree(&staged.path("sys/class/mdev_bus"))
    );
    assert_eq!(
        h_numa(&staged, "0000:e5:00.4"),
        h_numa(&staged, "0000:e5:00.0"),
        "VFs share their PF's NUMA node"
    );
}

fn h_numa(h: &SimHost, dev: &str) -> Option<String> {
    h.read_trim(&format!("sys/bus/pci/devices/{dev}/numa_node"))
}

/// The seed operator's bring-up, step by step, on the fresh a40x8.
#[test]
fn seed_bring_up_from_fresh_a40x8() {
    let d = tmp();
    let h = sim(&d, "a40x8", &[]);
    for pf in models::find("a40x8").unwrap().pfs {
        h.write_attr(&format!("sys/bus/pci/devices/{pf}/driver/unbind"), pf)
            .unwrap();
    }
    let g = h.read("etc/default/grub").unwrap();
    let g = bootcfg::edit_assignment(&g, "GRUB_CMDLINE_LINUX_DEFAULT", |o| {
        bootcfg::edit_args(o, "intel_iommu=on iommu=pt", "")
    });
    std::fs::write(h.path("etc/default/grub"), g).unwrap();
    // The seed ran `grub-mkconfig > /boot/grub/grub.cfg`: stdout is the config.
    let cfg = run(&h, "grub-mkconfig", &[]).stdout;
    assert!(cfg.contains("intel_iommu=on iommu=pt"));
    std::fs::write(h.path("boot/grub/grub.cfg"), cfg).unwrap();
    std::fs::write(
        h.path("etc/modprobe.d/blacklist-nouveau.conf"),
        "blacklist nouveau\n",
    )
    .unwrap();
    assert!(run(&h, "update-initramfs", &["-u"]).success());
    // Take the .run out of the zip, check it, install it.
    let zip = h.path(&format!("root/{}", driver_pkg::zip_name(DRIVER_VERSION)));
    let mut z = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    let mut f = z
        .by_name(&format!(
            "Host_Drivers/{}",
            driver_pkg::run_name(DRIVER_VERSION)
        ))
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes).unwrap();
    std::fs::write(h.path("root/driver.run"), bytes).unwrap();
    assert!(run(&h, "sh", &["/root/driver.run", "--check"]).success());
    assert!(run(&h, "/root/driver.run", &["--dkms", "-s"]).success());
    assert!(run(&h, "systemctl", &["reboot"]).success());
    let r = reboot(&h, &[]).unwrap();
    assert!(r.cmdline.contains("intel_iommu=on iommu=pt"));
    assert!(!h.read("proc/modules").unwrap().contains("nouveau"));
    assert!(h.read("proc/modules").unwrap().contains("nvidia_vgpu_vfio"));
    assert!(!state_of(&h).unwrap().reboot_requested);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0:e8:0.0"]);
    h.write_attr(
        "sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
        "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
    )
    .unwrap();
    assert_eq!(
        h.read_trim("sys/bus/mdev/devices/242e5ea7-90e2-4d6e-afeb-a0b9a656c108/mdev_type/name")
            .as_deref(),
        Some("NVIDIA A40-24A")
    );
}

/// recorded-behaviour §2: `Cannot obtain unbindLock` while an NVML client holds the GPU, N
/// times, then it works; a GPU it does not support exits 0.
#[test]
fn sriov_manage_unbind_lock_then_works_and_unsupported_exits_0() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["unbind_lock_busy=2"]);
    for _ in 0..2 {
        let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
        assert_eq!(out.status, 1);
        assert!(
            out.stderr
                .contains("Cannot obtain unbindLock for 0000:e8:00.0"),
            "{out:?}"
        );
        assert_eq!(
            h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs")
                .as_deref(),
            Some("0")
        );
    }
    let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:e8:00.0/sriov_numvfs")
            .as_deref(),
        Some("32")
    );
    let d2 = tmp();
    let t4 = sim(&d2, "t4x2-ready", &[]);
    let out = run(&t4, "/usr/lib/nvidia/sriov-manage", &["-e", "ALL"]);
    assert!(out.success(), "{out:?}");
    assert!(t4
        .list("sys/bus/pci/devices")
        .iter()
        .all(|d| !d.ends_with(".4")));
}

/// recorded-behaviour §2: at boot the first sriov-manage fails while the vGPU manager starts
/// (`File exists` / `No such device`, exit 1); the next works; the next boot plays it again.
#[test]
fn boot_race_fails_the_first_sriov_manage_of_each_boot() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["boot_race=1"]);
    for boot in 0..2 {
        let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
        assert_eq!(out.status, 1, "boot {boot}: {out:?}");
        assert!(out.stderr.contains("File exists") && out.stderr.contains("No such device"));
        let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:67:00.0"]);
        assert!(out.success(), "{out:?}");
        reboot(&h, &[]).unwrap();
    }
}

/// `hang=PROGRAM@ADDR`: that run never returns; it lasts its caller's bound and ends as a
/// killed run; other addresses and programs are not affected.
#[test]
fn hang_lasts_the_callers_bound_on_that_address_only() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &["hang=sriov-manage@0:67:0.0"]);
    let bound = std::time::Duration::from_millis(300);
    let e = h
        .run(
            &Cmd::new("/usr/lib/nvidia/sriov-manage")
                .args(["-e", "0000:67:00.0"])
                .timeout(bound),
        )
        .unwrap_err();
    let t = e.downcast_ref::<TimedOut>().expect("a timed-out run");
    assert_eq!(t.after, bound);
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:67:00.0/sriov_numvfs")
            .as_deref(),
        Some("0")
    );
    let out = run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:68:00.0"]);
    assert!(out.success());
    let e = open(
        h.root(),
        "a40x8-ready",
        &["hang=sriov-manage@nowhere".to_string()],
    );
    assert!(e.is_err());
}

#[test]
fn every_save_changes_the_stamp_even_at_equal_length_within_a_clock_tick() {
    // Two processes sharing a root compare stamps to know whether the other one saved. Saves
    // that follow each other within a coarse clock tick, with states of equal length (one VF's
    // name for another), would look unchanged by metadata when a new file gets a freed inode
    // number back (seen here: they alternate between two).
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let root = h.root().to_path_buf();
    let mut a = state::load(&root).unwrap();
    let mut b = a.clone();
    a.vf_groups.insert("0000:e8:00.4".into());
    b.vf_groups.insert("0000:e8:00.5".into());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..400 {
        state::save(&root, if i % 2 == 0 { &a } else { &b }).unwrap();
        let s = state::stamp(&root).unwrap();
        assert!(seen.insert(s), "save {i} left a stamp an earlier save had");
    }
}

#[test]
fn a_process_that_died_rendering_leaves_a_mark_and_the_next_open_redraws_the_files() {
    // SIGKILL can land while one thread renders files from a changed state that was not saved
    // yet: the files then say what the saved state does not (a VF listing no room for a vGPU
    // that was never made). The render mark left behind makes the next process redraw.
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    let avail = h
        .root()
        .join(format!("{E8}/nvidia-555/available_instances"));
    let good = std::fs::read_to_string(&avail).unwrap();
    assert_ne!(good.trim(), "0");
    let root = h.root().to_path_buf();
    drop(h);
    // A new file, not a write through it: it may be a hard link to a shared template.
    std::fs::remove_file(&avail).unwrap();
    std::fs::write(&avail, "0\n").unwrap();
    // Without the mark nothing says the files are stale: they are left as they are.
    let h = open(&root, "a40x8-ready", &[]).unwrap();
    assert_eq!(std::fs::read_to_string(&avail).unwrap(), "0\n");
    drop(h);
    std::fs::write(root.join(state::DIRTY_FILE), "").unwrap();
    let h = open(&root, "a40x8-ready", &[]).unwrap();
    assert_eq!(std::fs::read_to_string(&avail).unwrap(), good);
    assert!(!root.join(state::DIRTY_FILE).exists());
    // A process that stays open and finds the mark (its clock applying an event, a program
    // run) redraws then: it takes the mark away, so no later open would.
    std::fs::remove_file(&avail).unwrap();
    std::fs::write(&avail, "0\n").unwrap();
    std::fs::write(root.join(state::DIRTY_FILE), "").unwrap();
    run(&h, "nvidia-smi", &[]);
    assert!(!root.join(state::DIRTY_FILE).exists());
    assert_eq!(std::fs::read_to_string(&avail).unwrap(), good);
    drop(h);
}

fn mdev_types(vf: &str) -> String {
    format!("sys/class/mdev_bus/{vf}/mdev_supported_types")
}

fn smi_q_mode(h: &SimHost, pf_block: &str) -> String {
    let out = run(h, "nvidia-smi", &["-q"]).stdout;
    let block = out
        .split("\nGPU ")
        .find(|b| b.starts_with(pf_block))
        .unwrap();
    block
        .lines()
        .find(|l| l.trim_start().starts_with("vGPU Heterogeneous Mode"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn mixed_size_mode_on_a40_mdev_takes_two_sizes_and_is_cleared_by_reboot() {
    let d = tmp();
    let h = sim(&d, "a40x8-ready", &[]);
    let q = run(&h, "nvidia-smi", &["-q"]).stdout;
    assert!(
        q.contains("Heterogenous Multi-vGPU           : Supported"),
        "{q}"
    );
    assert_eq!(smi_q_mode(&h, "00000000:e8:00.0"), "Disabled");
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    let (a, b, c, e) = (
        "0000:e8:00.4",
        "0000:e8:00.5",
        "0000:e8:00.6",
        "0000:e8:00.7",
    );
    // Equal-size mode: a second size on the GPU is refused.
    let u1 = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
    h.write_attr(&format!("{}/nvidia-575/create", mdev_types(a)), u1)
        .unwrap();
    assert_eq!(
        h.read_trim(&format!("{}/nvidia-555/available_instances", mdev_types(b)))
            .as_deref(),
        Some("0")
    );
    let err = h
        .write_attr(
            &format!("{}/nvidia-555/create", mdev_types(b)),
            "0c6e1b2a-9d4e-4a8b-b1c2-5d7e8f9a0b1c",
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EINVAL));
    // -shm 1 while a vGPU exists on that GPU: refused.
    let out = run(&h, "nvidia-smi", &["vgpu", "-i", "7", "-shm", "1"]);
    assert!(!out.success());
    assert!(out.stderr.contains("In use by another client"), "{out:?}");
    h.write_attr(&format!("sys/bus/mdev/devices/{u1}/remove"), "1")
        .unwrap();
    let out = run(
        &h,
        "nvidia-smi",
        &["vgpu", "-i", "0000:e8:00.0", "-shm", "1"],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(smi_q_mode(&h, "00000000:e8:00.0"), "Enabled");
    assert_eq!(smi_q_mode(&h, "00000000:e7:00.0"), "Disabled");
    // The seed's two lines on one A40: A40-24A and A40-1B side by side.
    h.write_attr(&format!("{}/nvidia-575/create", mdev_types(a)), u1)
        .unwrap();
    for (vf, u) in [
        (b, "0c6e1b2a-9d4e-4a8b-b1c2-5d7e8f9a0b1c"),
        (c, "6a1f3c2b-9d4e-4a8b-b1c2-5d7e8f9a0b1d"),
    ] {
        h.write_attr(&format!("{}/nvidia-555/create", mdev_types(vf)), u)
            .unwrap();
    }
    // 48 GB - 24 GB - 2 x 1 GB = 22 GB left: a 16Q fits, a 24Q does not; a used VF takes none.
    let avail = |vf: &str, id: u32| {
        h.read_trim(&format!(
            "{}/nvidia-{id}/available_instances",
            mdev_types(vf)
        ))
        .unwrap()
    };
    assert_eq!(avail(e, 564), "1");
    assert_eq!(avail(e, 565), "0");
    assert_eq!(avail(b, 564), "0");
    let err = h
        .write_attr(
            &format!("{}/nvidia-565/create", mdev_types(e)),
            "7b2c3d4e-9d4e-4a8b-b1c2-5d7e8f9a0b1e",
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT));
    // -shm 0 while vGPUs exist: refused too.
    assert!(!run(&h, "nvidia-smi", &["vgpu", "-i", "7", "-shm", "0"]).success());
    // An enable of a GPU that has VFs does not rebind it: the mode stays.
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:e8:00.0"]);
    assert_eq!(smi_q_mode(&h, "00000000:e8:00.0"), "Enabled");
    reboot(&h, &[]).unwrap();
    assert_eq!(smi_q_mode(&h, "00000000:e8:00.0"), "Disabled");
}

#[test]
fn mixed_size_mode_on_l40s_vfio_is_cleared_by_sriov_manage_and_lists_live() {
    let d = tmp();
    let h = sim(&d, "l40s-vfio-ready", &[]);
    let pf = "0000:01:00.0";
    // Turned on before sriov-manage: its rebind clears it (recorded-behaviour §2, §4).
    assert!(run(&h, "nvidia-smi", &["vgpu", "-i", "0", "-shm", "1"]).success());
    assert_eq!(smi_q_mode(&h, "00000000:01:00.0"), "Enabled");
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", pf]);
    assert_eq!(smi_q_mode(&h, "00000000:01:00.0"), "Disabled");
    let vf = |f: &str| format!("sys/bus/pci/devices/0000:01:00.{f}/nvidia");
    h.write_attr(&format!("{}/current_vgpu_type", vf("4")), "1147")
        .unwrap();
    // Equal-size mode: another size's write fails, and the list offers only the first type.
    assert_eq!(
        h.read(&format!("{}/creatable_vgpu_types", vf("5")))
            .unwrap(),
        "ID    : vGPU Name\n1147  : NVIDIA L40S-1Q\n"
    );
    assert!(h
        .write_attr(&format!("{}/current_vgpu_type", vf("5")), "1145")
        .is_err());
    h.write_attr(&format!("{}/current_vgpu_type", vf("4")), "0")
        .unwrap();
    assert!(run(&h, "nvidia-smi", &["vgpu", "-i", "0", "-shm", "1"]).success());
    h.write_attr(&format!("{}/current_vgpu_type", vf("4")), "1147")
        .unwrap();
    h.write_attr(&format!("{}/current_vgpu_type", vf("5")), "1145")
        .unwrap();
    let list = h
        .read(&format!("{}/creatable_vgpu_types", vf("6")))
        .unwrap();
    assert!(list.contains(": NVIDIA L40S-1B\n") && list.contains(": NVIDIA L40S-1Q\n"));
    // 48 GB - 2 GB: the 48 GB type no longer fits anywhere.
    assert!(!list.contains("L40S-48Q"), "{list}");
}

#[test]
fn mixed_size_mode_is_refused_where_the_gpu_has_none() {
    let d = tmp();
    let h = sim(&d, "proxmox-l4-ready", &[]);
    let out = run(&h, "nvidia-smi", &["vgpu", "-i", "0", "-shm", "1"]);
    assert_eq!(out.status, 3, "{out:?}");
    assert_eq!(smi_q_mode(&h, "00000000:"), "N/A");
    let out = run(&h, "nvidia-smi", &["vgpu", "-i", "5", "-shm", "1"]);
    assert!(!out.success());
}

/// Every process that opens a root loads the state while others may be saving it (a test's
/// own clock thread, a restore started beside it). A kernel that loaded the state and then,
/// separately, the save token could pair an old state with the new token: it then trusted the
/// old state and saved it over the change it never saw (a vendor-VFIO vGPU vanished from the
/// state and its VF's `current_vgpu_type` read 0 again, 2 runs in 5 under load).
#[test]
fn a_kernel_opened_while_another_saves_never_saves_over_its_change() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = tmp();
    let h = sim(&d, "a40x8", &[]);
    let root = h.root().to_path_buf();
    let m = models::parse("a40x8").unwrap().0;
    let bump = |k: &kernel::SimKernel, key: &str| {
        k.with(|st| {
            let n: u64 = st.opts.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
            st.opts.insert(key.to_string(), (n + 1).to_string());
            Ok(())
        })
        .unwrap();
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let saver = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let k = kernel::SimKernel::load(&root, m).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                bump(&k, "saver");
                n += 1;
            }
            n
        })
    };
    let opened = 2000u64;
    for _ in 0..opened {
        let k = kernel::SimKernel::load(&root, m).unwrap();
        bump(&k, "opener");
    }
    stop.store(true, Ordering::Relaxed);
    let saved = saver.join().unwrap();
    let st = state::load(&root).unwrap();
    let got = |key: &str| st.opts.get(key).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        got("opener"),
        Some(opened),
        "an opener's change was saved over"
    );
    assert_eq!(
        got("saver"),
        Some(saved),
        "the saver's change was saved over"
    );
}

// ---------------------------------------------------------------------------------------------
// MIG (recorded-behaviour §5)

#[test]
fn mig_models_list_their_time_sliced_types_while_mig_mode_is_off() {
    let d = tmp();
    let h = sim(&d, "a100-mig-ready", &[]);
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:17:00.0/device")
            .as_deref(),
        Some("0x20b5")
    );
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:17:00.0"]);
    assert_eq!(
        h.read_trim("sys/bus/pci/devices/0000:17:00.0/sriov_numvfs")
            .as_deref(),
        Some("20")
    );
    let types = h.list(&mdev_types("0000:17:00.4"));
    assert!(types.contains(&"nvidia-692".to_string()), "{types:?}");
    assert!(!types.contains(&"nvidia-699".to_string()), "{types:?}");
    assert_eq!(
        h.read_trim(&format!("{}/nvidia-698/name", mdev_types("0000:17:00.4")))
            .as_deref(),
        Some("NVIDIA A100D-80C")
    );

    let d = tmp();
    let h = sim(&d, "h200x8-vfio-ready", &[]);
    assert_eq!(
        h.read_trim("sys/module/nvidia/version").as_deref(),
        Some("580.105.06")
    );
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:db:00.0"]);
    let vf = "sys/bus/pci/devices/0000:db:00.4/nvidia";
    assert_eq!(h.list(vf).len(), 6, "the 580 branch's six files");
    let list = h.read(&format!("{vf}/creatable_vgpu_types")).unwrap();
    assert!(list.contains(": NVIDIA H200X-4C\n"), "{list}");
    assert!(!list.contains("H200X-1-18C"), "{list}");
}

/// `Current` and `Pending` of a GPU's `MIG Mode` block in `nvidia-smi -q`.
fn smi_q_mig(h: &SimHost, bus: &str) -> (String, String) {
    let out = run(h, "nvidia-smi", &["-q"]).stdout;
    let block = out.split("\nGPU ").find(|b| b.starts_with(bus)).unwrap();
    let after = block
        .split("    MIG Mode\n")
        .nth(1)
        .expect("a MIG Mode block");
    let val = |key: &str| {
        after
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap()
    };
    (val("Current"), val("Pending"))
}

fn smi(h: &SimHost, args: &[&str]) -> RunOutput {
    run(h, "nvidia-smi", args)
}

/// GPU instance ids from `-cgi` output, in creation order.
fn created_ids(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Successfully created GPU instance ID "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a100_mig_mode_waits_for_a_reboot_and_then_persists() {
    let d = tmp();
    let h = sim(&d, "a100-mig-ready", &[]);
    let dis = || ("Disabled".to_string(), "Disabled".to_string());
    assert_eq!(smi_q_mig(&h, "00000000:17:00.0"), dis());
    let q = smi(
        &h,
        &[
            "--query-gpu=index,mig.mode.current,mig.mode.pending",
            "--format=csv",
        ],
    );
    assert_eq!(
        q.stdout,
        "index, mig.mode.current, mig.mode.pending\n0, Disabled, Disabled\n1, Disabled, Disabled\n"
    );
    // No instance profiles before MIG mode is on.
    let lgip = smi(&h, &["mig", "-lgip"]);
    assert_eq!(lgip.status, 6);
    assert!(lgip.stderr.contains("No MIG-enabled devices found."));

    let out = smi(&h, &["-i", "0", "-mig", "1"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "Warning: MIG mode is in pending enable state for GPU 00000000:17:00.0:Not Supported\n\
         Reboot the system or try nvidia-smi --gpu-reset to make MIG mode effective on GPU 00000000:17:00.0\n\
         All done.\n"
    );
    assert_eq!(
        smi_q_mig(&h, "00000000:17:00.0"),
        ("Disabled".to_string(), "Enabled".to_string())
    );
    assert_eq!(smi_q_mig(&h, "00000000:65:00.0"), dis());
    assert_eq!(smi(&h, &["mig", "-lgip"]).status, 6, "still pending");

    let on = ("Enabled".to_string(), "Enabled".to_string());
    for _ in 0..2 {
        reboot(&h, &[]).unwrap();
        assert_eq!(
            smi_q_mig(&h, "00000000:17:00.0"),
            on,
            "persists (§5, Ampere)"
        );
        assert_eq!(smi_q_mig(&h, "00000000:65:00.0"), dis());
    }
    let lgip = smi(&h, &["mig", "-lgip"]);
    assert!(lgip.success());
    assert!(
        lgip.stdout.contains(
            "|   0  MIG 1g.10gb       19     7/7        9.50       No     14     0     0   |\n\
             |                                                             1     0     0   |\n"
        ),
        "{}",
        lgip.stdout
    );
    assert!(lgip.stdout.contains(
        "|   0  MIG 7g.80gb        0     1/1        79.00      No     98     5     0   |\n"
    ));
    assert!(!lgip.stdout.contains("|   1  "), "GPU 1 is not in MIG mode");
    assert!(
        lgip.stdout.lines().all(|l| l.len() == 79),
        "{}",
        lgip.stdout
    );
}

#[test]
fn a100_mig_backed_vgpus_on_mdev_in_the_recorded_order() {
    let d = tmp();
    let h = sim(&d, "a100-mig-ready", &["vf_delay_ms=30", "vf_group_ms=3"]);
    smi(&h, &["-i", "0", "-mig", "1"]);
    reboot(&h, &[]).unwrap();
    let vf = |f: u32| format!("0000:17:00.{f}");
    // Instances made before sriov-manage are wiped by its rebind (§2, §5).
    let out = smi(&h, &["mig", "-i", "0", "-cgi", "14", "-C"]);
    assert!(out.success(), "{out:?}");
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:17:00.0"]);
    let lgi = smi(&h, &["mig", "-lgi"]);
    assert_eq!(
        (lgi.status, lgi.stderr.as_str()),
        (6, "No GPU instances found: Not Found\n")
    );
    assert!(
        h.list(&mdev_types(&vf(4))).is_empty(),
        "the lists come back empty"
    );

    // stackhpc's A100 layout: three 2g.20gb and one 1g.10gb, after sriov-manage.
    let out = smi(&h, &["mig", "-i", "0", "-cgi", "14,14,14,1g.10gb", "-C"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.starts_with(
        "Successfully created GPU instance ID  5 on GPU  0 using profile MIG 2g.20gb (ID 14)\n\
         Successfully created compute instance ID  0 on GPU  0 GPU instance ID  5 using profile MIG 2g.20gb (ID  1)\n"
    ), "{}", out.stdout);
    let ids = created_ids(&out.stdout);
    assert_eq!(ids, vec![5, 4, 3, 13]);
    let lgi = smi(&h, &["mig", "-lgi"]).stdout;
    assert!(
        lgi.contains("|   0  MIG 1g.10gb      19       13          6:1     |\n"),
        "{lgi}"
    );
    assert!(
        lgi.contains("|   0  MIG 2g.20gb      14        3          0:2     |\n"),
        "{lgi}"
    );
    assert!(lgi.lines().all(|l| l.len() == 54), "{lgi}");
    // Each VF lists the MIG-backed types of the profiles that have instances, nothing else.
    assert_eq!(h.list(&mdev_types(&vf(4))), ["nvidia-699", "nvidia-700"]);
    let avail = |f: u32, id: u32| {
        h.read_trim(&format!(
            "{}/nvidia-{id}/available_instances",
            mdev_types(&vf(f))
        ))
    };
    assert_eq!(avail(4, 700).as_deref(), Some("1"));
    let uuids = [
        "73269d0f-b2c9-438d-8f28-f9e4bc6c6995",
        "dc352ef3-efeb-4a5d-a48e-912eb230bc76",
        "a464fbae-1f89-419a-a7bd-3a79c7b2eef4",
    ];
    for (f, u) in (4..7).zip(uuids) {
        h.write_attr(&format!("{}/nvidia-700/create", mdev_types(&vf(f))), u)
            .unwrap();
    }
    // Three 2g.20gb instances hold three vGPUs: no room for a fourth 2-20C anywhere.
    assert_eq!(avail(7, 700).as_deref(), Some("0"));
    let err = h
        .write_attr(
            &format!("{}/nvidia-700/create", mdev_types(&vf(7))),
            "f3b823d3-97c8-4e0a-ae1b-1f102dcb3bce",
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EIO));
    h.write_attr(
        &format!("{}/nvidia-699/create", mdev_types(&vf(7))),
        "f3b823d3-97c8-4e0a-ae1b-1f102dcb3bce",
    )
    .unwrap();
    let st = state_of(&h).unwrap();
    let mut held: Vec<Option<u32>> = st.vgpus.iter().map(|v| v.gpu_instance).collect();
    held.sort();
    assert_eq!(held, vec![Some(3), Some(4), Some(5), Some(13)]);
    // The driver refuses MIG mode off with VFs enabled, and an instance holding a vGPU.
    let off = smi(&h, &["-i", "0", "-mig", "0"]);
    assert_eq!(off.status, 255);
    assert!(off.stderr.contains("In use by another client"));
    let dgi = smi(&h, &["mig", "-i", "0", "-dgi", "-gi", "13"]);
    assert_eq!(dgi.status, 255, "{dgi:?}");
    // A reboot: no instances, no vGPUs, MIG mode still on.
    reboot(&h, &[]).unwrap();
    assert!(state_of(&h).unwrap().gpu_instances.is_empty());
    assert_eq!(
        smi_q_mig(&h, "00000000:17:00.0"),
        ("Enabled".to_string(), "Enabled".to_string())
    );
}

#[test]
fn h200_mig_on_vendor_vfio_takes_effect_at_once_and_is_lost_at_boot() {
    let d = tmp();
    // VFs staged ahead and their groups appearing later, as on the default path of a slow host.
    let h = sim(
        &d,
        "h200x8-vfio-ready",
        &["vf_delay_ms=30", "vf_group_ms=3"],
    );
    let out = smi(&h, &["-i", "7", "-mig", "1"]);
    assert_eq!(
        out.stdout,
        "Enabled MIG Mode for GPU 00000000:DB:00.0\nAll done.\n"
    );
    let on = ("Enabled".to_string(), "Enabled".to_string());
    assert_eq!(smi_q_mig(&h, "00000000:db:00.0"), on);
    // Made before sriov-manage: wiped, the VF lists nothing and the write fails with EIO (§5).
    assert!(smi(&h, &["mig", "-i", "7", "-cgi", "19", "-C"]).success());
    run(&h, "/usr/lib/nvidia/sriov-manage", &["-e", "0000:db:00.0"]);
    let vf = |f: u32| format!("sys/bus/pci/devices/0000:db:00.{f}/nvidia");
    assert_eq!(
        h.read(&format!("{}/creatable_vgpu_types", vf(4))).unwrap(),
        "ID    : vGPU Name\n"
    );
    let t = vgpuctl_catalog::find("H200X", "H200X-1-18C").unwrap();
    let err = h
        .write_attr(&format!("{}/current_vgpu_type", vf(4)), &t.id.to_string())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EIO));

    // One instance per vGPU slot, after sriov-manage: ids come back out of order.
    let out = smi(
        &h,
        &["mig", "-i", "7", "-cgi", "19,19,19,19,19,19,19", "-C"],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(created_ids(&out.stdout), vec![9, 7, 8, 11, 10, 12, 13]);
    let eighth = smi(&h, &["mig", "-i", "7", "-cgi", "1g.18gb"]);
    assert_eq!(eighth.status, 255);
    assert!(
        eighth.stderr.contains("Insufficient Resources"),
        "{eighth:?}"
    );
    let list = h.read(&format!("{}/creatable_vgpu_types", vf(4))).unwrap();
    assert_eq!(
        list,
        format!("ID    : vGPU Name\n{:<6}: NVIDIA H200X-1-18C\n", t.id)
    );
    for f in 4..11 {
        let (d, v) = (f / 8, f % 8);
        let nv = format!("sys/bus/pci/devices/0000:db:{d:02x}.{v}/nvidia");
        h.write_attr(&format!("{nv}/current_vgpu_type"), &t.id.to_string())
            .unwrap();
        assert!(h.read_trim(&format!("{nv}/gpu_instance_id")).is_some());
    }
    assert_eq!(
        h.read_trim(&format!("{}/gpu_instance_id", vf(4)))
            .as_deref(),
        Some("9"),
        "the first vGPU took the first instance made"
    );
    // All seven instances hold a vGPU: the next VF lists nothing and its write fails.
    let next = "sys/bus/pci/devices/0000:db:01.3/nvidia";
    assert_eq!(
        h.read(&format!("{next}/creatable_vgpu_types")).unwrap(),
        "ID    : vGPU Name\n"
    );
    assert_eq!(
        h.write_attr(&format!("{next}/current_vgpu_type"), &t.id.to_string())
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::EIO)
    );
    // Hopper: MIG mode does not persist (§5); instances never do.
    reboot(&h, &[]).unwrap();
    assert_eq!(
        smi_q_mig(&h, "00000000:db:00.0"),
        ("Disabled".to_string(), "Disabled".to_string())
    );
    assert!(state_of(&h).unwrap().gpu_instances.is_empty());
}

#[test]
fn mig_is_refused_on_a_gpu_without_it() {
    let d = tmp();
    let h = sim(&d, "l40s-vfio-ready", &[]);
    let out = smi(&h, &["-i", "0", "-mig", "1"]);
    assert_eq!(out.status, 3);
    assert!(out.stderr.contains("Not Supported"), "{out:?}");
    assert!(!run(&h, "nvidia-smi", &["-q"]).stdout.contains("MIG Mode"));
    assert_eq!(smi(&h, &["mig", "-lgip"]).status, 6);
}

/// `-cgi` refuses an instance with no free placement left, as the driver's placement dictates
/// (stackhpc's 3 x 2g + 1 x 1g mix): a 1g made first goes where the recorded first 1g id (9)
/// puts it, slice 2, and leaves a 2g (starts 0, 2, 4) only slices 0 and 4, so the third 2g is
/// `Insufficient Resources` (exit 255), the ones before it kept; larger first, all four fit.
#[test]
fn cgi_refuses_an_instance_without_a_placement_and_larger_first_fits() {
    let d = tmp();
    let h = sim(&d, "h200x8-vfio-ready", &[]);
    assert!(smi(&h, &["-i", "0", "-mig", "1"]).success());
    let small_first = smi(
        &h,
        &[
            "mig",
            "-i",
            "0",
            "-cgi",
            "1g.18gb,2g.35gb,2g.35gb,2g.35gb",
            "-C",
        ],
    );
    assert_eq!(small_first.status, 255, "{small_first:?}");
    assert!(
        small_first
            .stderr
            .contains("using profile 14: Insufficient Resources"),
        "{small_first:?}"
    );
    assert_eq!(created_ids(&small_first.stdout), vec![9, 5, 3]);
    assert!(smi(&h, &["mig", "-i", "0", "-dci"]).success());
    assert!(smi(&h, &["mig", "-i", "0", "-dgi"]).success());
    let larger_first = smi(
        &h,
        &[
            "mig",
            "-i",
            "0",
            "-cgi",
            "2g.35gb,2g.35gb,2g.35gb,1g.18gb",
            "-C",
        ],
    );
    assert!(larger_first.success(), "{larger_first:?}");
    assert_eq!(created_ids(&larger_first.stdout), vec![5, 4, 3, 13]);
}
