//! The sysfs/procfs parsers: an mdev type's `description`, vendor-VFIO `creatable_vgpu_types`,
//! /proc/modules, os-release, hex ids, the driver version. Never panic; what they parse renders
//! back to text that parses the same (so no field is half-read).
//! Input: any text, given to every parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpuctl::sysfs_parse::{self, TypeDescription};

fn render_description(d: &TypeDescription) -> String {
    let mut parts = Vec::new();
    if let Some(v) = d.num_heads {
        parts.push(format!("num_heads={v}"));
    }
    if let Some(v) = d.frl_config {
        parts.push(format!("frl_config={v}"));
    }
    if let Some(v) = d.framebuffer_mib {
        parts.push(format!("framebuffer={v}M"));
    }
    if let Some(v) = &d.max_resolution {
        parts.push(format!("max_resolution={v}"));
    }
    if let Some(v) = d.max_instance {
        parts.push(format!("max_instance={v}"));
    }
    parts.join(", ")
}

fuzz_target!(|data: &[u8]| {
    let t = String::from_utf8_lossy(data);
    let d = sysfs_parse::parse_description(&t);
    assert_eq!(
        sysfs_parse::parse_description(&render_description(&d)),
        d,
        "{t:?}"
    );

    let c = sysfs_parse::parse_creatable(&t);
    let rendered: String = std::iter::once("ID    : vGPU Name\n".to_string())
        .chain(c.iter().map(|x| format!("{:<5} : {}\n", x.id, x.name)))
        .collect();
    assert_eq!(sysfs_parse::parse_creatable(&rendered), c, "{t:?}");
    for x in &c {
        assert!(!x.name.is_empty() && x.name.trim() == x.name, "{x:?}");
    }

    let m = sysfs_parse::parse_modules(&t);
    assert!(m
        .iter()
        .all(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
    let _ = sysfs_parse::parse_os_release(&t);
    let _ = sysfs_parse::parse_hex_u32(&t);
    if let Some(v) = sysfs_parse::parse_nvidia_version(&t) {
        assert!(t.contains(&v));
    }
});
