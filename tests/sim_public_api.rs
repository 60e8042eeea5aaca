//! The simulator through the public API the CLI uses: open, detect, run, write, reboot, with
//! the binary's wiring (installer/simulator.rs) that makes it a vgpuctl `Host`.

#[path = "../installer/simulator.rs"]
mod simulator;

use vgpuctl::catalog;
use vgpuctl::host::{Cmd, Reach};
use vgpuctl_sim as sim;

#[test]
fn open_write_reboot_through_the_public_api() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let host = simulator::open(&root, "a40x8-ready", &["create_ms=1".to_string()]).unwrap();
    assert_eq!(host.reach(), Reach::Simulated);
    assert_eq!(sim::detect(&root).as_deref(), Some("a40x8-ready"));
    assert_eq!(sim::detect(dir.path()), None);
    assert_eq!(sim::MODELS.len(), 10);
    assert!(sim::OPTS.iter().any(|(k, _)| *k == "vf_delay_ms"));

    let out = host
        .run(&Cmd::new("/usr/lib/nvidia/sriov-manage").args(["-e", "0000:e8:00.0"]))
        .unwrap();
    assert!(out.success());
    let t = catalog::find("A40", "A40-24A").unwrap();
    // The seed's second vGPU, on the VF whose type directory is named vfio-pci-575.
    let create = format!(
        "sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-{}/create",
        t.id
    );
    // sriov-manage returns with the VFs there; each VF's type group appears shortly after
    // (recorded-behaviour.md §2), so the create attribute is waited for, bounded.
    let start = std::time::Instant::now();
    while !host.exists(&create) && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    host.write_attr(&create, "242e5ea7-90e2-4d6e-afeb-a0b9a656c108")
        .unwrap();
    assert_eq!(
        host.list("sys/bus/mdev/devices"),
        vec!["242e5ea7-90e2-4d6e-afeb-a0b9a656c108".to_string()]
    );

    // Reopening the root (a new process would) sees the same machine.
    let again = simulator::open(&root, "a40x8", &[]).unwrap();
    assert_eq!(again.list("sys/bus/mdev/devices").len(), 1);
    assert!(sim::open(&root, "t4x2", &[]).is_err());

    std::fs::create_dir_all(root.join("run/vgpuctl")).unwrap();
    let report = sim::reboot(&sim::attach(again.root()).unwrap(), &[]).unwrap();
    assert!(report.units.is_empty());
    assert!(report.cmdline.contains("intel_iommu=on iommu=pt"));
    assert!(report.to_string().contains("simulated reboot"));
    assert!(host.list("sys/bus/mdev/devices").is_empty());
    assert!(!host.exists("run/vgpuctl"), "/run is a tmpfs");
}
