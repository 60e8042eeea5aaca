//! Issue 17 item 1: a driver upgrade. A profile whose `[driver]` names another version than the
//! installed one (550.163.02 -> 580.105.06, a zip whose `.run` the real `makeself` built) plans
//! the upgrade: refused while a vGPU is in use (the holder named) or when a pinned type is not
//! offered by the new branch, both before any change; otherwise the vGPUs go (pins kept), the
//! old driver is removed the way it was installed, the new one installed, a reboot checkpoint,
//! and after it every pinned vGPU is back with its UUID on its VF and the new branch's type id.

mod common;
#[path = "common/makeself.rs"]
mod makeself;

use common::*;
use std::collections::BTreeMap;

const NEW: &str = "580.105.06";

/// The new driver's licensed zip, built with the real makeself, in the host's /root.
fn new_zip(s: &Sim) -> String {
    let name = vgpuctl_sim::driver_pkg::zip_name(NEW);
    makeself::driver_zip(&s.root().join("root").join(&name), NEW);
    format!("/root/{name}")
}

fn profile(zip: &str, gpus: &str) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[host]\nreboot = \"never\"\n\n[driver]\npath = \"{zip}\"\n\n{gpus}"
    ))
}

const OLD_ZIP: &str = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";

fn setup(s: &Sim, p: &tempfile::NamedTempFile) -> Run {
    s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"])
}

/// Pinned vGPUs: UUID -> (VF, type name, type id), from /etc/vgpuctl/vgpus.toml.
fn pins(s: &Sim) -> BTreeMap<String, (String, String, String)> {
    let text = s.read("etc/vgpuctl/vgpus.toml");
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut out = BTreeMap::new();
    for p in v["vgpus"].as_array().cloned().unwrap_or_default() {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        out.insert(s("uuid"), (s("parent"), s("type_name"), s("type_id")));
    }
    out
}

/// Live vGPUs: UUID -> VF, from status --json.
fn live(s: &Sim) -> BTreeMap<String, String> {
    let j = s.json(&["status", "--json"]);
    let mut m = BTreeMap::new();
    for g in j["gpus"].as_array().unwrap() {
        for v in g["vgpus"].as_array().unwrap() {
            if let (Some(u), Some(p)) = (v["uuid"].as_str(), v["parent"].as_str()) {
                m.insert(u.to_string(), p.to_string());
            }
        }
    }
    m
}

/// Where the pins put each vGPU: UUID -> parent (what `live` must read back).
fn parents(pins: &BTreeMap<String, (String, String, String)>) -> BTreeMap<String, String> {
    pins.iter()
        .map(|(u, (parent, _, _))| (u.clone(), parent.clone()))
        .collect()
}

/// QEMU (pid 4242, libvirt's `-name guest=...`) holds the mdev vGPU `uuid` open through its
/// IOMMU group (the simulator lays out none for mdev devices: the test links group 900).
fn hold_mdev(s: &Sim, uuid: &str, vm: &str) {
    let dev = s.root().join(format!("sys/bus/mdev/devices/{uuid}"));
    std::os::unix::fs::symlink(
        "../../../../kernel/iommu_groups/900",
        dev.join("iommu_group"),
    )
    .unwrap();
    qemu(s, 4242, vm, "/dev/vfio/900");
}

/// QEMU holds the vendor-VFIO vGPU on VF `parent` through its iommufd cdev.
fn hold_vf(s: &Sim, parent: &str, vm: &str) {
    let dir = s
        .root()
        .join(format!("sys/bus/pci/devices/{parent}/vfio-dev"));
    let cdev = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .find(|n| n.starts_with("vfio"))
        .expect("a vfio-dev/vfioN directory");
    qemu(s, 4343, vm, &format!("/dev/vfio/devices/{cdev}"));
}

fn qemu(s: &Sim, pid: u32, vm: &str, node: &str) {
    let fds = s.root().join(format!("proc/{pid}/fd"));
    std::fs::create_dir_all(&fds).unwrap();
    std::os::unix::fs::symlink(node, fds.join("21")).unwrap();
    std::fs::write(
        s.root().join(format!("proc/{pid}/cmdline")),
        format!("/usr/bin/qemu-system-x86_64\0-name\0guest={vm},debug-threads=on\0-S\0"),
    )
    .unwrap();
}

fn release(s: &Sim, pid: u32) {
    std::fs::remove_dir_all(s.root().join(format!("proc/{pid}"))).unwrap();
}

/// The whole upgrade on one model: pinned vGPUs on 550, refused while one is held, then
/// upgraded across the reboot, each vGPU back with its UUID on its VF and the 580 branch's id.
fn upgrade_keeps_every_vgpu(model: &str, gpus: &str, hold: &dyn Fn(&Sim, &str, &str), pid: u32) {
    let s = Sim::new(model);
    let r = setup(&s, &profile(OLD_ZIP, gpus));
    assert_eq!(r.code, 0, "{r:?}");
    let before = pins(&s);
    assert!(!before.is_empty());
    assert_eq!(live(&s), parents(&before));
    let zip = new_zip(&s);
    let p = profile(&zip, gpus);

    // The dry run names each step.
    let r = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    for part in [
        format!(
            "Remove {} vGPU(s) for the driver upgrade 550.163.02 -> {NEW}",
            before.len()
        ),
        "Remove the NVIDIA vGPU host driver 550.163.02 the way it was installed".into(),
        "run: /usr/bin/nvidia-uninstall --silent".into(),
        format!("Install the NVIDIA vGPU host driver {NEW}"),
        format!("fetch and verify the host driver from {zip}"),
        format!("the reboot loads driver {NEW} (setup stops for it: exit 3"),
    ] {
        assert!(r.stdout.contains(&part), "{part}: {r:?}");
    }
    // The restore unit is installed and enabled already: the plan does not promise it again.
    assert!(
        !r.stdout
            .contains("install and enable vgpuctl-restore.service"),
        "{r:?}"
    );

    // A VM uses one: refused before any change, naming the VM.
    let (held, (held_vf, _, _)) = before.iter().next().unwrap();
    let key = if model.contains("vfio") {
        held_vf
    } else {
        held
    };
    hold(&s, key, "web-01");
    let hash = s.hash();
    let r = setup(&s, &p);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!("VM web-01 (pid {pid})"))
            && r.stderr.contains("Nothing was changed"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash, "nothing changed");
    release(&s, pid);

    // Otherwise: the vGPUs go, the drivers change, and setup stops for the reboot.
    let r = setup(&s, &p);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(live(&s).is_empty(), "{r:?}");
    assert_eq!(pins(&s), before, "the pins are kept as they were");
    assert!(s.exists(&format!("usr/src/nvidia-{NEW}/dkms.conf")));
    assert!(
        !s.exists("usr/src/nvidia-550.163.02"),
        "the old driver is gone"
    );
    assert_eq!(s.read("sys/module/nvidia/version").trim(), "550.163.02");
    // The restore unit runs at the boot, then setup finishes.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(s.read("sys/module/nvidia/version").trim(), NEW);
    // Restore at boot already recreated them from pins whose type ids are the old branch's: by
    // name, each on its VF.
    assert_eq!(live(&s), parents(&before), "restore at boot: {rb:?}");
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");

    let after = pins(&s);
    assert_eq!(live(&s), parents(&before), "the same UUIDs on the same VFs");
    for (uuid, (vf, name, old_id)) in &before {
        let (vf2, name2, new_id) = &after[uuid];
        assert_eq!((vf, name), (vf2, name2), "{uuid}");
        let num = |id: &str| -> u32 { id.trim_start_matches("nvidia-").parse().unwrap() };
        assert_eq!(
            num(new_id),
            num(old_id) + 30,
            "{uuid}: the 580 branch's id (the sim's rule)"
        );
    }
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("driver upgrade"), "done once: {r:?}");
}

#[test]
fn a40_upgrade_keeps_every_vgpu_on_its_vf_with_the_new_type_ids() {
    upgrade_keeps_every_vgpu(
        "a40x8-ready",
        "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n\n\
         [[gpus]]\nselect = \"0000:68:00.0\"\nvgpu_type = \"A40-12Q\"\ncount = 2\n",
        &hold_mdev,
        4242,
    );
}

#[test]
fn l40s_upgrade_keeps_every_vgpu_on_its_vf_with_the_new_type_ids() {
    upgrade_keeps_every_vgpu(
        "l40s-vfio-ready",
        "[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 2\n",
        &hold_vf,
        4343,
    );
}

/// A pinned type the new branch no longer offers (the sim's 580 has no A40-1A) is reported per
/// vGPU before anything is removed; the upgrade does not start.
#[test]
fn a_type_the_new_branch_does_not_offer_is_refused_before_any_change() {
    let s = Sim::new("a40x8-ready");
    let gpus = "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-1A\"\ncount = 2\n\n\
                [[gpus]]\nselect = \"0000:68:00.0\"\nvgpu_type = \"A40-12Q\"\ncount = 1\n";
    let r = setup(&s, &profile(OLD_ZIP, gpus));
    assert_eq!(r.code, 0, "{r:?}");
    let zip = new_zip(&s);
    let hash = s.hash();
    let r = setup(&s, &profile(&zip, gpus));
    assert_eq!(r.code, 2, "{r:?}");
    let pinned = pins(&s);
    let one_a: Vec<&String> = pinned
        .iter()
        .filter(|(_, (_, t, _))| t.ends_with("A40-1A"))
        .map(|(u, _)| u)
        .collect();
    assert_eq!(one_a.len(), 2);
    for u in one_a {
        assert!(r.stderr.contains(&format!("vGPU {u} on ")), "{u}: {r:?}");
    }
    assert!(
        r.stderr
            .contains(&format!("A40-1A is not offered by driver {NEW}")),
        "{r:?}"
    );
    assert!(!r.stderr.contains("A40-12Q is not offered"), "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");
}

/// `vgpuctl driver install --profile P` does the same upgrade (the same plan and executor): the
/// same refusal while a vGPU is held, then the same steps up to the reboot checkpoint, whose
/// next command is setup's; restore at boot brings the vGPUs back, setup records the new ids.
#[test]
fn driver_install_upgrades_the_same_way() {
    let s = Sim::new("a40x8-ready");
    let gpus = "[[gpus]]\nselect = \"0000:6a:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 3\n";
    let r = setup(&s, &profile(OLD_ZIP, gpus));
    assert_eq!(r.code, 0, "{r:?}");
    let before = pins(&s);
    let zip = new_zip(&s);
    let p = profile(&zip, gpus);
    let install = |s: &Sim| s.run(&["driver", "install", "--profile", p.path().to_str().unwrap()]);

    let held = before.keys().next().unwrap().clone();
    hold_mdev(&s, &held, "db-02");
    let hash = s.hash();
    let r = install(&s);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("VM db-02 (pid 4242)"), "{r:?}");
    assert_eq!(s.hash(), hash, "nothing changed");
    release(&s, 4242);

    let r = install(&s);
    assert_eq!(r.code, 3, "{r:?}");
    for part in [
        "Remove 3 vGPU(s) for the driver upgrade 550.163.02 -> 580.105.06",
        "run: /usr/bin/nvidia-uninstall --silent",
        "Install the NVIDIA vGPU host driver 580.105.06",
        "Reboot, then run: ",
    ] {
        assert!(r.stdout.contains(part), "{part}: {r:?}");
    }
    assert!(
        r.stdout
            .contains(&format!("setup --profile {} --yes", p.path().display())),
        "{r:?}"
    );
    assert!(live(&s).is_empty());
    assert_eq!(pins(&s), before);
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert_eq!(live(&s), parents(&before), "restore at boot");
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");
    for (uuid, (_, _, id)) in pins(&s) {
        assert_ne!(id, before[&uuid].2, "{uuid}: the new branch's id is pinned");
    }
}

/// A driver vgpuctl cannot remove the way it was installed (no `nvidia-uninstall`, which a
/// `.run` install leaves, and no kept `.run` or package) stops the upgrade before any change,
/// saying what is missing.
#[test]
fn a_driver_without_its_uninstaller_is_refused_before_any_change() {
    let s = Sim::new("a40x8-ready");
    let gpus = "[[gpus]]\nselect = \"0000:6b:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 1\n";
    let r = setup(&s, &profile(OLD_ZIP, gpus));
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::remove_file(s.root().join("usr/bin/nvidia-uninstall")).unwrap();
    let zip = new_zip(&s);
    let hash = s.hash();
    let r = setup(&s, &profile(&zip, gpus));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("nothing says how it was installed")
            && r.stderr.contains("package manager")
            && r.stderr.contains("Nothing was changed"),
        "{r:?}"
    );
    assert_eq!(s.hash(), hash, "nothing changed");
    assert_eq!(live(&s).len(), 1);
}

/// MIG-backed vGPUs across an upgrade (a100-mig, mdev, MIG mode persistent): the GPU instances
/// go with the old driver and are made again from the pins' instance profiles at the boot, then
/// each vGPU with its UUID on its GPU, on the new branch's type id.
#[test]
fn mig_backed_vgpus_come_back_on_their_gpu_instances_after_the_upgrade() {
    let s = Sim::new("a100-mig-ready");
    let gpus = "[[gpus]]\nselect = \"all\"\nvgpu_type = \"A100D-2-20C\"\ncount = 3\n\n\
                [[gpus]]\nselect = \"all\"\nvgpu_type = \"A100D-1-10C\"\ncount = 1\n";
    let old = profile(OLD_ZIP, gpus);
    let runs = s.setup_to_end(old.path());
    assert_eq!(runs.last().unwrap().code, 0, "{runs:?}");
    let before = pins(&s);
    assert_eq!(before.len(), 8, "{before:?}");
    let zip = new_zip(&s);
    let p = profile(&zip, gpus);
    let r = setup(&s, &p);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(live(&s).is_empty(), "{r:?}");
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(s.read("sys/module/nvidia/version").trim(), NEW);
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");
    let after = pins(&s);
    assert_eq!(
        live(&s),
        parents(&before),
        "the same UUIDs on the same parents: {rb:?}"
    );
    for (uuid, (_, name, old_id)) in &before {
        assert_eq!(&after[uuid].1, name, "{uuid}");
        assert_ne!(&after[uuid].2, old_id, "{uuid}: the new branch's id");
    }
    let pinned = s.read("etc/vgpuctl/vgpus.toml");
    assert_eq!(
        pinned.matches("gi_profile = \"2g.20gb\"").count(),
        6,
        "{pinned}"
    );
}

/// A driver setup installed from the zip's package (the `.deb` on Ubuntu, the `.rpm` on Rocky)
/// is removed with apt-get / dnf by its package name for the upgrade (no `nvidia-uninstall` is
/// there: a package leaves none), then the new zip's package is installed; after the reboot the
/// vGPUs are back with their UUIDs on their VFs, and `uninstall --all` removes the new package.
fn upgrade_from_a_package(model: &str, gpus: &str, old_pkg: &str, new_pkg: &str, pm: &str) {
    let s = Sim::new(model);
    let name = |file: &str| -> String {
        if pm == "apt-get" {
            file.split('_').next().unwrap().to_string()
        } else {
            "NVIDIA-vGPU-rhel".to_string()
        }
    };
    add_host_package(&s.root().join(OLD_ZIP.trim_start_matches('/')), old_pkg);
    let old = profile(OLD_ZIP, gpus);
    let runs = s.setup_to_end(old.path());
    assert_eq!(runs.last().unwrap().code, 0);
    assert!(!s.exists("usr/bin/nvidia-uninstall"), "a package install");
    let before = pins(&s);
    assert_eq!(before.len(), 2);

    let zip = new_zip(&s);
    add_host_package(&s.root().join(zip.trim_start_matches('/')), new_pkg);
    let p = profile(&zip, gpus);
    let r = setup(&s, &p);
    assert_eq!(r.code, 3, "{r:?}");
    for part in [
        "Remove the NVIDIA vGPU host driver 550.163.02 the way it was installed".to_string(),
        format!("run: {pm} remove -y {}", name(old_pkg)),
        format!("Install the NVIDIA vGPU host driver {NEW}"),
    ] {
        assert!(r.stdout.contains(&part), "{part}: {r:?}");
    }
    let lib = |v: &str| format!("usr/lib/x86_64-linux-gnu/nvidia/libnvidia-sim-00.so.{v}");
    assert!(
        !s.exists(&lib("550.163.02")),
        "the old package's files are gone"
    );
    assert!(s.exists(&lib(NEW)), "the new package is installed");
    assert!(live(&s).is_empty());
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    assert_eq!(s.read("sys/module/nvidia/version").trim(), NEW);
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(live(&s), parents(&before), "the same UUIDs on the same VFs");
    // Both zips' packages are kept: `uninstall --all` removes the installed one, the new.
    let r = s.run(&["uninstall", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("{pm} remove -y {}", name(new_pkg))),
        "{r:?}"
    );
    assert!(!s.exists(&lib(NEW)), "{r:?}");
    assert!(!s.exists("usr/lib/systemd/system/nvidia-vgpu-mgr.service"));
}

#[test]
fn an_upgrade_from_a_deb_removes_it_with_apt() {
    upgrade_from_a_package(
        "a40x8",
        "[[gpus]]\nselect = \"0000:6b:00.0\"\nvgpu_type = \"A40-8Q\"\ncount = 2\n",
        "nvidia-vgpu-ubuntu-550_550.163.02_amd64.deb",
        &format!("nvidia-vgpu-ubuntu-580_{NEW}_amd64.deb"),
        "apt-get",
    );
}

#[test]
fn an_upgrade_from_an_rpm_removes_it_with_dnf() {
    upgrade_from_a_package(
        "rhel-a10",
        "[[gpus]]\nselect = \"0000:17:00.0\"\nvgpu_type = \"A10-6Q\"\ncount = 2\n",
        "NVIDIA-vGPU-rhel-9.4-550.163.02.x86_64.rpm",
        &format!("NVIDIA-vGPU-rhel-9.4-{NEW}.x86_64.rpm"),
        "dnf",
    );
}
