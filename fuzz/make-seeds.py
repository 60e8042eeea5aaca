#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/ from real samples: the seed
host's files (8x A40, Ubuntu 22.04), Ubuntu's and Rocky's GRUB defaults, the cloud-image
drop-in, the profiles under profiles/, and a few edge cases each editor must survive.
Multi-part inputs are NUL-separated (see fuzz_targets/common.rs). Re-run after changing
samples; the fuzzers add what they find to a working copy, never to this directory."""
import os, glob

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

def put(target, name, *parts):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    data = b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

UBUNTU_GRUB = """# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console
"""
ROCKY_GRUB = """GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
"""
CLOUDIMG = """# Cloud Image specific Grub settings for Generic Cloud Images
# CLOUD_IMG: This file was created/modified by the Cloud Image build process

# Set the recordfail timeout
GRUB_RECORDFAIL_TIMEOUT=0

# Do not wait on grub prompt
GRUB_TIMEOUT=0

# Set the default commandline
GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"

# Set the grub console type
GRUB_TERMINAL=console
"""
put("grub_default", "ubuntu-2204", UBUNTU_GRUB)
put("grub_default", "ubuntu-2204-odd", UBUNTU_GRUB + "\n")
put("grub_default", "ubuntu-cloudimg", UBUNTU_GRUB, CLOUDIMG)
put("grub_default", "rocky-94", ROCKY_GRUB)
put("grub_default", "selfref-dropin", UBUNTU_GRUB,
    'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=off"\n')
put("grub_default", "conflicts", 'export GRUB_CMDLINE_LINUX_DEFAULT=\'iommu=soft  quiet\'\r\nGRUB_CMDLINE_LINUX="intel-iommu=off"\r\n')
put("grub_default", "concat", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"$EXTRA\' splash\' # trailing\n')
put("grub_default", "unterminated", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet\nsplash"\n')
put("grub_default", "braces", 'X=a\nGRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} $X"', 'GRUB_CMDLINE_LINUX=', "GRUB_CMDLINE_LINUX_DEFAULT=nomodeset")
put("grub_default", "empty", "")
# Issue 12: shapes the shell executes that a line-start parser missed, and unset drop-ins.
put("grub_default", "two-on-a-line", 'GRUB_TIMEOUT=5; GRUB_CMDLINE_LINUX_DEFAULT="quiet splash nomodeset"\n')
put("grub_default", "prefix-assignments", 'FOO=1 GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX="x" true\n')
put("grub_default", "conditional", UBUNTU_GRUB, '[ -e /etc/x ] && GRUB_CMDLINE_LINUX_DEFAULT="quiet splash nomodeset"\nif true; then GRUB_CMDLINE_LINUX=""; fi\n')
put("grub_default", "unset-dropin", UBUNTU_GRUB, "unset GRUB_CMDLINE_LINUX_DEFAULT\n")
put("grub_default", "latin1-comment", b"# R\xe9glages\n" + UBUNTU_GRUB.encode())

SEED_CMDLINE = "BOOT_IMAGE=/vmlinuz-5.15.0-141-generic root=UUID=5f3a1c2e-8d9b-4c7a-9e11-2b3c4d5e6f70 ro quiet splash vt.handoff=7"
put("kargs", "ubuntu-cmdline", SEED_CMDLINE)
put("kargs", "ubuntu-cmdline-amd", SEED_CMDLINE, "iommu=pt")
put("kargs", "conflicts", "quiet iommu=soft intel-iommu=off splash iommu=soft", "intel_iommu=on iommu=pt")
put("kargs", "init-args", 'ro acpi_osi="Windows 2015" -- single iommu=soft', "iommu=pt")
put("kargs", "unterminated-quote", 'root=/dev/sda1 foo="bar baz', "intel_iommu=on iommu=pt")
put("kargs", "proxmox", "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n", "intel_iommu=on iommu=pt")
put("kargs", "bls-entry", "title Rocky Linux (5.14.0-427.13.1.el9_4.x86_64) 9.4 (Blue Onyx)\nversion 5.14.0-427.13.1.el9_4.x86_64\nlinux /vmlinuz-5.14.0-427.13.1.el9_4.x86_64\ninitrd /initramfs-5.14.0-427.13.1.el9_4.x86_64.img $tuned_initrd\noptions root=/dev/mapper/rl-root ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet $tuned_params\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rocky\n", "intel_iommu=on iommu=pt")
put("kargs", "bls-kernelopts", "title x\noptions $kernelopts\n", "iommu=pt")
put("kargs", "vfio", "quiet vfio-pci.ids=10de:2235 rd.driver.blacklist=nouveau", "vfio_pci.ids=10de:2236 nouveau.modeset=0")
put("kargs", "empty", "")

SEED_DESC = "num_heads=4, frl_config=45, framebuffer=1024M, max_resolution=5120x2880, max_instance=32\n"
put("sysfs", "a40-1b-description", SEED_DESC)
put("sysfs", "a40-24q-description", "num_heads=4, frl_config=60, framebuffer=24576M, max_resolution=7680x4320, max_instance=2\n")
put("sysfs", "t4-description", "num_heads=1, frl_config=60, framebuffer=16384M, max_resolution=4096x2160, max_instance=1")
put("sysfs", "creatable-l40s", "ID    : vGPU Name\n1145  : NVIDIA L40S-1B\n1146  : NVIDIA L40S-2B\n1155  : NVIDIA L40S-1Q\n1163  : NVIDIA L40S-48Q\n")
put("sysfs", "creatable-h200", "ID    : vGPU Name\n1428  : NVIDIA H200X-141C\n")
put("sysfs", "creatable-empty", "ID    : vGPU Name\n")
put("sysfs", "proc-modules", "nvidia_vgpu_vfio 86016 0 - Live 0x0000000000000000\nnvidia 56807424 2 nvidia_vgpu_vfio, Live 0x0 (POE)\nmdev 32768 1 nvidia_vgpu_vfio, Live 0x0\n")
put("sysfs", "nvidia-version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.163.02  Tue Apr  8 23:13:22 UTC 2025\nGCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
put("sysfs", "vendor", "0x10de\n")

SEED_RC = """#!/bin/bash
# rc.local

echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create
echo 242e5ea7-90e2-4d6e-afeb-a0b9a656c108 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create
exit 0
"""
put("rclocal", "seed", SEED_RC)
put("rclocal", "sriov-and-tee", "#!/bin/sh -e\n/usr/lib/nvidia/sriov-manage -e 0:e8:0.0 && sleep 30\nsudo echo \"2F82EE72-3AC5-4615-9C0B-327C12E8C83D\" | sudo tee -a /sys/bus/pci/devices/0000:e8:00.4/mdev_supported_types/nvidia-555/create >/dev/null\n/usr/lib/nvidia/sriov-manage -e ALL\r\n")
put("rclocal", "dynamic", "uuidgen > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create\necho $(uuidgen) > /sys/class/mdev_bus/0000:e8:04.1/mdev_supported_types/nvidia-575/create\necho `cat /root/u` >> /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create\n")
put("rclocal", "commented", "# vgpuctl: echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n")
put("rclocal", "bad-paths", "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/../../etc/mdev_supported_types/nvidia-555/create\necho 'unterminated > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n")
put("rclocal", "mdevctl-def", '{"mdev_type":"nvidia-575","start":"auto","attrs":[]}')
put("rclocal", "mdevctl-attrs", '{\n  "mdev_type": "mtty-2",\n  "start": "manual",\n  "attrs": [\n    {\n      "foo": "bar"\n    }\n  ]\n}\n')

SEED_HOSTCONF = "# CloudPods host agent\nport: 8885\nnvidia_vgpu_pfs:\n" + "".join(f"- 67:0{d}.{f}\n" for d in range(0, 2) for f in range(0, 8)) + "listen_interface: br0\n"
put("hostconf", "seed", SEED_HOSTCONF, "67:00.4 67:00.5 e8:04.0")
put("hostconf", "absent", "port: 8885\nlisten_interface: br0", "0000:67:00.4 0000:68:00.4")
put("hostconf", "flow", "nvidia_vgpu_pfs: [67:00.0, '68:00.0'] # gpus\r\nother: 1\r\n", "67:00.0")
put("hostconf", "quoted-block", "nvidia_vgpu_pfs:\n  - \"67:00.0\" # x\n\n# c\nother: 1", "")
put("hostconf", "scalar", "nvidia_vgpu_pfs: 67:00.0\n", "67:00.0 67:00.4")
put("hostconf", "twice", "nvidia_vgpu_pfs:\nnvidia_vgpu_pfs: []\n", "67:00.0")
put("hostconf", "bad-address", "nvidia_vgpu_pfs: []\n", "0001:67:00.0 ../x")

for p in sorted(glob.glob(os.path.join(REPO, "profiles", "*.toml"))):
    with open(p) as f:
        put("profile", os.path.basename(p), f.read())
bad = os.path.join(REPO, "tests", "bad-inputs")
for p in sorted(glob.glob(os.path.join(bad, "*.toml"))):
    with open(p, "rb") as f:
        put("profile", "bad-" + os.path.basename(p), f.read())
put("profile", "saved-vgpus", '[[vgpus]]\nuuid = "242e5ea7-90e2-4d6e-afeb-a0b9a656c108"\ntype_id = "nvidia-575"\ntype_name = "NVIDIA A40-24A"\nparent = "0000:e8:04.0"\ngpu = "0000:e8:00.0"\ninterface = "mdev"\n\nsriov = ["0000:e8:00.0"]\n')
put("profile", "url", '[driver]\nurl = "https://griddownloads.nvidia.com/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip?autho=st=1700000000~exp=1700003600~acl=/*~hmac=a5d806ec403b7ddbfe74cd163432eb9a17b0b0eab0eca6ee6c8192ef1a7352b7"\nsha256 = "' + "ab" * 32 + '"\n')
