//! vGPU type names: `<GPU>-<GB><series>` (`A40-24Q`, `0` GB = 512 MiB) and, MIG-backed,
//! `<GPU>-<slices>-<GB><series>` (`A100-1-5C`). Series: A apps, B PC, C compute, Q workstation.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeName {
    /// "A40" in "NVIDIA A40-24Q".
    pub gpu: String,
    pub mig_slices: Option<u32>,
    /// Framebuffer in MiB as the name says it.
    pub framebuffer_mib: u64,
    pub series: char,
}

/// Strip the vendor prefix the kernel puts in `name` files ("NVIDIA ", or "GRID " on old drivers).
pub fn short(name: &str) -> &str {
    let n = name.trim();
    n.strip_prefix("NVIDIA ")
        .or_else(|| n.strip_prefix("GRID "))
        .unwrap_or(n)
}

/// Two spellings of the same type name ("A40-24Q" and "NVIDIA A40-24Q") compare equal.
pub fn same(a: &str, b: &str) -> bool {
    short(a).eq_ignore_ascii_case(short(b))
}

pub fn parse(name: &str) -> Option<TypeName> {
    let s = short(name);
    let (head, last) = s.rsplit_once('-')?;
    let series = last.chars().last()?;
    if !series.is_ascii_alphabetic() {
        return None;
    }
    let gb: u64 = last[..last.len() - series.len_utf8()].parse().ok()?;
    let (gpu, mig) = match head.rsplit_once('-') {
        Some((g, slices)) if slices.chars().all(|c| c.is_ascii_digit()) && !slices.is_empty() => {
            (g, Some(slices.parse().ok()?))
        }
        _ => (head, None),
    };
    if gpu.is_empty() {
        return None;
    }
    Some(TypeName {
        gpu: gpu.to_string(),
        mig_slices: mig,
        framebuffer_mib: if gb == 0 { 512 } else { gb * 1024 },
        series: series.to_ascii_uppercase(),
    })
}

pub fn series_meaning(series: char) -> &'static str {
    match series.to_ascii_uppercase() {
        'A' => "virtual applications (RDSH, app streaming)",
        'B' => "virtual PC (business desktops)",
        'C' => "compute (AI, CUDA, no graphics)",
        'Q' => "RTX virtual workstation (professional graphics)",
        _ => "other",
    }
}

/// The name of a vendor-VFIO type id when no sysfs file names it (a VF whose type is set lists
/// nothing creatable): from the embedded catalog of known types.
pub fn name_for_id(id: &str) -> Option<String> {
    let n: u32 = id.parse().ok()?;
    crate::catalog::by_id(n).map(|(_, t)| t.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_names() {
        let t = parse("NVIDIA A40-24Q").unwrap();
        assert_eq!(t.gpu, "A40");
        assert_eq!(t.framebuffer_mib, 24576);
        assert_eq!(t.series, 'Q');
        assert_eq!(parse("NVIDIA A40-1B").unwrap().framebuffer_mib, 1024);
        assert_eq!(parse("T4-0B").unwrap().framebuffer_mib, 512);
        let m = parse("A100-1-5C").unwrap();
        assert_eq!(
            (m.gpu.as_str(), m.mig_slices, m.framebuffer_mib),
            ("A100", Some(1), 5120)
        );
        let ada = parse("NVIDIA RTX6000-Ada-12Q").unwrap();
        assert_eq!(ada.gpu, "RTX6000-Ada");
        assert!(parse("nvidia-565").is_none());
        assert!(parse("").is_none());
        assert!(parse("-4Q").is_none());
    }

    #[test]
    fn same_ignores_vendor_prefix() {
        assert!(same("A40-24Q", "NVIDIA A40-24Q"));
        assert!(!same("A40-24Q", "NVIDIA A40-24A"));
    }
}
