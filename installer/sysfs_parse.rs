//! Parsers for the text the kernel and the NVIDIA driver put in sysfs and procfs. Pure.

use std::collections::BTreeMap;

/// `description` of an mdev type, e.g. (from the seed)
/// `num_heads=4, frl_config=45, framebuffer=1024M, max_resolution=5120x2880, max_instance=32`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TypeDescription {
    pub num_heads: Option<u32>,
    pub frl_config: Option<u32>,
    pub framebuffer_mib: Option<u64>,
    pub max_resolution: Option<String>,
    pub max_instance: Option<u32>,
}

pub fn parse_description(text: &str) -> TypeDescription {
    let mut d = TypeDescription::default();
    for part in text.split([',', '\n']) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "num_heads" => d.num_heads = v.parse().ok(),
            "frl_config" => d.frl_config = v.parse().ok(),
            "framebuffer" => d.framebuffer_mib = parse_size_mib(v),
            "max_resolution" => d.max_resolution = Some(v.to_string()),
            "max_instance" | "max_instances" => d.max_instance = v.parse().ok(),
            _ => {}
        }
    }
    d
}

/// `1024M`, `24G`, `512` (MiB when no unit) -> MiB.
fn parse_size_mib(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()? {
        'M' | 'm' => (&v[..v.len() - 1], 1),
        'G' | 'g' => (&v[..v.len() - 1], 1024),
        'K' | 'k' => {
            return v[..v.len() - 1]
                .trim()
                .parse::<u64>()
                .ok()
                .map(|k| k / 1024)
        }
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// One line of the vendor-specific VFIO `creatable_vgpu_types` table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CreatableType {
    pub id: u32,
    pub name: String,
}

/// `creatable_vgpu_types`: a header (`ID    : vGPU Name`) then `1145  : NVIDIA L40S-1B` lines.
/// A used VF or a full GPU prints the header alone: an empty list, not an error.
pub fn parse_creatable(text: &str) -> Vec<CreatableType> {
    text.lines()
        .filter_map(|line| {
            let (id, name) = line.split_once(':')?;
            let id = id.trim().parse::<u32>().ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| CreatableType {
                id,
                name: name.to_string(),
            })
        })
        .collect()
}

/// Module names from `/proc/modules` (`nvidia 56807424 2 nvidia_vgpu_vfio, Live 0x0 (POE)`).
pub fn parse_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `/etc/os-release`: KEY=value with optional quotes.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// A hex id file such as `vendor` (`0x10de`).
pub fn parse_hex_u32(text: &str) -> Option<u32> {
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// The driver version from `/proc/driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.163.02  Tue ...`) or a bare version.
pub fn parse_nvidia_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// Whether a modprobe.d file blacklists nouveau.
pub fn blacklists_nouveau(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace();
        matches!((w.next(), w.next()), (Some("blacklist"), Some("nouveau")))
            || (l.contains("install nouveau") && l.contains("/bin/false"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_description() {
        let d = parse_description(
            "num_heads=4, frl_config=45, framebuffer=1024M, max_resolution=5120x2880, max_instance=32\n",
        );
        assert_eq!(d.num_heads, Some(4));
        assert_eq!(d.frl_config, Some(45));
        assert_eq!(d.framebuffer_mib, Some(1024));
        assert_eq!(d.max_resolution.as_deref(), Some("5120x2880"));
        assert_eq!(d.max_instance, Some(32));
    }

    #[test]
    fn description_garbage_is_empty_not_a_panic() {
        assert_eq!(parse_description(""), TypeDescription::default());
        let d = parse_description("framebuffer=xyzM, max_instance=-1, =,,==");
        assert_eq!(d.framebuffer_mib, None);
        assert_eq!(d.max_instance, None);
        assert_eq!(
            parse_description("framebuffer=48G").framebuffer_mib,
            Some(49152)
        );
    }

    #[test]
    fn creatable_table_from_a_real_l40s() {
        let t = "ID    : vGPU Name\n1145  : NVIDIA L40S-1B\n1147  : NVIDIA L40S-1Q\n";
        let v = parse_creatable(t);
        assert_eq!(
            v,
            vec![
                CreatableType {
                    id: 1145,
                    name: "NVIDIA L40S-1B".into()
                },
                CreatableType {
                    id: 1147,
                    name: "NVIDIA L40S-1Q".into()
                },
            ]
        );
        assert!(parse_creatable("ID    : vGPU Name\n").is_empty());
        assert!(parse_creatable("").is_empty());
    }

    #[test]
    fn modules_and_versions() {
        let m = parse_modules(
            "nvidia_vgpu_vfio 57344 0 - Live 0x0000000000000000 (O)\nnvidia 56807424 2 nvidia_vgpu_vfio, Live 0x0000000000000000 (POE)\n",
        );
        assert_eq!(m, vec!["nvidia_vgpu_vfio", "nvidia"]);
        assert_eq!(
            parse_nvidia_version(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.163.02  Tue Apr 22 2025\n"
            ),
            Some("550.163.02".into())
        );
        assert_eq!(
            parse_nvidia_version("550.163.02\n"),
            Some("550.163.02".into())
        );
    }

    #[test]
    fn os_release_quotes() {
        let m = parse_os_release("PRETTY_NAME=\"Ubuntu 22.04.5 LTS\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID='22.04'\n# c\n");
        assert_eq!(m["PRETTY_NAME"], "Ubuntu 22.04.5 LTS");
        assert_eq!(m["VERSION_ID"], "22.04");
        assert_eq!(parse_hex_u32("0x10de\n"), Some(0x10de));
    }

    #[test]
    fn nouveau_blacklist() {
        assert!(blacklists_nouveau(
            "blacklist nouveau\noptions nouveau modeset=0\n"
        ));
        assert!(!blacklists_nouveau("# blacklist nouveau\n"));
        assert!(!blacklists_nouveau("blacklist nouveaux\n"));
    }
}
