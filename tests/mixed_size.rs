//! Mixed-size (heterogeneous) mode (issue 15, recorded-behaviour.md §4): several `[[gpus]]`
//! entries selecting one GPU with different types run it in mixed-size mode, turned on after
//! SR-IOV and before the first vGPU; the refusals exit 2 with the field and change nothing.

mod common;
use common::*;

const DRIVER: &str = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";

/// The seed's two rc.local lines as a profile: A40-24A and 2 x A40-1B on 0000:e8:00.0, and an
/// equal-size neighbour.
fn mixed_profile(host_extra: &str, entries: &str) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[host]\nreboot = \"prompt\"\niommu = \"auto\"\n{host_extra}\n[driver]\npath = \"{DRIVER}\"\n\n{entries}"
    ))
}

const SEED_MIX: &str =
    "[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24A\"\ncount = 1\n\n\
[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-1B\"\ncount = 2\n\n\
[[gpus]]\nselect = \"0000:e7:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n";

fn types_on(s: &Sim, gpu: &str) -> Vec<String> {
    let j = s.json(&["status", "--json"]);
    let mut out: Vec<String> = j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["address"] == gpu)
        .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
        .map(|v| v["type"].as_str().unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

/// Whether the simulated driver holds `gpu` in mixed-size mode (its memory, the state file).
fn mixed_on(s: &Sim, gpu: &str) -> bool {
    let st: serde_json::Value = serde_json::from_str(&s.read(".vgpuctl-sim/state.json")).unwrap();
    st["mixed_size"]
        .as_array()
        .is_some_and(|a| a.iter().any(|g| g == gpu))
}

/// Fresh seed host to done across its reboots: the A40 at e8 holds A40-24A and 2 x A40-1B,
/// the one at e7 2 x A40-24Q; the dry run on the ready host shows the mixed-size step between
/// SR-IOV and the vGPUs, and the run does what it showed; a second run plans nothing.
#[test]
fn seed_mix_from_fresh_to_done_and_dry_run_equals_run() {
    let s = Sim::new("a40x8");
    let p = mixed_profile("", SEED_MIX);
    let runs = s.setup_to_end(p.path());
    let last = runs.last().unwrap();
    assert_eq!(last.code, 0, "{last:?}");
    assert_eq!(
        types_on(&s, "0000:e8:00.0"),
        ["NVIDIA A40-1B", "NVIDIA A40-1B", "NVIDIA A40-24A"],
        "{last:?}"
    );
    assert_eq!(
        types_on(&s, "0000:e7:00.0"),
        ["NVIDIA A40-24Q", "NVIDIA A40-24Q"]
    );
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");

    // On a ready host: the dry run names the step, in its place, and the run follows it.
    let s = Sim::new("a40x8-ready");
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let sriov = dry
        .stdout
        .find("sriov-manage -e 0000:e8:00.0")
        .expect("sriov step");
    let shm = dry
        .stdout
        .find("run: nvidia-smi vgpu -i 0000:e8:00.0 -shm 1")
        .unwrap_or_else(|| panic!("no mixed-size step: {}", dry.stdout));
    assert!(sriov < shm, "{}", dry.stdout);
    assert!(
        !dry.stdout.contains("-i 0000:e7:00.0 -shm"),
        "{}",
        dry.stdout
    );
    let run = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The run's steps are the dry run's, in the same order (titles).
    let titles = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let t = l.trim_start();
                let (n, rest) = t.split_once(". ")?;
                n.parse::<u32>().ok().map(|_| rest.to_string())
            })
            .collect()
    };
    let ran: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once("] "))
                .map(|(_, t)| t.to_string())
        })
        .collect();
    let shown = titles(&dry.stdout);
    assert!(!shown.is_empty(), "{}", dry.stdout);
    assert_eq!(
        ran[..shown.len().min(ran.len())],
        shown[..shown.len().min(ran.len())],
        "{run:?}"
    );
    assert!(
        ran.iter()
            .any(|t| t.starts_with("Turn on mixed-size mode on")),
        "{run:?}"
    );
    assert!(mixed_on(&s, "0000:e8:00.0"));
    assert!(!mixed_on(&s, "0000:e7:00.0"));
    assert_eq!(
        types_on(&s, "0000:e8:00.0"),
        ["NVIDIA A40-1B", "NVIDIA A40-1B", "NVIDIA A40-24A"]
    );
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert_eq!(pins.matches("A40-1B").count(), 2, "{pins}");
    assert_eq!(pins.matches("A40-24A").count(), 1, "{pins}");
}

fn refused(model: &str, host_extra: &str, entries: &str, expect: &[&str]) {
    let s = Sim::new(model);
    let p = mixed_profile(host_extra, entries);
    let before = s.hash();
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    let name = p.path().file_name().unwrap().to_str().unwrap();
    assert!(r.stderr.contains(name), "names the file: {r:?}");
    for e in expect {
        assert!(r.stderr.contains(e), "{e:?} in {r:?}");
    }
    assert_eq!(s.hash(), before, "the host changed: {r:?}");
}

#[test]
fn fixed_share_with_mixed_sizes_is_refused() {
    for model in ["a40x8", "a40x8-ready"] {
        refused(
            model,
            "scheduler = \"fixed-share\"",
            SEED_MIX,
            &["host.scheduler", "fixed-share", "mixed-size"],
        );
    }
}

#[test]
fn more_framebuffer_than_the_gpu_has_is_refused() {
    // 48Q takes the whole 48 GB A40; a 1B does not fit beside it.
    let over = "[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-48Q\"\ncount = 1\n\n\
[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-1B\"\ncount = 1\n";
    for model in ["a40x8", "a40x8-ready"] {
        refused(
            model,
            "",
            over,
            &["gpus[1].count", "49152 MiB", "MiB of framebuffer"],
        );
    }
}

#[test]
fn a_gpu_whose_driver_has_no_mixed_size_mode_is_refused() {
    // The simulated L4 stays in equal-size mode: its driver says so in nvidia-smi -q.
    let l4 = "[[gpus]]\nselect = \"all\"\nvgpu_type = \"L4-1B\"\ncount = 1\n\n\
[[gpus]]\nselect = \"all\"\nvgpu_type = \"L4-2Q\"\ncount = 1\n";
    refused(
        "proxmox-l4-ready",
        "",
        l4,
        &["gpus[1].select", "no mixed-size"],
    );
}

#[test]
fn one_type_twice_on_a_gpu_is_still_refused() {
    let twice = "[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-1B\"\ncount = 1\n\n\
[[gpus]]\nselect = \"A40\"\nvgpu_type = \"A40-1B\"\ncount = 1\n";
    refused(
        "a40x8-ready",
        "",
        twice,
        &["gpus[1].select", "already selected"],
    );
}

/// A GPU that already holds equal-size vGPUs cannot be switched (the driver refuses while a
/// vGPU exists): refused before any change, with what to do.
#[test]
fn mixed_sizes_on_a_gpu_holding_vgpus_in_equal_size_mode_are_refused() {
    let s = Sim::new("a40x8-ready");
    let one = mixed_profile(
        "",
        "[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24A\"\ncount = 1\n",
    );
    let r = s.run(&["setup", "--profile", one.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let p = mixed_profile("", SEED_MIX);
    let before = s.hash();
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("gpus[1].vgpu_type"), "{r:?}");
    assert!(r.stderr.contains("equal-size mode"), "{r:?}");
    assert_eq!(s.hash(), before);
}

/// (uuid, type, parent) of every vGPU on the host, from status --json.
fn devices(s: &Sim) -> Vec<(String, String, String)> {
    let j = s.json(&["status", "--json"]);
    let mut out: Vec<(String, String, String)> = j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
        .map(|v| {
            let f = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (f("uuid"), f("type"), f("parent"))
        })
        .collect();
    out.sort();
    out
}

/// Three simulated reboots bring every vGPU of a mixed-size GPU back with its UUID (and, on
/// vendor-specific VFIO, its VF): the boot-time restore turns the mode on after SR-IOV and
/// before the first vGPU, since the mode does not survive a reboot.
#[test]
fn three_reboots_bring_every_mixed_size_vgpu_back() {
    let l40s = "[[gpus]]\nselect = \"0000:01:00.0\"\nvgpu_type = \"L40S-12Q\"\ncount = 1\n\n\
[[gpus]]\nselect = \"0000:01:00.0\"\nvgpu_type = \"L40S-1B\"\ncount = 2\n";
    for (model, entries, gpu, n) in [
        ("a40x8-ready", SEED_MIX, "0000:e8:00.0", 5),
        ("l40s-vfio-ready", l40s, "0000:01:00.0", 3),
    ] {
        let s = Sim::new(model);
        let p = mixed_profile("", entries);
        let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
        assert_eq!(r.code, 0, "{model}: {r:?}");
        let made = devices(&s);
        assert_eq!(made.len(), n, "{model}: {made:?}");
        let pins = s.read("etc/vgpuctl/vgpus.toml");
        assert!(
            pins.contains(&format!("mixed_size = [\"{gpu}\"]")),
            "{model}: {pins}"
        );
        for boot in 1..=3 {
            let rb = s.run(&["sim", "reboot"]);
            assert_eq!(rb.code, 0, "{rb:?}");
            let report: serde_json::Value =
                serde_json::from_str(&s.read("run/vgpuctl/restore.json")).unwrap();
            assert_eq!(report["ok"], true, "{model} boot {boot}: {report}");
            assert_eq!(devices(&s), made, "{model} after reboot {boot}");
            assert!(mixed_on(&s, gpu), "{model} boot {boot}");
        }
        // The restore's own dry run after a reboot without the unit shows the step in order.
        s.run(&["sim", "reboot"]);
        std::fs::remove_file(
            s.root()
                .join("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"),
        )
        .unwrap();
        s.run(&["sim", "reboot"]);
        let dry = s.run(&["restore", "--dry-run"]);
        let lane = dry
            .stdout
            .find(&format!("GPU {gpu} ("))
            .unwrap_or_else(|| panic!("{model}: {dry:?}"));
        let text = &dry.stdout[lane..];
        let text = &text[..text[1..].find("\n  GPU ").map_or(text.len(), |e| e + 1)];
        let shm = text
            .find(&format!("run: nvidia-smi vgpu -i {gpu} -shm 1"))
            .unwrap_or_else(|| panic!("{model}: {dry:?}"));
        let sriov = text.find("sriov-manage -e").expect("sriov step");
        let write = text.find("write \"").expect("a write");
        assert!(sriov < shm && shm < write, "{model}: {text}");
    }
}

/// Two types on one GPU in rc.local on a driver whose GPU has no mixed-size mode (the simulated
/// L4): the import says why, restores in equal-size mode, and the first type is made.
#[test]
fn import_without_mixed_size_mode_says_why_one_type_is_not_made() {
    let s = Sim::new("proxmox-l4-ready");
    let vf = |f: &str| format!("/sys/bus/pci/devices/0000:01:00.{f}/nvidia/current_vgpu_type");
    // L4-1B is id 930, L4-2Q id 933 in the simulated driver.
    let rc = format!(
        "#!/bin/sh -e\n/usr/lib/nvidia/sriov-manage -e 0000:01:00.0\necho 930 > {}\necho 933 > {}\nexit 0\n",
        vf("4"),
        vf("5")
    );
    s.write("etc/rc.local", &rc);
    let r = s.run(&["import"]);
    // The second vGPU fails (exit 1), with the reason and the note saying why.
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("needs mixed-size mode, and its driver reports none"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("0000:01:00.5 does not offer NVIDIA L4-2Q"),
        "{r:?}"
    );
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert!(!pins.contains("mixed_size"), "{pins}");
    assert!(!r.stdout.contains("-shm 1"), "{r:?}");
    let live = devices(&s);
    assert_eq!(live.len(), 1, "{live:?} {r:?}");
    assert_eq!(live[0].1, "NVIDIA L4-1B", "{live:?}");
}

/// The finding `check --json` gives for `id`: (severity, message, fix).
fn finding(s: &Sim, id: &str) -> (String, String, String) {
    let j = s.json(&["check", "--json"]);
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id}: {j}"));
    let g = |k: &str| f[k].as_str().unwrap_or("").to_string();
    (g("severity"), g("message"), g("fix"))
}

/// check reports each GPU's mixed-size capability and state, and the fix when a GPU pinned in
/// the mode has it off (after a boot without the restore unit); restore then turns it on.
#[test]
fn check_reports_mixed_size_capability_and_state_with_a_fix() {
    let l4 = Sim::new("proxmox-l4-ready");
    let (sev, msg, _) = finding(&l4, "mixed_size.0000:01:00.0");
    assert_eq!(sev, "ok");
    assert!(msg.contains("no mixed-size mode"), "{msg}");

    let s = Sim::new("a40x8-ready");
    let (sev, msg, _) = finding(&s, "mixed_size.0000:e8:00.0");
    assert_eq!(sev, "ok");
    assert!(msg.contains("mixed-size mode available, off"), "{msg}");
    let p = mixed_profile("", SEED_MIX);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (sev, msg, _) = finding(&s, "mixed_size.0000:e8:00.0");
    assert_eq!(
        (sev.as_str(), msg.contains("mixed-size mode is on")),
        ("ok", true),
        "{msg}"
    );
    let (_, msg, _) = finding(&s, "mixed_size.0000:e7:00.0");
    assert!(msg.contains("available, off"), "{msg}");

    std::fs::remove_file(
        s.root()
            .join("etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service"),
    )
    .unwrap();
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let (sev, msg, fix) = finding(&s, "mixed_size.0000:e8:00.0");
    assert_eq!(sev, "warn", "{msg}");
    assert!(msg.contains("the mode is off now"), "{msg}");
    assert!(fix.contains("vgpuctl restore"), "{fix}");
    let r = s.run(&["restore"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(mixed_on(&s, "0000:e8:00.0"));
    let (sev, _, _) = finding(&s, "mixed_size.0000:e8:00.0");
    assert_eq!(sev, "ok");
}

/// export captures a mixed-size GPU as one entry per type, and setup on another host from the
/// exported profile makes the same vGPUs (types and UUIDs) in mixed-size mode.
#[test]
fn export_round_trips_a_mixed_size_gpu() {
    let s = Sim::new("a40x8-ready");
    let p = mixed_profile("", SEED_MIX);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let made = devices(&s);
    let e = s.run(&["export"]);
    assert_eq!(e.code, 0, "{e:?}");
    let t: toml::Value = toml::from_str(&e.stdout).unwrap();
    let on_e8: Vec<&str> = t["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["select"].as_str() == Some("0000:e8:00.0"))
        .map(|g| g["vgpu_type"].as_str().unwrap())
        .collect();
    assert_eq!(on_e8.len(), 2, "{}", e.stdout);
    assert!(
        on_e8.contains(&"A40-24A") && on_e8.contains(&"A40-1B"),
        "{on_e8:?}"
    );

    let other = Sim::new("a40x8-ready");
    let exported = profile_file(&e.stdout);
    let r = other.run(&[
        "setup",
        "--profile",
        exported.path().to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let again: Vec<(String, String)> = devices(&other)
        .into_iter()
        .map(|(u, t, _)| (u, t))
        .collect();
    let want: Vec<(String, String)> = made.into_iter().map(|(u, t, _)| (u, t)).collect();
    assert_eq!(again, want);
    assert!(mixed_on(&other, "0000:e8:00.0"));
}

/// A vGPU of a mixed-size GPU removed by hand is made again by the next setup with its pinned
/// UUID: the other entry's pins on that GPU are not unpinned (which would need consent).
#[test]
fn a_lost_vgpu_of_a_mixed_size_gpu_is_made_again_without_unpinning_the_other_type() {
    let s = Sim::new("a40x8-ready");
    let p = mixed_profile("", SEED_MIX);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let made = devices(&s);
    let (lost, _, _) = made
        .iter()
        .find(|(_, t, _)| t == "NVIDIA A40-1B")
        .unwrap()
        .clone();
    // As an operator's `echo 1 > .../remove` does, through the simulated kernel.
    vgpuctl_sim::attach(s.root())
        .unwrap()
        .write_attr(&format!("sys/bus/mdev/devices/{lost}/remove"), "1")
        .unwrap();
    assert_eq!(devices(&s).len(), made.len() - 1);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        devices(&s).iter().map(|d| (&d.0, &d.1)).collect::<Vec<_>>(),
        made.iter().map(|d| (&d.0, &d.1)).collect::<Vec<_>>()
    );
}
