//! Issue 17 item 2: kernel upgrades. A kernel update installed since the last boot is what the
//! boot loader starts next; DKMS builds the nvidia module for it only with its headers
//! (recorded-behaviour.md §7). `check` reports both kernels, `setup` builds the module before the
//! reboot (installing that kernel's headers with the package manager first when they are
//! missing), and `restore` at boot names the cause when the booted kernel has no module.

mod common;
use common::*;

const NEW: &str = "6.8.0-90-generic";

fn profile(ty: &str) -> tempfile::NamedTempFile {
    profile_file(&format!(
        "[[gpus]]\nselect = \"all\"\nvgpu_type = \"{ty}\"\ncount = 2\n"
    ))
}

/// The distribution's kernel update lands on the simulated host (`new_kernel=`), as
/// unattended-upgrades would leave it: installed, the boot loader's default, not running.
fn install_kernel(s: &Sim, version: &str, headers: bool) {
    let opt = if headers {
        format!("new_kernel={version}")
    } else {
        format!("new_kernel={version}:noheaders")
    };
    let r = s.run(&["--sim-opt", &opt, "sim", "info"]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn setup(s: &Sim, p: &tempfile::NamedTempFile) -> Run {
    s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"])
}

#[test]
fn a_kernel_without_headers_is_reported_by_check_and_fixed_by_setup() {
    let s = Sim::new("l40s-vfio-ready");
    install_kernel(&s, NEW, false);
    let c = s.run(&["check"]);
    assert!(
        c.stdout
            .contains("is loaded; its module is built for the running kernel 6.8.0-60-generic, whose headers are installed"),
        "{c:?}"
    );
    let next = c
        .stdout
        .lines()
        .skip_while(|l| !l.contains(&format!("kernel {NEW}, which the boot loader starts next")))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(next.contains("BLOCKER"), "{c:?}");
    assert!(
        next.contains("no nvidia module is built for it and its headers are not installed"),
        "{next}"
    );
    assert!(
        next.contains(&format!("install linux-headers-{NEW}")),
        "{next}"
    );
    assert!(
        next.contains(&format!("dkms autoinstall -k {NEW}")),
        "{next}"
    );

    // setup installs the headers with the package manager, then DKMS builds the module, and
    // the host comes up on the new kernel with its vGPUs.
    let p = profile("L40S-8Q");
    let dry = s.run(&[
        "setup",
        "--profile",
        p.path().to_str().unwrap(),
        "--dry-run",
    ]);
    let install = dry
        .stdout
        .find(&format!("apt-get install -y linux-headers-{NEW}"));
    let build = dry.stdout.find(&format!("dkms autoinstall -k {NEW}"));
    assert!(
        install.is_some() && build.is_some() && install < build,
        "the headers are installed, then the module built: {dry:?}"
    );
    let r = setup(&s, &p);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        s.exists(&format!("usr/src/linux-headers-{NEW}/Makefile")),
        "the headers were not installed: {r:?}"
    );
    assert!(
        s.exists(&format!("lib/modules/{NEW}/updates/dkms/nvidia.ko")),
        "the module was not built: {r:?}"
    );
    let vgpus = s.live_vgpus();
    assert!(!vgpus.is_empty(), "{r:?}");
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert_eq!(s.read("proc/sys/kernel/osrelease").trim(), NEW);
    assert!(rb.stdout.contains("restore): exit 0"), "{rb:?}");
    assert_eq!(s.live_vgpus(), vgpus, "not the same vGPUs after the reboot");
}

/// Headers alone build nothing when the driver is not registered with DKMS (a `.run` installed
/// without `--dkms`): setup refuses before any change, installing no package.
#[test]
fn without_a_dkms_registration_setup_refuses_and_installs_nothing() {
    let s = Sim::new("l40s-vfio-ready");
    install_kernel(&s, NEW, false);
    for e in std::fs::read_dir(s.root().join("usr/src"))
        .unwrap()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("nvidia-") {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let before = s.hash();
    let r = setup(&s, &profile("L40S-8Q"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "kernel {NEW}, which the boot loader starts next, has no nvidia module and the vGPU \
             host driver is not registered with DKMS"
        )),
        "{r:?}"
    );
    assert_eq!(s.hash(), before, "a refused setup changed the host");
}

/// With the headers there, setup builds the module for the next kernel before the reboot, and
/// the host comes up on the new kernel with the same vGPUs (mdev and vendor-specific VFIO).
#[test]
fn with_headers_setup_builds_the_module_and_the_vgpus_survive_the_reboot() {
    for (model, ty, old) in [
        ("l40s-vfio-ready", "L40S-8Q", "6.8.0-60-generic"),
        ("a40x8-ready", "A40-8Q", "5.15.0-141-generic"),
    ] {
        let s = Sim::new(model);
        let p = profile(ty);
        let first = setup(&s, &p);
        assert_eq!(first.code, 0, "{model}: {first:?}");
        let vgpus = s.live_vgpus();
        assert!(!vgpus.is_empty(), "{model}");

        install_kernel(&s, NEW, true);
        let c = s.run(&["check"]);
        assert!(
            c.stdout.contains(&format!(
                "kernel {NEW}, which the boot loader starts next: no nvidia module is built for \
                 it (its headers are installed)"
            )),
            "{model}: {c:?}"
        );
        assert!(
            c.stdout.contains(&format!(
                "`vgpuctl setup` builds it before the reboot (`dkms autoinstall -k {NEW}`)"
            )),
            "{model}: {c:?}"
        );
        let dry = s.run(&[
            "setup",
            "--profile",
            p.path().to_str().unwrap(),
            "--dry-run",
        ]);
        assert!(
            dry.stdout.contains(&format!("dkms autoinstall -k {NEW}")),
            "{model}: {dry:?}"
        );
        let r = setup(&s, &p);
        assert_eq!(r.code, 0, "{model}: {r:?}");
        assert!(
            s.exists(&format!("lib/modules/{NEW}/updates/dkms/nvidia.ko")),
            "{model}: the module was not built: {r:?}"
        );
        let again = s.run(&["check"]);
        assert!(
            again.stdout.contains(&format!(
                "kernel {NEW}, which the boot loader starts next: an nvidia module is built for it"
            )),
            "{model}: {again:?}"
        );

        let rb = s.run(&["sim", "reboot"]);
        assert_eq!(rb.code, 0, "{model}: {rb:?}");
        assert!(rb.stdout.contains(&format!("vmlinuz-{NEW}")), "{rb:?}");
        assert_eq!(s.read("proc/sys/kernel/osrelease").trim(), NEW, "{model}");
        assert!(rb.stdout.contains("restore): exit 0"), "{model}: {rb:?}");
        assert_eq!(
            s.live_vgpus(),
            vgpus,
            "{model}: not the same vGPUs after the reboot"
        );
        let _ = old;
    }
}

/// A host that boots a kernel update without its headers (no module): restore names the cause
/// and the fix; setup installs the headers, builds the module, and after its reboot
/// checkpoint the vGPUs are back.
#[test]
fn restore_names_the_missing_module_and_setup_fixes_it() {
    let s = Sim::new("l40s-vfio-ready");
    let p = profile("L40S-8Q");
    assert_eq!(setup(&s, &p).code, 0);
    let vgpus = s.live_vgpus();
    install_kernel(&s, NEW, false);
    let rb = s.run(&["sim", "reboot"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    assert!(rb.stdout.contains("restore): exit 1"), "{rb:?}");
    assert_eq!(s.read("proc/sys/kernel/osrelease").trim(), NEW);

    let r = s.run(&["restore"]);
    assert_eq!(r.code, 1, "{r:?}");
    let cause = format!(
        "no nvidia module for kernel {NEW}: install linux-headers-{NEW} and run `vgpuctl setup`"
    );
    assert!(r.stderr.contains(&cause), "{r:?}");
    assert!(r.stdout.contains(&cause), "{r:?}");

    // setup installs the headers itself (no manual step), builds, and its reboot brings the
    // vGPUs back.
    let runs = s.setup_to_end(p.path());
    assert!(
        runs[0]
            .stdout
            .contains(&format!("dkms autoinstall -k {NEW}")),
        "{:?}",
        runs[0]
    );
    assert!(
        runs.len() >= 2,
        "the module loads only after a reboot: {runs:?}"
    );
    assert_eq!(s.live_vgpus(), vgpus);
}

/// A fresh host whose kernel update is already installed: the driver install builds for the
/// running kernel only, so setup also builds the module for the next one before its reboot, and
/// the host comes up on the new kernel with its vGPUs.
#[test]
fn a_fresh_host_gets_the_module_for_the_kernel_it_boots_next() {
    let s = Sim::new("l40s-vfio");
    // A headless server: nouveau can go now, so the driver installs before the reboot.
    assert_eq!(
        s.run(&["--sim-opt", "nouveau_fbcon=0", "sim", "info"]).code,
        0
    );
    install_kernel(&s, NEW, true);
    let p = profile_file(
        "[[gpus]]\nselect = \"all\"\nvgpu_type = \"L40S-8Q\"\ncount = 2\n[driver]\n\
         path = \"/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip\"\n",
    );
    let runs = s.setup_to_end(p.path());
    let first = &runs[0];
    let install = first.stdout.find("Install the NVIDIA vGPU host driver");
    let build = first.stdout.find(&format!("dkms autoinstall -k {NEW}"));
    assert!(
        install.is_some() && build.is_some() && install < build,
        "the build comes after the install: {first:?}"
    );
    assert_eq!(s.read("proc/sys/kernel/osrelease").trim(), NEW);
    assert_eq!(s.live_vgpus().len(), 8, "{:?}", runs.last());
}
