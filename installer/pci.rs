//! PCI addresses (`ssss:bb:dd.f`) and UUIDs, validated before they become sysfs paths.
//!
//! Every address that comes from a profile, rc.local, host.conf or the command line goes through
//! [`PciAddr::parse`]: it accepts only hex digits in the kernel's ranges (device <= 0x1f,
//! function <= 7), so a value like `../../etc` or `0000:e8:00.0;reboot` can never reach a path
//! or a program's arguments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the kernel lists PCI functions, relative to the root.
pub const PCI_DEVICES: &str = "sys/bus/pci/devices";

/// A PCI function address. Displays in the kernel's canonical form `0000:e8:00.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddr {
    /// PCI segment. Usually 0; VMD domains go beyond 0xffff, hence u32.
    pub domain: u32,
    pub bus: u8,
    /// 0..=0x1f
    pub device: u8,
    /// 0..=7
    pub function: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid PCI address {input:?}: {reason} (expected ssss:bb:dd.f like 0000:e8:00.0, or bb:dd.f)"
)]
pub struct PciAddrError {
    pub input: String,
    pub reason: String,
}

fn hex_field(input: &str, part: &str, what: &str, max_digits: usize) -> Result<u32, PciAddrError> {
    let err = |reason: String| PciAddrError {
        input: input.to_string(),
        reason,
    };
    if part.is_empty() {
        return Err(err(format!("empty {what}")));
    }
    if part.len() > max_digits {
        return Err(err(format!(
            "{what} {part:?} has more than {max_digits} hex digits"
        )));
    }
    if !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(format!("{what} {part:?} is not hexadecimal")));
    }
    u32::from_str_radix(part, 16).map_err(|e| err(format!("{what} {part:?}: {e}")))
}

impl PciAddr {
    /// Parse `ssss:bb:dd.f`, `bb:dd.f` (CloudPods, lspci) or a shortened form such as
    /// `0:e8:0.0` (accepted by `sriov-manage` and written by operators, as in the seed).
    pub fn parse(input: &str) -> Result<PciAddr, PciAddrError> {
        let err = |reason: &str| PciAddrError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        if let Some(c) = input
            .chars()
            .find(|c| !(c.is_ascii_hexdigit() || *c == ':' || *c == '.'))
        {
            return Err(err(&format!("character {c:?} is not allowed")));
        }
        let parts: Vec<&str> = input.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [d, b, df] => (hex_field(input, d, "domain", 8)?, *b, *df),
            [b, df] => (0, *b, *df),
            _ => return Err(err("wrong number of ':' separators")),
        };
        let bus = hex_field(input, bus, "bus", 2)?;
        let (dev, func) = devfn
            .split_once('.')
            .ok_or_else(|| err("missing '.' between device and function"))?;
        let device = hex_field(input, dev, "device", 2)?;
        if device > 0x1f {
            return Err(err(&format!("device {dev:?} is above 0x1f")));
        }
        let function = hex_field(input, func, "function", 1)?;
        if function > 7 {
            return Err(err(&format!("function {func:?} is above 7")));
        }
        Ok(PciAddr {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }

    /// `e8:00.0`: the form CloudPods' `nvidia_vgpu_pfs` and `lspci` use (domain left out).
    pub fn short(&self) -> String {
        format!("{:02x}:{:02x}.{:x}", self.bus, self.device, self.function)
    }

    /// The physical function slot of this address with function 0 (`e8:00.4` -> `e8:00.0`).
    pub fn with_function(&self, function: u8) -> PciAddr {
        PciAddr { function, ..*self }
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddr {
    type Err = PciAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PciAddr::parse(s)
    }
}

impl Serialize for PciAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PciAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// True for the hyphenated 8-4-4-4-12 hex form, the only one the kernel's mdev `create` accepts
/// (the uuid crate would also take braces, `urn:uuid:` and the simple form).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A name that may become one path component under sysfs: an mdev parent that is not a PCI
/// function (`mtty`), a type directory (`nvidia-575`, `vfio-pci-575`, `mtty-2`).
/// Only `[A-Za-z0-9_.:-]`, not `.`/`..`, at most 255 bytes.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An mdev parent as it may appear in a path: a PCI address (returned in canonical form) or a
/// plain name such as `mtty` (see [`is_safe_name`], without `:`). The error says why not.
pub fn check_mdev_parent(parent: &str) -> Result<String, String> {
    match PciAddr::parse(parent) {
        Ok(a) => Ok(a.to_string()),
        Err(_) if is_safe_name(parent) && !parent.contains(':') => Ok(parent.to_string()),
        Err(e) => Err(format!(
            "parent {parent:?} is neither a PCI address nor a plain name ({})",
            e.reason
        )),
    }
}

/// nvidia-smi prints an eight-digit domain in upper case; sysfs a four-digit one in lower case.
pub fn from_nvidia_smi(addr: &str) -> Option<String> {
    let (domain, rest) = addr.split_once(':')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    if rest.len() != 7 {
        return None;
    }
    Some(format!("{domain:04x}:{}", rest.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PciAddr {
        PciAddr::parse(s).unwrap()
    }

    #[test]
    fn parses_full_short_and_abbreviated_forms() {
        let want = PciAddr {
            domain: 0,
            bus: 0xe8,
            device: 0,
            function: 0,
        };
        assert_eq!(p("0000:e8:00.0"), want);
        assert_eq!(p("e8:00.0"), want);
        assert_eq!(p("0:e8:0.0"), want); // the seed's sriov-manage argument
        assert_eq!(p("0000:E8:00.0"), want);
        assert_eq!(p("0000:e8:04.7").function, 7);
        assert_eq!(p("0000:e8:1f.0").device, 0x1f);
        assert_eq!(p("10000:00:00.0").domain, 0x10000); // VMD domain
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(p("0:e8:0.0").to_string(), "0000:e8:00.0");
        assert_eq!(p("0:E8:4.3").to_string(), "0000:e8:04.3");
        assert_eq!(p("0000:67:00.4").short(), "67:00.4");
        assert_eq!(
            p("0000:e8:04.2").with_function(0).to_string(),
            "0000:e8:04.0"
        );
    }

    #[test]
    fn rejects_out_of_range_and_malformed() {
        for bad in [
            "",
            "0000:e8:20.0",
            "0000:e8:00.8",
            "0000:e8:00",
            "0000:e8",
            "0000:e8:00.00",
            "0000:e8:000.0",
            "0000:100:00.0",
            "0:0:0:00.0",
            "0000:e8:00.0 ",
            " 0000:e8:00.0",
            "0000:e8:00.0;reboot",
            "../../etc",
            "0000:e8:00.0/../..",
            "0000:g8:00.0",
            "0000:e8:.0",
            "0000:e8:00.",
            "$(id):00.0",
            "0000:e8:00.0\n",
            "123456789:00:00.0",
        ] {
            assert!(PciAddr::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn error_names_the_input_and_reason() {
        let e = PciAddr::parse("0000:e8:00.9").unwrap_err().to_string();
        assert!(e.contains("0000:e8:00.9") && e.contains("function"), "{e}");
        let e = PciAddr::parse("../x").unwrap_err().to_string();
        assert!(e.contains("'/'"), "{e}");
    }

    #[test]
    fn serde_round_trip_uses_canonical_string() {
        let a = p("0:e8:0.4");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"0000:e8:00.4\"");
        assert_eq!(serde_json::from_str::<PciAddr>(&json).unwrap(), a);
        assert!(serde_json::from_str::<PciAddr>("\"../x\"").is_err());
    }

    #[test]
    fn uuid_check() {
        assert!(is_uuid("2f82ee72-3ac5-4615-9c0b-327c12e8c83d"));
        assert!(is_uuid("242E5EA7-90E2-4D6E-AFEB-A0B9A656C108"));
        assert!(!is_uuid("2f82ee723ac546159c0b327c12e8c83d"));
        assert!(!is_uuid("{2f82ee72-3ac5-4615-9c0b-327c12e8c83d}"));
        assert!(!is_uuid("2f82ee72-3ac5-4615-9c0b-327c12e8c83"));
        assert!(!is_uuid("2f82ee72-3ac5-4615-9c0b-327c12e8c83g"));
        assert!(!is_uuid("2f82ee72_3ac5-4615-9c0b-327c12e8c83d"));
        assert!(!is_uuid(""));
    }

    #[test]
    fn mdev_parents() {
        assert_eq!(check_mdev_parent("0:e8:4.0").unwrap(), "0000:e8:04.0");
        assert_eq!(check_mdev_parent("mtty").unwrap(), "mtty");
        for bad in ["", "..", "a/b", "0000:e8:00.9", "x:y", "a b"] {
            assert!(check_mdev_parent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn safe_names() {
        for ok in [
            "mtty",
            "nvidia-575",
            "vfio-pci-575",
            "mtty-2",
            "0000:e8:00.4",
        ] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a;b", "$(x)", "a\nb"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
    }
}
