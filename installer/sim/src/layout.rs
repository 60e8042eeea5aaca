//! Files of the simulated root, rendered from the model and the state: the static parts (OS,
//! boot loader, PCI config space) at build time, the dynamic parts (drivers, VFs, mdev types,
//! vGPUs, /proc) whenever the state changes. Layouts follow real sysfs/procfs; every symlink is
//! relative so it resolves inside the root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

use super::bootcfg;
use super::models::{Boot, Cpu, FreshDriver, Iface, Model};
use super::state::State;
use vgpuctl_catalog::{self as catalog, TypeSpec};

pub const SECURE_BOOT_VAR: &str =
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
pub const ROOT_UUID: &str = "3f1b6e0c-9d4e-4a8b-b1c2-5d7e8f9a0b1c";
pub const MACHINE_ID: &str = "8d3f0c6a1b2e4f5a9c7d6e5f4a3b2c1d";
pub const ESP_UUID: &str = "6A1F-3C2B";
pub const HOST_BRIDGE: &str = "0000:00:00.0";

/// Write a file only when its content differs (keeps re-renders cheap).
pub fn put(root: &Path, rel: &str, content: &str) -> Result<()> {
    put_mode(root, rel, content, 0o644)
}

pub fn put_mode(root: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    if std::fs::read(&p)
        .map(|c| c == content.as_bytes())
        .unwrap_or(false)
    {
        return Ok(());
    }
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    // Replace rather than write in place (the old file may be a shared template link), and
    // atomically: a reader on another thread sees the old content or the new, never no file.
    replace_file(root, &p, content.as_bytes(), mode)
}

/// The root's scratch directory for files being built (same file system as everything under
/// the root, so a rename moves them in; never a directory vgpuctl lists).
pub fn tmp_dir(root: &Path) -> Result<std::path::PathBuf> {
    let d = root.join(super::state::STATE_DIR).join("tmp");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Write `bytes` to a temp file and rename it over `path` (under `root`).
pub fn replace_file(root: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::Builder::new()
        .prefix("f-")
        .tempfile_in(tmp_dir(root)?)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Create a sysfs file known not to exist yet as a hard link to a shared template holding the
/// same content: a VF enable creates thousands of identical attribute files, and a link costs
/// no data block (5x faster than writing each file on ext4). Files made this way are never
/// written in place: [`put_mode`] and the kernel's plain writes replace them.
fn fresh_file(root: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(content.as_bytes())[..12]);
    let tpl = root.join(format!("{}/tpl/{mode:o}-{digest}", super::state::STATE_DIR));
    if !tpl.exists() {
        // Each writer its own temp file: a shared temp name let one thread truncate the inode
        // another had just renamed into place and linked, showing an empty file for a moment.
        std::fs::create_dir_all(tpl.parent().expect("template dir"))?;
        replace_file(root, &tpl, content.as_bytes(), mode)?;
    }
    let dest = root.join(rel);
    match std::fs::hard_link(&tpl, &dest) {
        Ok(()) => Ok(()),
        // Too many links, or a file already there: a plain file does the same job.
        Err(_) => replace_file(root, &dest, content.as_bytes(), mode),
    }
}

pub fn link(root: &Path, rel: &str, target: &str) -> Result<()> {
    let p = root.join(rel);
    if std::fs::read_link(&p)
        .map(|t| t == Path::new(target))
        .unwrap_or(false)
    {
        return Ok(());
    }
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    // A new link under a unique name, renamed over the old one: never a moment without it.
    let tmp = tmp_dir(root)?.join(format!("l-{}", uuid::Uuid::new_v4().simple()));
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, &p).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

pub fn unlink(root: &Path, rel: &str) {
    let _ = std::fs::remove_file(root.join(rel));
}

pub fn rmtree(root: &Path, rel: &str) {
    let _ = std::fs::remove_dir_all(root.join(rel));
}

pub fn devdir(m: &Model, addr: &str) -> String {
    format!("sys/devices/{}/{addr}", m.pci_root(addr))
}

/// Stable IOMMU group numbers: host bridge 0, PF k at 10+33k, its VF i at 11+33k+i (a wider
/// stride on a GPU with more than 32 VFs, so that no two devices share a group).
pub fn iommu_group(m: &Model, addr: &str) -> u32 {
    let stride = m.sriov_total.max(32) + 1;
    for (k, pf) in m.pfs.iter().enumerate() {
        let base = 10 + stride * k as u32;
        if addr == *pf {
            return base;
        }
        if let Some(i) = m.vfs_of(pf).iter().position(|v| v == addr) {
            return base + 1 + i as u32;
        }
    }
    0
}

pub fn pf_of(m: &Model, dev: &str) -> Option<&'static str> {
    m.pfs
        .iter()
        .find(|pf| **pf == dev || m.vfs_of(pf).iter().any(|v| v == dev))
        .copied()
}

fn driver_module(driver: &str) -> &str {
    match driver {
        "vfio-pci" => "vfio_pci",
        d => d,
    }
}

// ---------------------------------------------------------------------------------------------
// Static build

pub fn build_static(root: &Path, m: &Model, st: &State) -> Result<()> {
    // merged /usr, as on every model's OS release
    std::fs::create_dir_all(root.join("usr/lib"))?;
    std::fs::create_dir_all(root.join("usr/bin"))?;
    std::fs::create_dir_all(root.join("usr/sbin"))?;
    link(root, "lib", "usr/lib")?;
    link(root, "bin", "usr/bin")?;
    link(root, "sbin", "usr/sbin")?;
    for d in [
        "etc/modprobe.d",
        "etc/systemd/system/multi-user.target.wants",
        "usr/lib/systemd/system",
        "usr/lib/modprobe.d",
        "root",
        "run",
        "var/lib",
        "var/log",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    put(root, "etc/os-release", m.os.os_release)?;
    put(root, "etc/hostname", &format!("sim-{}\n", m.name))?;
    put(root, "etc/machine-id", &format!("{MACHINE_ID}\n"))?;
    put(
        root,
        "proc/sys/kernel/osrelease",
        &format!("{}\n", m.os.kver),
    )?;
    put(root, "proc/cpuinfo", &cpuinfo(m))?;
    put(
        root,
        &format!("boot/vmlinuz-{}", m.os.kver),
        "simulated kernel image\n",
    )?;
    let stub = |p: &str| {
        put_mode(root, p, "#!/bin/sh\n# vgpuctl simulator stub: the simulated kernel answers runs of this program\nexit 0\n", 0o755)
    };
    for p in [
        "usr/bin/systemctl",
        "usr/sbin/modprobe",
        "usr/bin/uname",
        "usr/bin/lspci",
        // DKMS, which NVIDIA's `.run --dkms` needs (a guess: every simulated host has it).
        "usr/sbin/dkms",
    ] {
        stub(p)?;
    }
    if m.os.debian {
        stub("usr/sbin/update-initramfs")?;
        stub("usr/bin/apt-get")?;
        stub("usr/bin/dpkg")?;
        put(
            root,
            &format!("boot/initrd.img-{}", m.os.kver),
            "simulated initramfs\n",
        )?;
    } else {
        stub("usr/bin/dracut")?;
        stub("usr/bin/dnf")?;
        stub("usr/bin/rpm")?;
        put(
            root,
            "etc/redhat-release",
            "Rocky Linux release 9.4 (Blue Onyx)\n",
        )?;
        put(
            root,
            "etc/system-release",
            "Rocky Linux release 9.4 (Blue Onyx)\n",
        )?;
        put(
            root,
            &format!("boot/initramfs-{}.img", m.os.kver),
            "simulated initramfs\n",
        )?;
    }
    if let Some(vendor) = m.vm {
        put(root, "sys/class/dmi/id/sys_vendor", &format!("{vendor}\n"))?;
        put(root, "sys/class/dmi/id/product_name", "p5.48xlarge\n")?;
    } else {
        put(root, "sys/class/dmi/id/sys_vendor", "Supermicro\n")?;
        put(root, "sys/class/dmi/id/product_name", "SYS-4029GP-TRT\n")?;
    }
    if m.firmware_iommu {
        let table = if m.cpu == Cpu::Intel { "DMAR" } else { "IVRS" };
        put(
            root,
            &format!("sys/firmware/acpi/tables/{table}"),
            "simulated ACPI table\n",
        )?;
    }
    std::fs::create_dir_all(root.join("sys/firmware/acpi/tables"))?;
    build_boot(root, m)?;
    // PCI: a non-NVIDIA host bridge, then the GPUs' config space.
    let (hb_vendor, hb_device) = match m.cpu {
        Cpu::Intel => ("0x8086", "0x09a2"),
        Cpu::Amd => ("0x1022", "0x1480"),
    };
    pci_static(
        root,
        m,
        HOST_BRIDGE,
        hb_vendor,
        hb_device,
        "0x0000",
        "0x0000",
        "0x060000",
        0,
    )?;
    for (k, pf) in m.pfs.iter().enumerate() {
        let numa = if m.vm.is_some() {
            -1
        } else if m.pfs.len() > 1 && k >= m.pfs.len() / 2 {
            1
        } else {
            0
        };
        pci_static(
            root,
            m,
            pf,
            "0x10de",
            &format!("0x{:04x}", m.device),
            "0x10de",
            &format!("0x{:04x}", m.subsystem_device),
            &format!("0x{:06x}", m.class),
            numa,
        )?;
    }
    let _ = st;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn pci_static(
    root: &Path,
    m: &Model,
    addr: &str,
    vendor: &str,
    device: &str,
    sv: &str,
    sd: &str,
    class: &str,
    numa: i32,
) -> Result<()> {
    let d = devdir(m, addr);
    std::fs::create_dir_all(root.join(&d))?;
    for (f, c, mode) in [
        ("vendor", format!("{vendor}\n"), 0o444),
        ("device", format!("{device}\n"), 0o444),
        ("subsystem_vendor", format!("{sv}\n"), 0o444),
        ("subsystem_device", format!("{sd}\n"), 0o444),
        ("class", format!("{class}\n"), 0o444),
        ("numa_node", format!("{numa}\n"), 0o644),
        ("driver_override", "(null)\n".to_string(), 0o644),
        ("remove", String::new(), 0o200),
    ] {
        fresh_file(root, &format!("{d}/{f}"), &c, mode)?;
    }
    link(
        root,
        &format!("sys/bus/pci/devices/{addr}"),
        &format!("../../../devices/{}/{addr}", m.pci_root(addr)),
    )
}

fn build_boot(root: &Path, m: &Model) -> Result<()> {
    let stub = |p: &str| {
        put_mode(
            root,
            p,
            "#!/bin/sh\n# vgpuctl simulator stub\nexit 0\n",
            0o755,
        )
    };
    match m.boot {
        Boot::Grub | Boot::SystemdBoot => {
            let (default, linux) = if m.os.proxmox {
                ("quiet", "root=ZFS=rpool/ROOT/pve-1 boot=zfs")
            } else if m.vm.is_some() {
                (
                    "console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295",
                    "",
                )
            } else {
                ("quiet splash", "")
            };
            put(
                root,
                "etc/default/grub",
                &debian_grub_defaults(m, default, linux),
            )?;
            std::fs::create_dir_all(root.join("etc/default/grub.d"))?;
            stub("usr/sbin/update-grub")?;
            stub("usr/sbin/grub-mkconfig")?;
            regenerate_grub_cfg(root, m)?;
            if m.os.proxmox {
                put(
                    root,
                    "etc/kernel/cmdline",
                    "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
                )?;
                put(
                    root,
                    "etc/kernel/proxmox-boot-uuids",
                    &format!("{ESP_UUID}\n"),
                )?;
                stub("usr/sbin/proxmox-boot-tool")?;
                stub("usr/bin/kernel-install")?;
                stub("usr/bin/pveversion")?;
                std::fs::create_dir_all(root.join("etc/pve/nodes/sim"))?;
                put(root, "etc/pve/.version", "{\"version\": 1}\n")?;
                proxmox_refresh(root, m)?;
            }
        }
        Boot::Bls => {
            let args = "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap \
                        rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet";
            put(
                root,
                "etc/default/grub",
                &format!(
                    "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n\
                     GRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\n\
                     GRUB_CMDLINE_LINUX=\"{args}\"\nGRUB_DISABLE_RECOVERY=\"true\"\nGRUB_ENABLE_BLSCFG=true\n"
                ),
            )?;
            let kver = m.os.kver;
            for (id, title, ver) in [
                (
                    kver.to_string(),
                    format!("Rocky Linux ({kver}) 9.4 (Blue Onyx)"),
                    kver.to_string(),
                ),
                (
                    "0-rescue".to_string(),
                    "Rocky Linux (0-rescue-8d3f0c6a1b2e4f5a9c7d6e5f4a3b2c1d) 9.4 (Blue Onyx)"
                        .to_string(),
                    "0-rescue-8d3f0c6a1b2e4f5a9c7d6e5f4a3b2c1d".to_string(),
                ),
            ] {
                put(
                    root,
                    &format!("boot/loader/entries/{MACHINE_ID}-{id}.conf"),
                    &format!(
                        "title {title}\nversion {ver}\nlinux /vmlinuz-{ver}\ninitrd /initramfs-{ver}.img $tuned_initrd\n\
                         options root=/dev/mapper/rl-root ro {args} $tuned_params\ngrub_users $grub_users\n\
                         grub_arg --unrestricted\ngrub_class rocky\n"
                    ),
                )?;
            }
            put(
                root,
                "boot/grub2/grubenv",
                &format!("# GRUB Environment Block\nsaved_entry={MACHINE_ID}-{kver}\n"),
            )?;
            stub("usr/sbin/grubby")?;
            stub("usr/sbin/grub2-mkconfig")?;
        }
    }
    Ok(())
}

fn debian_grub_defaults(m: &Model, default: &str, linux: &str) -> String {
    let distributor = if m.os.proxmox {
        "\"Proxmox VE\"".to_string()
    } else {
        "`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`".to_string()
    };
    format!(
        "# If you change this file, run 'update-grub' afterwards to update\n# /boot/grub/grub.cfg.\n\
         # For full documentation of the options in this file, see:\n#   info -f grub -n 'Simple configuration'\n\n\
         GRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR={distributor}\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"{default}\"\nGRUB_CMDLINE_LINUX=\"{linux}\"\n\n\
         # If your computer has multiple operating systems installed, then you\n\
         # probably want to run os-prober. However, if your computer is a host\n\
         # for guest OSes installed via LVM or raw disk devices, running\n\
         # os-prober can destroy them.\n#GRUB_DISABLE_OS_PROBER=false\n\n\
         # Uncomment to enable BadRAM filtering, modify to suit your needs\n\
         #GRUB_BADRAM=\"0x01234567,0xfefefefe,0x89abcdef,0xefefefef\"\n\n\
         # Uncomment to disable graphical terminal\n#GRUB_TERMINAL=console\n\n\
         # Uncomment if you don't want GRUB to pass \"root=UUID=xxx\" parameter to Linux\n\
         #GRUB_DISABLE_LINUX_UUID=true\n"
    )
}

/// The GRUB defaults after sourcing `/etc/default/grub` then `grub.d/*.cfg` in order.
pub fn grub_vars(root: &Path) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    // sh reads bytes: a non-UTF-8 byte in a comment does not stop it from sourcing the file.
    let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    if let Ok(t) = read(&root.join("etc/default/grub")) {
        bootcfg::source_assignments(&t, &mut vars);
    }
    let mut dropins: Vec<_> = std::fs::read_dir(root.join("etc/default/grub.d"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dropins.sort();
    for p in dropins {
        if p.extension().is_some_and(|e| e == "cfg") {
            if let Ok(t) = read(&p) {
                bootcfg::source_assignments(&t, &mut vars);
            }
        }
    }
    vars
}

pub fn regenerate_grub_cfg(root: &Path, m: &Model) -> Result<String> {
    // grub-mkconfig's first entry (the default) is the newest installed kernel.
    let kver = super::kernels::newest(root, m);
    let cfg = bootcfg::render_grub_cfg(m.os.distributor, &kver, ROOT_UUID, &grub_vars(root));
    put(root, "boot/grub/grub.cfg", &cfg)?;
    Ok(cfg)
}

fn esp_entry_rel(m: &Model) -> String {
    format!(
        "{}/esp/{ESP_UUID}/loader/entries/proxmox-{}.conf",
        super::state::STATE_DIR,
        m.os.kver
    )
}

/// `proxmox-boot-tool refresh`: copy /etc/kernel/cmdline into the ESP's loader entry. The ESP
/// is not mounted on a running Proxmox host, so the simulator keeps it in its own directory.
pub fn proxmox_refresh(root: &Path, m: &Model) -> Result<()> {
    // Only the first line, as proxmox-kernel-helper's `get_first_line` reads it.
    let cmdline = std::fs::read(root.join("etc/kernel/cmdline"))
        .map(|b| {
            let t = String::from_utf8_lossy(&b).into_owned();
            t.split('\n').next().unwrap_or("").to_string()
        })
        .unwrap_or_default();
    let k = m.os.kver;
    put(
        root,
        &esp_entry_rel(m),
        &format!(
            "title    Proxmox Virtual Environment\nversion  {k}\noptions  {}\n\
             linux    /EFI/proxmox/{k}/vmlinuz-{k}\ninitrd   /EFI/proxmox/{k}/initrd.img-{k}\n",
            cmdline.trim()
        ),
    )
}

/// What the boot firmware will put on /proc/cmdline at the next boot.
pub fn boot_cmdline(root: &Path, m: &Model) -> String {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    let line = match m.boot {
        Boot::Grub => bootcfg::cmdline_from_grub_cfg(&read("boot/grub/grub.cfg")),
        Boot::Bls => bootcfg::cmdline_from_bls(
            &read(&format!(
                "boot/loader/entries/{MACHINE_ID}-{}.conf",
                m.os.kver
            )),
            "(hd0,gpt2)",
        ),
        Boot::SystemdBoot => {
            let e = read(&esp_entry_rel(m));
            let k = m.os.kver;
            bootcfg::bls_field(&e, "options")
                .map(|o| format!("initrd=\\EFI\\proxmox\\{k}\\initrd.img-{k} {o}"))
        }
    };
    line.unwrap_or_else(|| format!("BOOT_IMAGE=/boot/vmlinuz-{} ro", m.os.kver))
}

fn cpuinfo(m: &Model) -> String {
    let (vendor, family, model, name, virt) = match m.cpu {
        Cpu::Intel => (
            "GenuineIntel",
            6,
            106,
            "Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz",
            "vmx",
        ),
        Cpu::Amd => (
            "AuthenticAMD",
            25,
            17,
            "AMD EPYC 9354 32-Core Processor",
            "svm",
        ),
    };
    let hv = if m.vm.is_some() { " hypervisor" } else { "" };
    // A guest sees no vmx/svm unless nested virtualization is on.
    let virt = if m.vm.is_some() { "" } else { virt };
    let mut out = String::new();
    for p in 0..4 {
        out.push_str(&format!(
            "processor\t: {p}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n\
             model name\t: {name}\nstepping\t: 6\nmicrocode\t: 0xd0003a5\ncpu MHz\t\t: 2000.000\n\
             cache size\t: 43008 KB\nphysical id\t: 0\nsiblings\t: 4\ncore id\t\t: {p}\ncpu cores\t: 4\n\
             apicid\t\t: {p}\ninitial apicid\t: {p}\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 27\n\
             wp\t\t: yes\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat \
             pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good \
             nopl xtopology nonstop_tsc cpuid pni pclmulqdq {virt} ssse3 fma cx16 pcid sse4_1 sse4_2 \
             x2apic movbe popcnt aes xsave avx f16c rdrand{hv} lahf_lm abm 3dnowprefetch avx2 smep \
             bmi2 erms avx512f avx512dq rdseed adx smap\nbogomips\t: 4000.00\nclflush size\t: 64\n\
             cache_alignment\t: 64\naddress sizes\t: 46 bits physical, 57 bits virtual\npower management:\n\n"
        ));
    }
    out.replace("  ", " ")
}

// ---------------------------------------------------------------------------------------------
// Dynamic rendering

/// Everything that depends on the state: /proc, module files, driver dirs, IOMMU, every GPU.
pub fn render_all(root: &Path, m: &Model, st: &State) -> Result<()> {
    render_globals(root, m, st)?;
    render_iommu_dev(root, m, st, HOST_BRIDGE)?;
    for pf in m.pfs {
        render_gpu(root, m, st, pf)?;
    }
    Ok(())
}

pub fn render_globals(root: &Path, m: &Model, st: &State) -> Result<()> {
    put(root, "proc/cmdline", &format!("{}\n", st.cmdline))?;
    put(
        root,
        "proc/sys/kernel/random/boot_id",
        &format!("{}\n", st.boot_id),
    )?;
    put(root, "proc/modules", &proc_modules(st))?;
    put(root, "proc/fb", &super::nouveau::proc_fb(st))?;
    let sb = st.opts.get("secure_boot").is_some_and(|v| v == "1");
    std::fs::create_dir_all(root.join("sys/firmware/efi/efivars"))?;
    std::fs::write(root.join(SECURE_BOOT_VAR), [6u8, 0, 0, 0, sb as u8])?;
    // Loaded-driver version files: the module in memory, not the files on disk.
    let version = super::branch::loaded_version(st);
    match version {
        Some(v) => {
            put(
                root,
                "proc/driver/nvidia/version",
                &format!(
                    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Tue Mar 18 12:01:33 UTC 2025\n\
                     GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
                ),
            )?;
            put(root, "sys/module/nvidia/version", &format!("{v}\n"))?;
            // nv-procfs.c nv_procfs_read_params: the string options last, quoted. (The real
            // file lists the dword options first; the sim shows the ones vgpuctl reads.)
            put(
                root,
                "proc/driver/nvidia/params",
                &format!(
                    "RegistryDwords: \"{}\"\nRegistryDwordsPerDevice: \"\"\nRmMsg: \"\"\n",
                    st.registry_dwords
                ),
            )?;
        }
        None => {
            rmtree(root, "proc/driver/nvidia");
            rmtree(root, "sys/module/nvidia");
        }
    }
    for module in ["nouveau", "vfio_pci", "nvidia_vgpu_vfio", "mdev"] {
        if st.modules.contains(module) {
            std::fs::create_dir_all(root.join(format!("sys/module/{module}")))?;
        } else {
            rmtree(root, &format!("sys/module/{module}"));
        }
    }
    for (driver, module) in [
        ("nvidia", "nvidia"),
        ("nouveau", "nouveau"),
        ("vfio-pci", "vfio_pci"),
    ] {
        let d = format!("sys/bus/pci/drivers/{driver}");
        if st.modules.contains(module) {
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                put_mode(root, &format!("{d}/{f}"), "", 0o200)?;
            }
        } else {
            rmtree(root, &d);
        }
    }
    put_mode(root, "sys/bus/pci/drivers_probe", "", 0o200)?;
    put_mode(root, "sys/bus/pci/rescan", "", 0o200)?;
    let mdev = m.iface == Iface::Mdev && st.modules.contains("nvidia_vgpu_vfio");
    if mdev {
        std::fs::create_dir_all(root.join("sys/class/mdev_bus"))?;
        std::fs::create_dir_all(root.join("sys/bus/mdev/devices"))?;
    } else {
        rmtree(root, "sys/class/mdev_bus");
        rmtree(root, "sys/bus/mdev");
    }
    let iommu_name = if m.cpu == Cpu::Intel {
        "dmar0"
    } else {
        "ivhd0"
    };
    if st.iommu {
        std::fs::create_dir_all(root.join(format!("sys/devices/virtual/iommu/{iommu_name}")))?;
        link(
            root,
            &format!("sys/class/iommu/{iommu_name}"),
            &format!("../../devices/virtual/iommu/{iommu_name}"),
        )?;
    } else {
        rmtree(root, "sys/class/iommu");
        rmtree(root, "sys/devices/virtual/iommu");
        rmtree(root, "sys/kernel/iommu_groups");
    }
    std::fs::create_dir_all(root.join("sys/class/iommu"))?;
    std::fs::create_dir_all(root.join("sys/kernel/iommu_groups"))?;
    Ok(())
}

fn proc_modules(st: &State) -> String {
    // (name, size, taint) in load order, with who uses whom, as the kernel prints them.
    const TABLE: &[(&str, u64, &str)] = &[
        ("nvidia_vgpu_vfio", 57344, " (OE)"),
        ("nvidia", 56807424, " (POE)"),
        ("nouveau", 2355200, ""),
        ("vfio_pci", 16384, ""),
        ("vfio_pci_core", 94208, ""),
        ("mdev", 20480, ""),
        ("vfio_iommu_type1", 49152, ""),
        ("vfio", 57344, ""),
        ("kvm_intel", 487424, ""),
        ("kvm", 1409024, ""),
        ("drm_kms_helper", 311296, ""),
        ("drm", 622592, ""),
    ];
    let users = |name: &str| -> Vec<&str> {
        let deps: &[(&str, &[&str])] = &[
            ("nvidia", &["nvidia_vgpu_vfio"]),
            ("mdev", &["nvidia_vgpu_vfio"]),
            ("vfio_pci_core", &["nvidia_vgpu_vfio", "vfio_pci"]),
            (
                "vfio",
                &["nvidia_vgpu_vfio", "vfio_pci_core", "vfio_iommu_type1"],
            ),
            ("kvm", &["kvm_intel"]),
            ("drm_kms_helper", &["nouveau"]),
            ("drm", &["nouveau", "drm_kms_helper"]),
        ];
        deps.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| {
                u.iter()
                    .copied()
                    .filter(|u| st.modules.contains(*u))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = String::new();
    for (name, size, taint) in TABLE {
        if !st.modules.contains(*name) {
            continue;
        }
        let u = users(name);
        let used = if u.is_empty() {
            "-".to_string()
        } else {
            format!("{},", u.join(","))
        };
        out.push_str(&format!(
            "{name} {size} {} {used} Live 0x0000000000000000{taint}\n",
            u.len() + super::nouveau::extra_refs(st, name)
        ));
    }
    out
}

fn render_iommu_dev(root: &Path, m: &Model, st: &State, addr: &str) -> Result<()> {
    let d = devdir(m, addr);
    let g = iommu_group(m, addr);
    if st.iommu {
        link(
            root,
            &format!("{d}/iommu_group"),
            &format!("../../../kernel/iommu_groups/{g}"),
        )?;
        link(
            root,
            &format!("sys/kernel/iommu_groups/{g}/devices/{addr}"),
            &format!("../../../../devices/{}/{addr}", m.pci_root(addr)),
        )?;
        put(
            root,
            &format!("sys/kernel/iommu_groups/{g}/type"),
            "identity\n",
        )?;
    } else {
        unlink(root, &format!("{d}/iommu_group"));
        rmtree(root, &format!("sys/kernel/iommu_groups/{g}"));
    }
    Ok(())
}

fn render_driver_link(root: &Path, m: &Model, st: &State, addr: &str) -> Result<()> {
    let d = devdir(m, addr);
    match st.bound.get(addr) {
        Some(drv) => link(
            root,
            &format!("{d}/driver"),
            &format!("../../../bus/pci/drivers/{drv}"),
        ),
        None => {
            unlink(root, &format!("{d}/driver"));
            Ok(())
        }
    }
}

/// The vGPU driver is loaded and owns this device (its types can show).
pub fn vgpu_ready(m: &Model, st: &State, dev: &str) -> bool {
    m.vgpu_capable()
        && st.driver.is_some()
        && st.modules.contains("nvidia")
        && st.bound.get(dev).is_some_and(|d| d == "nvidia")
        && (m.iface == Iface::VendorVfio || st.modules.contains("nvidia_vgpu_vfio"))
}

/// The parents that can hold vGPUs on this GPU now: its VFs (SR-IOV) or the PF itself.
pub fn parents(m: &Model, st: &State, pf: &str) -> Vec<String> {
    let list = if m.sriov_total > 0 {
        // A VF is a parent once the driver filled in its vGPU group (recorded-behaviour §2).
        let n = st.numvfs.get(pf).copied().unwrap_or(0) as usize;
        m.vfs_of(pf)
            .into_iter()
            .take(n)
            .filter(|vf| st.vf_groups.contains(vf))
            .collect()
    } else {
        vec![pf.to_string()]
    };
    list.into_iter().filter(|p| vgpu_ready(m, st, p)).collect()
}

/// `available_instances` of a type on a parent, under NVIDIA's placement rule for the GPU's
/// mode (equal-size, or mixed-size once `-shm 1` turned it on).
pub fn available(m: &Model, st: &State, pf: &str, parent: &str, t: &TypeSpec) -> u32 {
    GpuUse::of(st, pf).available(m, parent, t)
}

/// What one physical GPU holds now: the input of the placement rule.
pub struct GpuUse<'a> {
    pub count: u32,
    pub type_id: Option<u32>,
    pub parents: Vec<&'a str>,
    /// The GPU is in mixed-size mode (recorded-behaviour §4).
    pub mixed: bool,
    /// The vGPUs' types, one entry per vGPU (mixed-size mode counts each type and the
    /// framebuffer they take).
    pub types: Vec<u32>,
    /// The GPU is in MIG mode now (recorded-behaviour §5): only MIG-backed types, each in a
    /// GPU instance of its profile.
    pub mig: bool,
    /// Per GPU instance profile: its instances, and those no vGPU holds yet.
    pub gis: BTreeMap<u32, u32>,
    pub free_gis: BTreeMap<u32, u32>,
    /// The loaded driver's branch: its type ids (None: the catalog's table).
    pub branch: Option<u32>,
}

impl<'a> GpuUse<'a> {
    pub fn of(st: &'a State, pf: &str) -> GpuUse<'a> {
        let mut u = GpuUse::idle(st.mixed_size.contains(pf));
        u.branch = super::branch::loaded_version(st)
            .as_deref()
            .and_then(catalog::branch_of);
        u.mig = st.mig_current.contains(pf);
        if u.mig {
            for g in st.gpu_instances.iter().filter(|g| g.pf == pf) {
                *u.gis.entry(g.profile).or_insert(0) += 1;
            }
            u.free_gis = super::mig::free_instances(st, pf);
        }
        for v in st.vgpus.iter().filter(|v| v.pf == pf) {
            u.count += 1;
            u.type_id.get_or_insert(v.type_id);
            u.parents.push(&v.parent);
            u.types.push(v.type_id);
        }
        u
    }

    /// A GPU holding no vGPU.
    pub fn idle(mixed: bool) -> GpuUse<'a> {
        GpuUse {
            count: 0,
            type_id: None,
            parents: Vec::new(),
            mixed,
            types: Vec::new(),
            mig: false,
            gis: BTreeMap::new(),
            free_gis: BTreeMap::new(),
            branch: None,
        }
    }

    /// The types of `m`'s GPU on the branch this use was read on.
    pub fn catalog(&self, m: &Model) -> &'static [TypeSpec] {
        match self.branch {
            Some(b) => catalog::types_on_branch(m.gpu, b),
            None => catalog::types_for(m.gpu),
        }
    }

    /// Whether the driver lists type `t` on this GPU's parents now: time-sliced types outside
    /// MIG mode; in MIG mode, a MIG-backed type once a GPU instance of its profile exists
    /// (recorded-behaviour §5: the type directories appear once MIG mode is on and GPU
    /// instances exist; instances wiped by `sriov-manage`, the lists come back empty).
    pub fn listed(&self, t: &TypeSpec) -> bool {
        match t.gi_profile {
            Some(p) => self.mig && self.gis.contains_key(&p),
            None => !self.mig,
        }
    }

    /// Equal-size mode: one type per GPU, `max_instance` per GPU, one vGPU per VF.
    /// Mixed-size mode: types of any size side by side, each up to its `max_instance`, as long
    /// as their framebuffers fit in the GPU's (its largest type's); one vGPU per VF. NVIDIA's
    /// real mixed-size placement also aligns each vGPU in the framebuffer (placement ids), so a
    /// real GPU may refuse a mix that fits by size: *a guess*, a simplification.
    /// MIG mode: a MIG-backed type has room while a GPU instance of its profile is free; types
    /// of several profiles sit side by side (stackhpc's A100: 2-20C and 1-10C on one GPU).
    pub fn available(&self, m: &Model, parent: &str, t: &TypeSpec) -> u32 {
        let left = if self.mig || t.mig_backed() {
            match t.gi_profile {
                Some(p) if self.mig => self.free_gis.get(&p).copied().unwrap_or(0),
                _ => 0,
            }
        } else if self.mixed {
            let all = self.catalog(m);
            let total = all.iter().map(|x| x.framebuffer_mib).max().unwrap_or(0);
            let used: u32 = self
                .types
                .iter()
                .filter_map(|id| all.iter().find(|x| x.id == *id))
                .map(|x| x.framebuffer_mib)
                .sum();
            let same = self.types.iter().filter(|id| **id == t.id).count() as u32;
            let by_fb = total.saturating_sub(used) / t.framebuffer_mib.max(1);
            t.max_instance.saturating_sub(same).min(by_fb)
        } else {
            if self.type_id.is_some_and(|id| id != t.id) {
                return 0;
            }
            t.max_instance.saturating_sub(self.count)
        };
        if m.sriov_total > 0 {
            if self.parents.contains(&parent) {
                0
            } else {
                left.min(1)
            }
        } else {
            left
        }
    }
}

pub fn render_gpu(root: &Path, m: &Model, st: &State, pf: &str) -> Result<()> {
    let d = devdir(m, pf);
    let over = st.overrides.get(pf).map(String::as_str).unwrap_or("(null)");
    put(root, &format!("{d}/driver_override"), &format!("{over}\n"))?;
    render_driver_link(root, m, st, pf)?;
    render_iommu_dev(root, m, st, pf)?;
    let sriov = m.advertised_vfs() > 0 && st.bound.get(pf).is_some_and(|d| d == "nvidia");
    let numvfs = if sriov {
        st.numvfs.get(pf).copied().unwrap_or(0)
    } else {
        0
    };
    if sriov {
        put(
            root,
            &format!("{d}/sriov_totalvfs"),
            &format!("{}\n", m.advertised_vfs()),
        )?;
        put(root, &format!("{d}/sriov_drivers_autoprobe"), "1\n")?;
    } else {
        for f in ["sriov_totalvfs", "sriov_numvfs", "sriov_drivers_autoprobe"] {
            unlink(root, &format!("{d}/{f}"));
        }
    }
    // VFs: present ones rendered, the rest removed.
    for (i, vf) in m.vfs_of(pf).iter().enumerate() {
        let vd = devdir(m, vf);
        if (i as u32) < numvfs {
            if !root.join(&vd).exists() {
                pci_static(
                    root,
                    m,
                    vf,
                    "0x10de",
                    &format!("0x{:04x}", m.device),
                    "0x10de",
                    &format!("0x{:04x}", m.subsystem_device),
                    &format!("0x{:06x}", m.class),
                    std::fs::read_to_string(root.join(format!("{d}/numa_node")))
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0),
                )?;
            }
            link(
                root,
                &format!("sys/bus/pci/devices/{vf}"),
                &format!("../../../devices/{}/{vf}", m.pci_root(vf)),
            )?;
            link(root, &format!("{vd}/physfn"), &format!("../{pf}"))?;
            link(root, &format!("{d}/virtfn{i}"), &format!("../{vf}"))?;
            render_driver_link(root, m, st, vf)?;
            render_iommu_dev(root, m, st, vf)?;
        } else {
            unlink(root, &format!("{d}/virtfn{i}"));
            unlink(root, &format!("sys/bus/pci/devices/{vf}"));
            let g = iommu_group(m, vf);
            rmtree(root, &format!("sys/kernel/iommu_groups/{g}"));
            unlink(root, &format!("sys/class/mdev_bus/{vf}"));
            rmtree(root, &vd);
        }
    }
    render_types(root, m, st, pf)?;
    prune_dangling(root, "sys/bus/mdev/devices");
    if sriov {
        // Last, as the kernel shows it: `sriov_numvfs_show` reads `num_VFs` under the device
        // lock that `sriov_numvfs_store` holds while it adds the VFs, and `num_VFs` is set
        // after they were added (drivers/pci/iov.c). A reader that sees the count sees the VFs
        // (the simulator's clock thread renders while vgpuctl reads).
        put(root, &format!("{d}/sriov_numvfs"), &format!("{numvfs}\n"))?;
    }
    Ok(())
}

/// Remove symlinks whose target is gone (an mdev device whose VF disappeared).
fn prune_dangling(root: &Path, rel: &str) {
    for e in std::fs::read_dir(root.join(rel))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !e.path().exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// mdev type directories / vendor-VFIO files and vGPU devices of one GPU, from the state.
pub fn render_types(root: &Path, m: &Model, st: &State, pf: &str) -> Result<()> {
    let mut candidates: Vec<String> = m.vfs_of(pf);
    candidates.push(pf.to_string());
    let ready = parents(m, st, pf);
    let usage = GpuUse::of(st, pf);
    for p in &candidates {
        render_parent(root, m, st, pf, p, ready.contains(p), &usage, false)?;
    }
    Ok(())
}

/// One VF's vGPU group appearing (the driver filled it in): move the staged one into place when
/// there is one, then bring only what differs from the staged copy up to date.
pub fn render_group(root: &Path, m: &Model, st: &State, pf: &str, vf: &str) -> Result<()> {
    let usage = GpuUse::of(st, pf);
    if usage.mig {
        // The staged group holds a GPU's types outside MIG mode; a MIG-mode list depends on
        // the GPU instances of the moment: built from the state instead.
        rmtree(root, &staged_group_rel(vf));
        let ready = parents(m, st, pf).iter().any(|p| p == vf);
        return render_parent(root, m, st, pf, vf, ready, &usage, false);
    }
    let mut idle = GpuUse::idle(usage.mixed);
    idle.branch = usage.branch;
    let adopted = adopt_group(root, m, vf, |group| {
        // The staged group was built for a GPU holding no vGPU.
        for t in usage.catalog(m) {
            let avail = usage.available(m, vf, t);
            if m.iface == Iface::Mdev && avail != idle.available(m, vf, t) {
                let td = format!("{group}/{}", m.type_dir(vf, t.id));
                put(
                    root,
                    &format!("{td}/available_instances"),
                    &format!("{avail}\n"),
                )?;
            }
        }
        if m.iface == Iface::VendorVfio {
            put(
                root,
                &format!("{group}/creatable_vgpu_types"),
                &creatable_list(m, vf, &usage),
            )?;
        }
        Ok(())
    });
    let ready = parents(m, st, pf).iter().any(|p| p == vf);
    render_parent(root, m, st, pf, vf, ready, &usage, adopted)
}

/// `creatable_vgpu_types` of a vendor-VFIO VF: the types with room on it now.
fn creatable_list(m: &Model, p: &str, usage: &GpuUse) -> String {
    let mut list = String::from("ID    : vGPU Name\n");
    for t in usage.catalog(m) {
        if usage.available(m, p, t) > 0 {
            list.push_str(&format!("{:<6}: {}\n", t.id, t.name));
        }
    }
    list
}

/// The vGPU files of one parent. `adopted`: its group was just moved in from staging, its
/// availability already brought up to date before the rename, so its type files are left alone.
#[allow(clippy::too_many_arguments)]
fn render_parent(
    root: &Path,
    m: &Model,
    st: &State,
    pf: &str,
    p: &str,
    is_parent: bool,
    usage: &GpuUse,
    adopted: bool,
) -> Result<()> {
    let types = super::branch::types(m, st);
    let pd = devdir(m, p);
    if !root.join(&pd).exists() {
        return Ok(());
    }
    // mdev
    if is_parent && m.iface == Iface::Mdev {
        let group = format!("{pd}/mdev_supported_types");
        let mut built = false;
        if !root.join(&group).exists() {
            // A group appears whole, as the driver registers it with one
            // `mdev_register_parent` call: built under a temp name and renamed in, so a
            // reader never lists half of its types (and judges a VF with room full).
            let tmp = scratch_name();
            for t in types.iter().filter(|t| usage.listed(t)) {
                build_type_dir(
                    root,
                    &format!("{tmp}/{}", m.type_dir(p, t.id)),
                    t,
                    usage.available(m, p, t),
                )?;
            }
            std::fs::create_dir_all(root.join(&tmp))?;
            if std::fs::rename(root.join(&tmp), root.join(&group)).is_ok() {
                built = true;
            } else {
                rmtree(root, &tmp);
            }
        }
        // A group just built is current, and an adopted one got the GPU's availability before
        // its rename (render_group): reading their files back would double the cost of every
        // VF's group (the clock fell seconds behind while 224 groups came due at once).
        for t in types.iter().filter(|_| !built) {
            let td = format!("{group}/{}", m.type_dir(p, t.id));
            if !usage.listed(t) {
                // A MIG model's list follows its mode and GPU instances.
                if root.join(&td).exists() {
                    rmtree(root, &td);
                }
                continue;
            }
            let avail = format!("{}\n", usage.available(m, p, t));
            if adopted && root.join(&td).exists() {
                continue;
            }
            if !root.join(&td).exists() {
                // A type missing from a group that is there (a crash between two renders).
                let tmp = scratch_name();
                build_type_dir(root, &tmp, t, usage.available(m, p, t))?;
                if std::fs::rename(root.join(&tmp), root.join(&td)).is_err() {
                    rmtree(root, &tmp);
                }
                continue;
            }
            put(root, &format!("{td}/name"), &format!("{}\n", t.name))?;
            put(
                root,
                &format!("{td}/description"),
                &format!("{}\n", t.description()),
            )?;
            put(root, &format!("{td}/device_api"), "vfio-pci\n")?;
            put(root, &format!("{td}/available_instances"), &avail)?;
            put_mode(root, &format!("{td}/create"), "", 0o200)?;
            std::fs::create_dir_all(root.join(format!("{td}/devices")))?;
        }
        // The parent is listed under mdev_bus once its group is there.
        link(
            root,
            &format!("sys/class/mdev_bus/{p}"),
            &format!("../../devices/{}/{p}", m.pci_root(p)),
        )?;
    } else {
        unlink(root, &format!("sys/class/mdev_bus/{p}"));
        rmtree(root, &format!("{pd}/mdev_supported_types"));
    }
    // vendor-specific VFIO
    if is_parent && m.iface == Iface::VendorVfio && p != pf {
        let held = st.vgpus.iter().find(|v| v.parent == *p);
        let current = held.map(|v| v.type_id).unwrap_or(0);
        // The driver's output: the vGPU's GPU instance (MIG-backed), else 0 (*a guess*).
        let gi = held.map(|v| v.gpu_instance.unwrap_or(0));
        let list = creatable_list(m, p, usage);
        if !root.join(format!("{pd}/nvidia")).exists() {
            // The group appears whole (see the mdev case): a reader never finds the type list
            // without `current_vgpu_type` beside it.
            let tmp = scratch_name();
            put(root, &format!("{tmp}/creatable_vgpu_types"), &list)?;
            put(
                root,
                &format!("{tmp}/current_vgpu_type"),
                &format!("{current}\n"),
            )?;
            put(root, &format!("{tmp}/vgpu_params"), "\n")?;
            render_vendor_outputs(root, st, &tmp, gi, "")?;
            if std::fs::rename(root.join(&tmp), root.join(format!("{pd}/nvidia"))).is_err() {
                rmtree(root, &tmp);
            }
        }
        put(root, &format!("{pd}/nvidia/creatable_vgpu_types"), &list)?;
        put(
            root,
            &format!("{pd}/nvidia/current_vgpu_type"),
            &format!("{current}\n"),
        )?;
        put(root, &format!("{pd}/nvidia/vgpu_params"), "\n")?;
        render_vendor_outputs(root, st, &pd, gi, "/nvidia")?;
        render_vfio_cdev(root, m, p)?;
    } else {
        rmtree(root, &format!("{pd}/nvidia"));
        rmtree(root, &format!("{pd}/vfio-dev"));
    }
    if adopted {
        // No vGPU can exist on a parent whose group just appeared.
        return Ok(());
    }
    // mdev devices: keep those in the state, remove the rest.
    let wanted: Vec<&super::state::Vgpu> = st
        .vgpus
        .iter()
        .filter(|v| v.parent == *p && !v.uuid.is_empty())
        .collect();
    if let Ok(rd) = std::fs::read_dir(root.join(&pd)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if uuid::Uuid::parse_str(&name).is_ok() && !wanted.iter().any(|v| v.uuid == name) {
                rmtree(root, &format!("{pd}/{name}"));
                unlink(root, &format!("sys/bus/mdev/devices/{name}"));
            }
        }
    }
    for v in wanted {
        render_mdev_device(root, m, v)?;
    }
    Ok(())
}

/// A fresh name in the root's scratch directory, for a tree built before it is renamed in.
fn scratch_name() -> String {
    format!(
        "{}/tmp/t-{}",
        super::state::STATE_DIR,
        uuid::Uuid::new_v4().simple()
    )
}

/// One mdev type directory with its files, at `rel` (a scratch path renamed in by the caller).
fn build_type_dir(root: &Path, rel: &str, t: &TypeSpec, avail: u32) -> Result<()> {
    std::fs::create_dir_all(root.join(format!("{rel}/devices")))?;
    // Plain creates, no compare: a VF enable writes thousands.
    for (f, c, mode) in [
        ("name", format!("{}\n", t.name), 0o444),
        ("description", format!("{}\n", t.description()), 0o444),
        ("device_api", "vfio-pci\n".to_string(), 0o444),
        ("available_instances", format!("{avail}\n"), 0o644),
        ("create", String::new(), 0o200),
    ] {
        fresh_file(root, &format!("{rel}/{f}"), &c, mode)?;
    }
    Ok(())
}

/// The 580 branch's output attributes (recorded-behaviour.md §1; cubecos issue 312, kubevirt
/// issue 17642): `gpu_instance_id` and `placement_id` are filled in by the driver once the VF
/// holds a vGPU and read ENXIO before. A plain file cannot fail a read, so before a vGPU they
/// are links to nothing: a read fails (ENOENT, where the kernel says ENXIO) and a write fails
/// too. Their values once set are a *guess* (0, and the VF's place on its GPU is not modelled).
/// `warm_update` is there only on a 580-branch driver, making its six files.
fn render_vendor_outputs(
    root: &Path,
    st: &State,
    pd: &str,
    gi: Option<u32>,
    sub: &str,
) -> Result<()> {
    for f in ["gpu_instance_id", "placement_id"] {
        let rel = format!("{pd}{sub}/{f}");
        let is_link =
            std::fs::symlink_metadata(root.join(&rel)).is_ok_and(|m| m.file_type().is_symlink());
        if let Some(gi) = gi {
            if is_link {
                unlink(root, &rel);
            }
            let v = if f == "gpu_instance_id" { gi } else { 0 };
            put(root, &rel, &format!("{v}\n"))?;
        } else if !is_link {
            let _ = std::fs::remove_file(root.join(&rel));
            link(root, &rel, ".ENXIO-before-a-vgpu-exists")?;
        }
    }
    let branch_580 = super::branch::loaded_version(st)
        .as_deref()
        .and_then(catalog::branch_of)
        .is_some_and(|major| major >= 580);
    let warm = format!("{pd}{sub}/warm_update");
    if branch_580 {
        put(root, &warm, "0\n")?;
    } else {
        let _ = std::fs::remove_file(root.join(&warm));
    }
    Ok(())
}

/// The VF's iommufd cdev: `nvidia.ko` registers each vendor-VFIO VF as a VFIO device, which
/// gives it a `vfio-dev/vfioN` directory (and `/dev/vfio/devices/vfioN`) besides its group
/// (recorded-behaviour.md §1, kubevirt issue 17642). N is the VF's place among all VFs of the
/// host, a stable stand-in for the kernel's probe-order number.
fn render_vfio_cdev(root: &Path, m: &Model, vf: &str) -> Result<()> {
    let n = vfio_cdev_number(m, vf);
    let d = format!("{}/vfio-dev/vfio{n}", devdir(m, vf));
    std::fs::create_dir_all(root.join(&d))?;
    put(root, &format!("{d}/dev"), &format!("511:{n}\n"))
}

pub fn vfio_cdev_number(m: &Model, vf: &str) -> usize {
    m.pfs
        .iter()
        .flat_map(|pf| m.vfs_of(pf))
        .position(|v| v == vf)
        .unwrap_or(0)
}

pub fn render_mdev_device(root: &Path, m: &Model, v: &super::state::Vgpu) -> Result<()> {
    let pd = devdir(m, &v.parent);
    let dir = m.type_dir(&v.parent, v.type_id);
    let u = &v.uuid;
    link(
        root,
        &format!("{pd}/{u}/mdev_type"),
        &format!("../mdev_supported_types/{dir}"),
    )?;
    put_mode(root, &format!("{pd}/{u}/remove"), "", 0o200)?;
    link(
        root,
        &format!("{pd}/mdev_supported_types/{dir}/devices/{u}"),
        &format!("../../../{u}"),
    )?;
    link(
        root,
        &format!("sys/bus/mdev/devices/{u}"),
        &format!(
            "../../../devices/{}/{}/{u}",
            m.pci_root(&v.parent),
            v.parent
        ),
    )?;
    Ok(())
}

/// Module name of a driver (for the "is it loaded" question).
pub fn module_of(driver: &str) -> &str {
    driver_module(driver)
}

/// The driver that probing binds to an NVIDIA function now (no override).
pub fn default_driver(m: &Model, st: &State) -> Option<&'static str> {
    if st.modules.contains("nvidia") && (m.vgpu_capable() || st.datacenter_driver.is_some()) {
        Some("nvidia")
    } else if st.modules.contains("nouveau") {
        Some("nouveau")
    } else {
        None
    }
}

pub fn fresh_is_vfio(m: &Model) -> bool {
    m.fresh == FreshDriver::VfioPci
}

// ---------------------------------------------------------------------------------------------
// Staging: VF directories built ahead of time

/// Where the VFs of a pending `sriov-manage -e` (identified by its due time) are built.
pub fn staging_rel(pf: &str, due_ms: u64) -> String {
    format!("{}/staging/{pf}-{due_ms}", super::state::STATE_DIR)
}

/// Build, in a scratch root, the VF directories `pf` will have once its VFs appear, each with
/// its vGPU group. Runs on a background thread while the kernel "takes" `vf_delay_ms`, so that
/// the VFs and later each group can appear with a rename instead of thousands of file creations
/// at their due time (a real kernel creates them in memory). `st` is a snapshot of the state
/// when `sriov-manage` ran.
pub fn stage_vfs(root: &Path, m: &Model, mut st: State, pf: &str, due_ms: u64) -> Result<()> {
    let scratch = root.join(staging_rel(pf, due_ms));
    let numa = std::fs::read_to_string(root.join(format!("{}/numa_node", devdir(m, pf))))
        .unwrap_or_else(|_| "0\n".into());
    put(&scratch, &format!("{}/numa_node", devdir(m, pf)), &numa)?;
    st.vgpus.retain(|v| v.pf != pf);
    st.numvfs.insert(pf.to_string(), m.sriov_total);
    for vf in m.vfs_of(pf) {
        st.bound.insert(vf.clone(), "nvidia".into());
        st.vf_groups.insert(vf);
    }
    render_gpu(&scratch, m, &st, pf)?;
    std::fs::write(scratch.join(".complete"), format!("iommu={}\n", st.iommu))?;
    Ok(())
}

/// The name of a VF's vGPU group directory on this interface.
fn group_name(m: &Model) -> &'static str {
    match m.iface {
        Iface::Mdev => "mdev_supported_types",
        Iface::VendorVfio => "nvidia",
    }
}

/// Where a VF's staged vGPU group waits for its time (`vf_group_ms`).
pub fn staged_group_rel(vf: &str) -> String {
    format!("{}/staging/groups/{vf}", super::state::STATE_DIR)
}

/// Move staged VF directories into place, one rename per VF, when staging finished for the same
/// IOMMU state; each VF's group is set aside first, to appear at its own time. Returns whether
/// it did; the caller renders the rest as usual either way.
pub fn adopt_staged(root: &Path, m: &Model, pf: &str, due_ms: u64, iommu: bool) -> bool {
    let scratch = root.join(staging_rel(pf, due_ms));
    let complete = std::fs::read_to_string(scratch.join(".complete"))
        .is_ok_and(|c| c == format!("iommu={iommu}\n"));
    if complete {
        for vf in m.vfs_of(pf) {
            let rel = devdir(m, &vf);
            if root.join(&rel).exists() {
                continue;
            }
            let aside = root.join(staged_group_rel(&vf));
            let _ = std::fs::remove_dir_all(&aside);
            if std::fs::create_dir_all(&aside).is_ok() {
                let g = group_name(m);
                let _ = std::fs::rename(scratch.join(&rel).join(g), aside.join(g));
            }
            let _ = std::fs::rename(scratch.join(&rel), root.join(&rel));
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    complete
}

/// Move a VF's staged vGPU group into place; whether there was one. The group is set aside
/// when its VF was adopted, or, when staging finished only after the VFs were due (a busy
/// machine), still in the finished staging tree.
fn adopt_group(root: &Path, m: &Model, vf: &str, fix: impl Fn(&str) -> Result<()>) -> bool {
    let g = group_name(m);
    let dest = root.join(devdir(m, vf)).join(g);
    let aside = root.join(staged_group_rel(vf));
    let mut sources = vec![aside.join(g)];
    if !aside.join(g).exists() {
        let pf = pf_of(m, vf).unwrap_or_default();
        let staging = root.join(super::state::STATE_DIR).join("staging");
        for e in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{pf}-")) && e.path().join(".complete").exists() {
                sources.push(e.path().join(devdir(m, vf)).join(g));
            }
        }
    }
    let mut moved = false;
    for src in sources {
        if dest.exists() || !src.exists() {
            continue;
        }
        // Brought up to date before it appears: a reader never sees the idle GPU's numbers.
        let rel = src
            .strip_prefix(root)
            .unwrap_or(&src)
            .to_string_lossy()
            .to_string();
        if fix(&rel).is_ok() && std::fs::rename(&src, &dest).is_ok() {
            moved = true;
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&aside);
    moved
}
