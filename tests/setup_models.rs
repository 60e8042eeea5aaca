//! Unattended setup from fresh to done on the simulator, across its reboot checkpoints.

mod common;
use common::*;

fn profile(name: &str) -> std::path::PathBuf {
    repo().join("profiles").join(name)
}

/// Fresh -> done with `sim reboot` at every checkpoint; every vGPU of the profile present.
fn bring_up(model: &str, prof: &str, per_gpu: usize, gpus: usize, type_short: &str) -> Sim {
    let s = Sim::new(model);
    let runs = s.setup_to_end(&profile(prof));
    assert!(
        runs.len() >= 2,
        "{model}: a fresh host needs a reboot: {:?}",
        runs[0]
    );
    assert_eq!(runs[0].code, 3, "{model}: {:?}", runs[0]);
    assert!(runs[0].stdout.contains("Reboot"), "{:?}", runs[0]);
    let live = s.live_vgpus();
    assert_eq!(live.len(), per_gpu * gpus, "{model}: {live:?}");
    assert!(
        live.values().all(|t| t.ends_with(type_short)),
        "{model}: {live:?}"
    );
    let j = s.json(&["status", "--json"]);
    assert_eq!(j["drift"].as_array().unwrap().len(), 0, "{j}");
    assert!(s.exists("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"));
    assert!(s.exists("usr/local/sbin/vgpuctl"));
    // The IOMMU options took effect through this host's boot loader.
    let cmdline = s.read("proc/cmdline");
    assert!(
        cmdline.split_whitespace().any(|w| w == "iommu=pt"),
        "{model}: {cmdline}"
    );
    // A second run plans nothing and changes no file.
    let before = s.hash();
    let again = s.run(&[
        "setup",
        "--profile",
        profile(prof).to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
    assert_eq!(s.hash(), before, "{model}: the second run changed files");
    s
}

#[test]
fn a40x8_grub() {
    let s = bring_up("a40x8", "a40.toml", 2, 8, "A40-24Q");
    assert!(s
        .read("etc/default/grub")
        .contains("intel_iommu=on iommu=pt"));
    assert!(s.exists("var/lib/vgpuctl/backups/etc/default/grub"));
    assert!(s.read("proc/cmdline").contains("intel_iommu=on"));
}

#[test]
fn rhel_a10_grubby() {
    bring_up("rhel-a10", "rhel-a10.toml", 3, 1, "A10-6Q");
}

#[test]
fn proxmox_l4_systemd_boot() {
    let s = bring_up("proxmox-l4", "proxmox-l4.toml", 2, 1, "L4-6Q");
    let kc = s.read("etc/kernel/cmdline");
    assert!(kc.starts_with("root=ZFS="), "rest of the line kept: {kc}");
    assert!(kc.contains("intel_iommu=on iommu=pt"), "{kc}");
}

#[test]
fn l40s_vendor_vfio_amd() {
    let s = bring_up("l40s-vfio", "l40s.toml", 2, 4, "L40S-12Q");
    // AMD: iommu=pt only.
    assert!(!s.read("proc/cmdline").contains("intel_iommu"));
}

#[test]
fn t4x2_pre_ampere() {
    bring_up("t4x2", "t4.toml", 4, 2, "T4-4Q");
}

#[test]
fn ubuntu_cloud_image_dropin_overrides_the_default() {
    let s = Sim::new("a40x8");
    // Ubuntu cloud images ship this drop-in; it is sourced after /etc/default/grub and wins.
    s.write(
        "etc/default/grub.d/50-cloudimg-settings.cfg",
        "# Cloud Image specific Grub settings for Generic Cloud Images\n# CLOUD_IMG: This file was created/modified by the Cloud Image build process\n\n# Set the recordfail timeout\nGRUB_RECORDFAIL_TIMEOUT=0\n\n# Do not wait on grub prompt\nGRUB_TIMEOUT=0\n\n# Set the default commandline\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n\n# Set the grub console type\nGRUB_TERMINAL=console\n",
    );
    let runs = s.setup_to_end(&profile("a40.toml"));
    assert_eq!(runs.last().unwrap().code, 0);
    let dropin = s.read("etc/default/grub.d/50-cloudimg-settings.cfg");
    assert!(
        dropin.contains(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0 intel_iommu=on iommu=pt\""
        ),
        "{dropin}"
    );
    let cmdline = s.read("proc/cmdline");
    assert!(
        cmdline.contains("console=ttyS0") && cmdline.contains("intel_iommu=on"),
        "{cmdline}"
    );
    assert_eq!(s.live_vgpus().len(), 16);
}

#[test]
fn reboot_auto_is_carried_through_by_the_resume_unit() {
    let s = Sim::new("a40x8");
    let text = std::fs::read_to_string(profile("a40.toml"))
        .unwrap()
        .replace("reboot = \"prompt\"", "reboot = \"auto\"");
    let p = profile_file(&text);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(s.exists("etc/systemd/system/multi-user.target.wants/vgpuctl-resume.service"));
    // From here on only simulated reboots: the resume unit runs setup --resume.
    for _ in 0..3 {
        if s.live_vgpus().len() == 16 {
            break;
        }
        let rb = s.run(&["sim", "reboot"]);
        assert_eq!(rb.code, 0, "{rb:?}");
    }
    assert_eq!(s.live_vgpus().len(), 16);
    assert!(
        !s.exists("etc/systemd/system/multi-user.target.wants/vgpuctl-resume.service"),
        "resume unit disabled itself"
    );
    let st = s.read("var/lib/vgpuctl/state.toml");
    assert!(st.contains("finished = true"), "{st}");
}

#[test]
fn unusable_hosts_are_refused_with_nothing_changed() {
    for (model, prof, word) in [
        ("cloud-h100", "cloud-h100.toml", "virtual machine"),
        ("geforce", "geforce.toml", "consumer"),
    ] {
        let s = Sim::new(model);
        let before = s.hash();
        let r = s.run(&[
            "setup",
            "--profile",
            profile(prof).to_str().unwrap(),
            "--yes",
        ]);
        assert_eq!(r.code, 1, "{model}: {r:?}");
        assert!(r.stderr.contains(word), "{model}: {r:?}");
        assert!(r.stderr.contains("Nothing was changed"), "{r:?}");
        assert_eq!(s.hash(), before, "{model}");
    }
}

#[test]
fn invalid_profiles_change_nothing_and_exit_2() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    for (text, needle) in [
        ("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 2\ncolour = 1\n", "colour"),
        ("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-99Q\"\ncount = 1\n[driver]\npath = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n", "vgpu_type"),
        ("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 3\n[driver]\npath = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n", "count"),
        ("[[gpus]]\nselect = \"0000:99:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n[driver]\npath = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n", "select"),
        ("[host]\nreboot = \"sometimes\"\n", "reboot"),
    ] {
        let p = profile_file(text);
        let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
        assert_eq!(r.code, 2, "{text}: {r:?}");
        assert!(r.stderr.contains(needle), "{needle}: {r:?}");
    }
    assert_eq!(s.hash(), before);
}

#[test]
fn dry_run_shows_every_effect_and_changes_nothing() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    let r = s.run(&[
        "setup",
        "--profile",
        profile("a40.toml").to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    for needle in [
        "+GRUB_CMDLINE_LINUX_DEFAULT",
        "update-grub",
        "blacklist nouveau",
        "update-initramfs",
        "unbind",
        "driver",
        "After the reboot",
    ] {
        assert!(
            r.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            r.stdout
        );
    }
    assert_eq!(s.hash(), before);
}

#[test]
fn after_the_reboot_a_stopped_vgpu_manager_is_reported() {
    let s = Sim::new("a40x8");
    let p = profile("a40.toml");
    let r = s.run(&["setup", "--profile", p.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    // The service failed at boot (the simulated systemd forgets it is running).
    let state = s.root().join(".vgpuctl-sim/state.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    j["active_services"]
        .as_array_mut()
        .unwrap()
        .retain(|x| x != "nvidia-vgpu-mgr.service");
    std::fs::write(&state, serde_json::to_string(&j).unwrap()).unwrap();
    let r = s.run(&["setup", "--profile", p.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("nvidia-vgpu-mgr.service is not running"),
        "{r:?}"
    );
    assert!(
        s.live_vgpus().is_empty(),
        "nothing created on a host without its manager"
    );
}
