//! Several GPU instance profiles on one MIG GPU (issue 15): stackhpc's recorded mix, 3 x
//! A100D-2-20C + 1 x A100D-1-10C on one A100 80GB, from the ready host to done across the MIG
//! reboot and three restores; mixes that do not fit, or that put a time-sliced type next to a
//! MIG-backed one, refused before any change; status showing each vGPU's GPU instance; and the
//! profile export round-tripping onto a fresh host of the same model.

mod common;
use common::*;

const STACKHPC: &str = "[host]\nreboot = \"prompt\"\n\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A100D-1-10C\"\ncount = 1\n\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A100D-2-20C\"\ncount = 3\n";

/// Where `what` first appears in `text`, asserted present.
fn at(text: &str, what: &str) -> usize {
    text.find(what)
        .unwrap_or_else(|| panic!("{what:?} missing from:\n{text}"))
}

/// Per GPU, the sorted (type, GPU instance profile) of its vGPUs, from status --json.
fn per_gpu(s: &Sim) -> Vec<(String, Vec<(String, String)>)> {
    let st = s.json(&["status", "--json"]);
    st["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut v: Vec<(String, String)> = g["vgpus"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["type"].as_str().unwrap_or("").to_string(),
                        v["gpu_instance"]["profile"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect();
            v.sort();
            (g["address"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The stackhpc mix (written 1g first, as an operator might): the GPU instances are created
/// larger first (three 2g.20gb, then the 1g.10gb; the other order leaves no room for the third
/// 2g.20gb), each vGPU on an instance of its profile; the pins carry the profile and do not
/// mark the GPU mixed-size; three reboots bring every vGPU back with its UUID on its VF.
#[test]
fn stackhpc_mix_is_set_up_across_the_mig_reboot_and_restored_three_times() {
    let s = Sim::new("a100-mig-ready");
    let p = profile_file(STACKHPC);
    let runs = s.setup_to_end(p.path());
    assert_eq!(runs.len(), 2, "the MIG reboot, then done: {runs:?}");
    assert_eq!(runs[0].code, 3, "{runs:?}");
    let out: String = runs.iter().map(|r| r.stdout.as_str()).collect();
    let two = at(&out, "] Create 3 GPU instance(s) of 2g.20gb on");
    let one = at(&out, "] Create 1 GPU instance(s) of 1g.10gb on");
    let vgpus = at(&out, "] Create A100D-1-10C + A100D-2-20C vGPUs on");
    assert!(two < one && one < vgpus, "larger instances first: {out}");
    assert!(!out.contains("mixed-size"), "{out}");

    let before = s.live_vgpus();
    assert_eq!(before.len(), 8, "{before:?}");
    let gpus = per_gpu(&s);
    assert_eq!(gpus.len(), 2);
    for (addr, v) in &gpus {
        let want = [
            ("NVIDIA A100D-1-10C", "1g.10gb"),
            ("NVIDIA A100D-2-20C", "2g.20gb"),
            ("NVIDIA A100D-2-20C", "2g.20gb"),
            ("NVIDIA A100D-2-20C", "2g.20gb"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(v.as_slice(), want.as_slice(), "{addr}");
    }
    let pins = s.read("etc/vgpuctl/vgpus.toml");
    assert_eq!(
        pins.matches("gi_profile = \"2g.20gb\"").count(),
        6,
        "{pins}"
    );
    assert_eq!(
        pins.matches("gi_profile = \"1g.10gb\"").count(),
        2,
        "{pins}"
    );
    assert!(!pins.contains("mixed_size = [\""), "{pins}");
    // check speaks of GPU instances on a MIG GPU, not of "one vGPU type per GPU".
    let c = s.run(&["check"]);
    assert!(!c.stdout.contains("one vGPU type per GPU"), "{c:?}");
    assert!(
        c.stdout
            .contains("in MIG mode, vGPUs of different sizes sit on GPU instances"),
        "{c:?}"
    );

    let status = s.json(&["status", "--json"]);
    for n in 1..=3 {
        assert_eq!(s.run(&["sim", "reboot"]).code, 0);
        assert_eq!(s.live_vgpus(), before, "boot {n}: their UUIDs");
        let rep: serde_json::Value =
            serde_json::from_str(&s.read("run/vgpuctl/restore.json")).unwrap();
        assert_eq!(rep["ok"], true, "boot {n}: {rep}");
        let again = s.json(&["status", "--json"]);
        assert_eq!(
            again["gpus"], status["gpus"],
            "boot {n}: same VFs, same instances"
        );
    }
    // The boot-time restore creates the instances larger first too.
    let unit = "etc/systemd/system/multi-user.target.wants/vgpuctl-restore.service";
    std::fs::remove_file(s.root().join(unit)).unwrap();
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let dry = s.run(&["restore", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout
            .contains("-cgi 2g.20gb,2g.20gb,2g.20gb,1g.10gb -C"),
        "{}",
        dry.stdout
    );
}

/// Refused with exit 2, the field named and the reason, the tree unchanged, on the fresh host
/// (no driver yet: the catalog's placement rules) and on the ready one: a mix whose instances
/// take eight slices but have no placement together (three 2g.20gb at slices 0, 2, 4 leave
/// slice 6 for one 1g.10gb; slice 7 starts no 1g), and a MIG-backed type next to a
/// time-sliced one on one GPU.
#[test]
fn mixes_that_do_not_fit_or_mix_time_sliced_types_are_refused_before_any_change() {
    for model in ["a100-mig", "a100-mig-ready"] {
        let s = Sim::new(model);
        let before = tree_hash(s.root());
        let base = STACKHPC.replacen(
            "\n\n[[gpus]]",
            "\niommu = \"auto\"\n\n[driver]\npath = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n\n[[gpus]]",
            1,
        );
        for (text, field, why) in [
            (
                base.replacen("count = 1\n", "count = 2\n", 1),
                "gpus[1].count: ",
                "2 x A100D-1-10C + 3 x A100D-2-20C on A100 PCIe 80GB 0000:17:00.0 do not fit: no placement",
            ),
            // Fits with the 3g at slice 4, but the driver picks the 3g's placement itself and
            // may take slice 0 (the simulator does): refused rather than failing halfway.
            (
                base.replacen("A100D-1-10C", "A100D-3-40C", 1)
                    .replacen("count = 3\n", "count = 2\n", 1),
                "gpus[1].count: ",
                "only in some placements, and the driver picks each new instance's placement \
                 itself: created larger first, it may put 3g.40gb at slice 0",
            ),
            (
                base.replace("A100D-1-10C", "A100D-20C"),
                "gpus[1].vgpu_type: ",
                "gets the MIG-backed type A100D-2-20C (gpus[1]) and the time-sliced type A100D-20C (gpus[0])",
            ),
        ] {
            let p = profile_file(&text);
            let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
            assert_eq!(r.code, 2, "{model}: {r:?}");
            assert!(r.stderr.contains(field), "{model}: {r:?}");
            assert!(r.stderr.contains(why), "{model}: {r:?}");
            assert_eq!(tree_hash(s.root()), before, "{model}: the host was changed");
        }
    }
}

/// Status, text: the GPU's MIG mode and instances, each vGPU's instance profile (and its id
/// where one instance of that profile is there).
#[test]
fn status_text_shows_mig_mode_the_instances_and_each_vgpus_instance() {
    let s = Sim::new("a100-mig-ready");
    let p = profile_file(STACKHPC);
    s.setup_to_end(p.path());
    let st = s.run(&["status"]);
    assert_eq!(st.code, 0, "{st:?}");
    let t = &st.stdout;
    assert_eq!(t.matches("  vGPUs 4  MIG mode on\n").count(), 2, "{t}");
    // The driver's ids (1g.10gb at slice 6 is id 13; 2g.20gb at 4, 2, 0 are 5, 4, 3).
    assert_eq!(
        t.matches("  GPU instances: 1g.10gb id 13; 2g.20gb ids 5, 4, 3\n")
            .count(),
        2,
        "{t}"
    );
    assert_eq!(t.matches("  GPU instance 13 (1g.10gb)").count(), 2, "{t}");
    assert_eq!(t.matches("  GPU instance of 2g.20gb").count(), 6, "{t}");
}

/// On vendor-specific VFIO (580 branch) each VF names its vGPU's GPU instance
/// (`nvidia/gpu_instance_id`): status --json gives every vGPU its instance id, one of the
/// GPU's, never two vGPUs the same.
#[test]
fn status_json_gives_each_vfio_vgpu_its_instance_id() {
    let s = Sim::new("h200x8-vfio-ready");
    let p = profile_file(
        "[[gpus]]\nselect = \"all\"\nvgpu_type = \"H200X-1-18C\"\ncount = 1\n\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"H200X-2-35C\"\ncount = 3\n",
    );
    s.setup_to_end(p.path());
    let st = s.json(&["status", "--json"]);
    let gpus = st["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    for g in gpus {
        assert_eq!(g["mig"]["current"], true, "{g}");
        let listed: Vec<(String, u64)> = g["mig"]["gpu_instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["profile"].as_str().unwrap().to_string(),
                    i["id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(listed.len(), 4, "{g}");
        let mut seen = Vec::new();
        for v in g["vgpus"].as_array().unwrap() {
            let gi = &v["gpu_instance"];
            let pair = (
                gi["profile"].as_str().unwrap().to_string(),
                gi["id"].as_u64().expect("the VF reports it"),
            );
            assert!(listed.contains(&pair), "{pair:?} not in {listed:?}");
            assert!(!seen.contains(&pair), "two vGPUs on {pair:?}");
            seen.push(pair);
        }
        assert_eq!(seen.len(), 4, "{g}");
    }
}

/// `export` of a finished host, then `setup --profile` of it on a fresh host of the same
/// model: the same vGPUs (UUIDs, types, VFs, GPU instance profiles; mixed-size mode where it
/// ran; on vendor-specific VFIO each on its VF and its instance id) by status, text and JSON;
/// and the new host restores them at boot.
#[test]
fn export_round_trips_mig_backed_and_mixed_size_gpus() {
    let seed_mix = "[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-24A\"\ncount = 1\n\n[[gpus]]\nselect = \"0000:e8:00.0\"\nvgpu_type = \"A40-1B\"\ncount = 2\n\n[[gpus]]\nselect = \"0000:e7:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 2\n";
    let h200 = STACKHPC
        .replace("A100D-1-10C", "H200X-1-18C")
        .replace("A100D-2-20C", "H200X-2-35C");
    for (model, text) in [
        ("a100-mig-ready", STACKHPC),
        ("h200x8-vfio-ready", h200.as_str()),
        ("a40x8-ready", seed_mix),
    ] {
        let old = Sim::new(model);
        let p = profile_file(text);
        old.setup_to_end(p.path());
        let ex = old.run(&["export"]);
        assert_eq!(ex.code, 0, "{model}: {ex:?}");
        let exported = profile_file(&ex.stdout);
        let new = Sim::new(model);
        let runs = new.setup_to_end(exported.path());
        assert_eq!(runs.last().unwrap().code, 0, "{model}: {runs:?}");
        let (a, b) = (old.run(&["status"]).stdout, new.run(&["status"]).stdout);
        assert_eq!(b, a, "{model}: status differs");
        let (ja, jb) = (
            old.json(&["status", "--json"]),
            new.json(&["status", "--json"]),
        );
        assert_eq!(jb["gpus"], ja["gpus"], "{model}");
        if model.starts_with("a40") {
            assert!(a.contains("  vGPUs 3  mixed-size mode\n"), "{a}");
            let e8 = ja["gpus"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["address"] == "0000:e8:00.0")
                .unwrap();
            assert_eq!(e8["mixed_size"], true, "{e8}");
        } else {
            // One entry per GPU and type, and each pin with its profile.
            let gpus = ja["gpus"].as_array().unwrap().len();
            assert_eq!(
                ex.stdout.matches("[[gpus]]").count(),
                2 * gpus,
                "{}",
                ex.stdout
            );
            assert_eq!(
                ex.stdout.matches("gi_profile = ").count(),
                4 * gpus,
                "{}",
                ex.stdout
            );
        }
        let before = new.live_vgpus();
        assert_eq!(new.run(&["sim", "reboot"]).code, 0);
        assert_eq!(
            new.live_vgpus(),
            before,
            "{model}: restored on the new host"
        );
        assert_eq!(new.run(&["status"]).stdout, a, "{model}: after its boot");
    }
}

/// A setup of the stackhpc mix killed at each GPU instance step (before `-cgi`, and after it
/// before the read-back; two profiles on each of two GPUs) or at its first vGPU converges when
/// run again: the instances a killed run made count, the missing ones still fit next to them,
/// and every vGPU is made once, pinned with its profile, and restored at boot.
#[test]
fn a_killed_setup_of_the_mix_converges_when_run_again() {
    let to_reboot = |s: &Sim, p: &std::path::Path| {
        let r = s.run(&["setup", "--profile", p.to_str().unwrap(), "--yes"]);
        assert_eq!(r.code, 3, "{r:?}");
        assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    };
    let s = Sim::new("a100-mig-ready");
    let p = profile_file(STACKHPC);
    to_reboot(&s, p.path());
    let count = tempfile::NamedTempFile::new().unwrap();
    let r = s.run_env(
        &["setup", "--profile", p.path().to_str().unwrap(), "--yes"],
        &[("VGPUCTL_FAULT_COUNT", count.path().to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let points: Vec<(usize, String)> = std::fs::read_to_string(count.path())
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect();
    let mut kills: Vec<usize> = points
        .iter()
        .filter(|(_, l)| l.ends_with(" gpu-instances") || l.ends_with(" gpu-instances-made"))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(kills.len(), 8, "two profiles on two GPUs: {points:?}");
    kills.extend(
        points
            .iter()
            .find(|(_, l)| l.contains("vgpu-create"))
            .map(|(n, _)| *n),
    );
    for k in kills {
        let s = Sim::new("a100-mig-ready");
        let p = profile_file(STACKHPC);
        to_reboot(&s, p.path());
        let killed = s.run_env(
            &["setup", "--profile", p.path().to_str().unwrap(), "--yes"],
            &[("VGPUCTL_FAULT_KILL_AT", &k.to_string())],
        );
        assert_ne!(killed.code, 0, "kill at {k}: {killed:?}");
        let runs = s.setup_to_end(p.path());
        assert_eq!(runs.last().unwrap().code, 0, "kill at {k}: {runs:?}");
        let live = s.live_vgpus();
        assert_eq!(live.len(), 8, "kill at {k}: {live:?}");
        let pins = s.read("etc/vgpuctl/vgpus.toml");
        assert_eq!(
            pins.matches("gi_profile = \"2g.20gb\"").count(),
            6,
            "{pins}"
        );
        assert_eq!(
            pins.matches("gi_profile = \"1g.10gb\"").count(),
            2,
            "{pins}"
        );
        assert_eq!(s.run(&["sim", "reboot"]).code, 0);
        assert_eq!(s.live_vgpus(), live, "kill at {k}: restored");
    }
}
