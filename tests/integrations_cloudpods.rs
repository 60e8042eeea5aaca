//! CloudPods end to end on the simulator: setup and restore keep `nvidia_vgpu_pfs:` in a
//! realistic host.conf equal to the parents of the pinned vGPUs, keeping everything else.

mod common;
mod integrations_util;

use common::*;
use integrations_util::*;

/// A host agent configuration as a CloudPods install leaves it, with the seed's hand-written
/// list (PF and VFs of the GPU at 67:00.0) and an operator's comment on one entry.
const HOST_CONF: &str = "\
# CloudPods host agent (written by ocboot, edited by hand)
region: region0
zone: zone0
address: 10.127.100.2
port: 8885
auth_uri: https://10.127.100.2:30357/v3
admin_user: regionadmin
admin_password: \"p@ss: # not a comment\"
admin_tenant_name: system
bridge_driver: openvswitch
networks:
- enp3s0/br0/10.127.100.2
local_image_path:
- /opt/cloud/workspace/disks
hugepages_option: native
# 把所有的vgpu的PF全部写上
nvidia_vgpu_pfs:
- 67:00.0
- 67:00.4   # db01's vGPU
- 67:00.5
- 67:00.6
- 67:00.7
- 67:01.0
# end of the vGPU list
enable_remote_executor: true
";

const PROFILE: &str = "\
[host]
reboot = \"never\"

[[gpus]]
select = \"0000:67:00.0\"
vgpu_type = \"A40-24Q\"
count = 2

[[gpus]]
select = \"0000:e8:00.0\"
vgpu_type = \"A40-8Q\"
count = 3

[cloudpods]
restart = false
";

const CONF: &str = "etc/yunion/host.conf";

/// The parents of the live vGPUs, as CloudPods writes them (`bb:dd.f`), sorted.
fn live_parents(s: &Sim) -> Vec<String> {
    let j = s.json(&["status", "--json"]);
    let mut v: Vec<String> = j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["vgpus"].as_array().unwrap().clone())
        .map(|v| {
            v["parent"]
                .as_str()
                .unwrap()
                .trim_start_matches("0000:")
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// The file without the key's line and its entries: what must never change.
fn without_list(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_list = false;
    for l in text.lines() {
        if l.starts_with("nvidia_vgpu_pfs:") {
            in_list = true;
            continue;
        }
        if in_list && l.starts_with("- ") {
            continue;
        }
        in_list = false;
        out.push(l);
    }
    out
}

/// What a real YAML reader makes of the file (PyYAML from the test venv, every scalar a string
/// as CloudPods' Go reader sees these fields): the document as JSON. None without the venv.
fn yaml_as_json(path: &std::path::Path) -> Option<serde_json::Value> {
    let py = test_cache().join("venv/bin/python");
    if !py.is_file() {
        if in_ci() {
            panic!("CI must have {}: run scripts/test-deps", py.display());
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED the YAML reader check: {} missing (scripts/test-deps) !!!!!!!!\n",
            py.display()
        );
        return None;
    }
    let (code, out, err) = output(std::process::Command::new(py).args([
        "-c",
        "import json, sys, yaml; print(json.dumps(yaml.load(open(sys.argv[1]), Loader=yaml.BaseLoader)))",
        path.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "PyYAML could not read {}: {err}", path.display());
    Some(serde_json::from_str(&out).unwrap())
}

#[test]
fn setup_and_restore_keep_host_conf_in_step() {
    let s = Sim::new("a40x8-ready");
    s.write(CONF, HOST_CONF);
    let before_yaml = yaml_as_json(&s.root().join(CONF));
    let p = profile_file(PROFILE);
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let parents = live_parents(&s);
    assert_eq!(parents.len(), 5, "{parents:?}");
    assert!(parents.iter().filter(|p| p.starts_with("67:")).count() == 2);
    assert!(
        r.stdout.contains(&format!(
            "nvidia_vgpu_pfs is now [{}] (was [67:00.0, 67:00.4, 67:00.5, 67:00.6, 67:00.7, 67:01.0])",
            parents.join(", ")
        )),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("run `kubectl -n onecloud rollout restart ds default-host`"),
        "{r:?}"
    );

    // The list is exactly the parents; every other line, comment included, is as it was; an
    // entry that stays keeps its comment; the original is backed up.
    let after = s.read(CONF);
    let entries: Vec<String> = after
        .lines()
        .skip_while(|l| !l.starts_with("nvidia_vgpu_pfs:"))
        .skip(1)
        .take_while(|l| l.starts_with("- "))
        .map(|l| {
            l[2..]
                .split('#')
                .next()
                .unwrap()
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    let mut sorted = entries.clone();
    sorted.sort();
    assert_eq!(sorted, parents, "{after}");
    assert_eq!(without_list(&after), without_list(HOST_CONF), "{after}");
    assert!(after.contains("- 67:00.4   # db01's vGPU\n"), "{after}");
    assert_eq!(
        s.read("var/lib/vgpuctl/backups/etc/yunion/host.conf"),
        HOST_CONF
    );

    // A real YAML reader sees the same document with only the list changed.
    if let (Some(mut b), Some(a)) = (before_yaml, yaml_as_json(&s.root().join(CONF))) {
        let listed: Vec<String> = a["nvidia_vgpu_pfs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(listed_sorted, parents);
        b["nvidia_vgpu_pfs"] = a["nvidia_vgpu_pfs"].clone();
        assert_eq!(a, b);
    }

    // A second setup changes no file.
    let hash = s.hash();
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("already lists the 5 vGPU parent(s)"),
        "{again:?}"
    );
    assert_eq!(s.hash(), hash, "the second setup changed files");

    // An operator adds a stale entry; at the next boot the restore unit puts the list right.
    s.write(CONF, &after.replace("- 67:00.4", "- 3b:00.0\n- 67:00.4"));
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(rb.stdout.contains("vgpuctl-restore.service"), "{rb:?}");
    assert_eq!(s.read(CONF), after);
    assert_eq!(live_parents(&s), parents);
}

#[test]
fn restart_failure_is_reported_and_retried() {
    let s = Sim::new("a40x8-ready");
    s.write(CONF, HOST_CONF);
    let p = profile_file(&PROFILE.replace("restart = false", "restart = true"));
    // The simulated host has no kubectl: the restart fails, setup says what to do and exits 1,
    // with the file already updated and the restart remembered.
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    let all = r.all();
    assert!(
        all.contains("restarting the host agent failed: `kubectl -n onecloud rollout restart ds default-host`"),
        "{r:?}"
    );
    assert!(all.contains("Run it by hand"), "{r:?}");
    assert!(s.exists("var/lib/vgpuctl/cloudpods-restart-pending"));
    assert_ne!(s.read(CONF), HOST_CONF);
    // The next run tries the restart again although the file is now right.
    let again = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.all().contains("already lists the 5 vGPU parent(s)"),
        "{again:?}"
    );
    assert!(
        again.all().contains("restarting the host agent failed"),
        "{again:?}"
    );
    // At boot, restore reports it but does not fail because of it.
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(rb.stdout.contains("exit 0"), "{rb:?}");
}

#[test]
fn vendor_vfio_host_is_flagged() {
    let s = Sim::new("l40s-vfio-ready");
    s.write(CONF, "region: region0\nnvidia_vgpu_pfs:\n- 41:00.0\n");
    let p = profile_file(
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-12Q\"\ncount = 1\n[cloudpods]\n",
    );
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("vendor-specific VFIO interface")
            && r.stdout.contains("cannot discover them"),
        "{r:?}"
    );
    // Nothing CloudPods could find is listed: the list is emptied, the rest kept.
    assert_eq!(s.read(CONF), "region: region0\nnvidia_vgpu_pfs: []\n");
}

#[test]
fn missing_host_conf_fails_setup_with_a_hint() {
    let s = Sim::new("t4x2-ready");
    let p = profile_file(
        "[host]\nreboot = \"never\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"T4-4Q\"\ncount = 1\n[cloudpods]\nhost_conf = \"/etc/yunion/host.yaml\"\n",
    );
    // Refused before any change (issue 12, item 5), not after the vGPUs were made.
    let before = s.hash();
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("/etc/yunion/host.yaml does not exist")
            && r.stderr.contains("cloudpods.host_conf"),
        "{r:?}"
    );
    assert_eq!(s.hash(), before, "the root changed: {r:?}");
}
