//! The vGPU scheduling policy (`[host] scheduler`, `timeslice_ms`): written as the nvidia
//! module's `RmPVMRL` in modprobe.d, merged into an existing `NVreg_RegistryDwords`, in effect
//! after the module loads again (a reboot checkpoint on a host whose driver is loaded).

mod common;
use common::*;

fn a40_profile(host_extra: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(repo().join("profiles/a40.toml"))
        .unwrap()
        .replace(
            "iommu = \"auto\"           # auto | skip",
            &format!("iommu = \"auto\"\n{host_extra}"),
        );
    assert!(text.contains(host_extra));
    profile_file(&text)
}

const EQUAL_2MS: &str = "scheduler = \"equal-share\"\ntimeslice_ms = 2";

/// On a ready A40 host with another tuning option in modprobe.d: setup merges RmPVMRL into
/// that setting (no second `NVreg_RegistryDwords`), stops at a reboot checkpoint since the
/// loaded driver runs best effort, and after the reboot the driver runs equal share with 2 ms,
/// the vGPUs are made, check reports the policy, and a second setup plans nothing.
#[test]
fn setup_merges_the_policy_and_reboots_into_it() {
    let s = Sim::new("a40x8-ready");
    let tuning = "# site tuning\noptions nvidia NVreg_RegistryDwords=\"PerfLevelSrc=0x2222\"\n";
    s.write("etc/modprobe.d/nvidia.conf", tuning);
    let p = a40_profile(EQUAL_2MS);
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        dry.stdout
            .contains("equal-share, 2 ms time slice (RmPVMRL=0x00020001)"),
        "{dry:?}"
    );
    let runs = s.setup_to_end(p.path());
    assert_eq!(
        runs[0].code, 3,
        "the loaded driver runs best effort: {:?}",
        runs[0]
    );
    assert!(
        runs[0]
            .stdout
            .contains("takes effect when the module loads again"),
        "{:?}",
        runs[0]
    );
    let conf = s.read("etc/modprobe.d/nvidia.conf");
    assert_eq!(
        conf,
        "# site tuning\noptions nvidia NVreg_RegistryDwords=\"PerfLevelSrc=0x2222;RmPVMRL=0x00020001\"\n"
    );
    assert!(!s.exists("etc/modprobe.d/nvidia-vgpu-scheduler.conf"));
    assert!(s.exists("var/lib/vgpuctl/backups/etc/modprobe.d/nvidia.conf"));
    // The module loaded again with it.
    let params = s.read("proc/driver/nvidia/params");
    assert!(
        params.contains("RegistryDwords: \"PerfLevelSrc=0x2222;RmPVMRL=0x00020001\""),
        "{params}"
    );
    assert_eq!(s.live_vgpus().len(), 16);
    let c = s.run(&["check"]);
    assert!(
        c.stdout.contains(
            "vGPU scheduler: equal-share, 2 ms time slice (RmPVMRL=0x00020001) (loaded driver)"
        ),
        "{c:?}"
    );
    let st = s.run(&["status"]);
    assert!(
        st.stdout
            .contains("vGPU scheduler: equal-share, 2 ms time slice (RmPVMRL=0x00020001)\n"),
        "{st:?}"
    );
    let j = s.json(&["status", "--json"]);
    assert_eq!(
        j["scheduler"], "equal-share, 2 ms time slice (RmPVMRL=0x00020001)",
        "{j}"
    );
    // A second run plans nothing and changes no file.
    let before = s.hash();
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
    assert_eq!(s.hash(), before);
    // Someone sets fixed share by hand: check names the profile's policy and the fix.
    s.write(
        "etc/modprobe.d/nvidia.conf",
        "options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x11\"\n",
    );
    let c = s.run(&["check"]);
    assert!(
        c.stdout.contains("the profile asks equal-share, 2 ms"),
        "{c:?}"
    );
    assert!(c.stdout.contains("sets RmPVMRL=0x00020001"), "{c:?}");
}

/// With no setting anywhere, vgpuctl's own file holds it; a fleet's fixed share (0x11) written
/// by someone else is already what a fixed-share profile asks: nothing to write.
#[test]
fn own_file_when_none_and_nothing_when_already_set() {
    let s = Sim::new("a40x8-ready");
    let p = a40_profile("scheduler = \"equal-share\"\ntimeslice_ms = 2");
    s.setup_to_end(p.path());
    assert_eq!(
        s.read("etc/modprobe.d/nvidia-vgpu-scheduler.conf")
            .lines()
            .last(),
        Some("options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x00020001\"")
    );

    let s = Sim::new("a40x8-ready");
    s.write(
        "etc/modprobe.d/nvidia.conf",
        "options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x11\"\n",
    );
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let p = a40_profile("scheduler = \"fixed-share\"");
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!dry.stdout.contains("RmPVMRL"), "{dry:?}");
    assert!(!dry.stdout.contains("vGPU scheduler"), "{dry:?}");
}

/// check names the loaded policy, and the reboot when modprobe.d gives another at the next load.
#[test]
fn check_reports_the_loaded_policy_and_a_pending_one() {
    let s = Sim::new("a40x8-ready");
    let c = s.run(&["check"]);
    assert!(
        c.stdout
            .contains("vGPU scheduler: best-effort (RmPVMRL=0x00) (loaded driver)"),
        "{c:?}"
    );
    s.write(
        "etc/modprobe.d/nvidia.conf",
        "options nvidia NVreg_RegistryDwords=\"RmPVMRL=0x11\"\n",
    );
    let c = s.run(&["check"]);
    assert!(
        c.stdout.contains(
            "the loaded driver runs best-effort (RmPVMRL=0x00); modprobe.d gives fixed-share"
        ),
        "{c:?}"
    );
    assert!(c.stdout.contains("fix: reboot"), "{c:?}");
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let c = s.run(&["check"]);
    assert!(
        c.stdout.contains("vGPU scheduler: fixed-share, the driver's default time slice (RmPVMRL=0x11) (loaded driver)"),
        "{c:?}"
    );
}

/// On a fresh host (IOMMU, nouveau, driver install ahead) the option is written before the
/// driver's first load, which then runs the policy: no extra reboot for it.
#[test]
fn a_fresh_host_loads_the_driver_with_the_policy() {
    let s = Sim::new("a40x8");
    let p = a40_profile("scheduler = \"fixed-share\"\ntimeslice_ms = 24");
    let runs = s.setup_to_end(p.path());
    assert_eq!(
        runs.len(),
        2,
        "one reboot, as without a scheduler: {runs:?}"
    );
    assert!(
        s.read("proc/driver/nvidia/params")
            .contains("RegistryDwords: \"RmPVMRL=0x00180011\""),
        "{}",
        s.read("proc/driver/nvidia/params")
    );
    assert_eq!(s.live_vgpus().len(), 16);
}

/// Bad values exit 2 naming the file, line and field, with nothing changed.
#[test]
fn bad_values_change_nothing_and_exit_2() {
    let s = Sim::new("a40x8-ready");
    let before = s.hash();
    for (extra, line, why) in [
        ("scheduler = \"round-robin\"", 8, "host.scheduler"),
        (
            "scheduler = \"equal-share\"\ntimeslice_ms = 31",
            9,
            "outside 1-30",
        ),
        (
            "scheduler = \"fixed-share\"\ntimeslice_ms = 0",
            9,
            "outside 1-30",
        ),
        (
            "scheduler = \"best-effort\"\ntimeslice_ms = 2",
            9,
            "needs scheduler",
        ),
        ("timeslice_ms = 4", 8, "set scheduler too"),
    ] {
        let p = a40_profile(extra);
        let path = p.path().to_str().unwrap();
        let r = s.run(&["setup", "--profile", path, "--yes"]);
        assert_eq!(r.code, 2, "{extra}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{path}:{line}:")),
            "{extra}: {r:?}"
        );
        assert!(r.stderr.contains(why), "{extra}: {r:?}");
        assert_eq!(s.hash(), before, "{extra}: changed the host");
    }
    // A setting in effect that cannot be rewritten safely (an unmatched quote) is refused too.
    s.write(
        "etc/modprobe.d/nvidia.conf",
        "options nvidia NVreg_RegistryDwords=\"PerfLevelSrc=0x2222\n",
    );
    let before = s.hash();
    let p = a40_profile(EQUAL_2MS);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("/etc/modprobe.d/nvidia.conf line 1: the NVreg_RegistryDwords value has an unmatched quote"),
        "{r:?}"
    );
    assert_eq!(s.hash(), before, "changed the host");
}
