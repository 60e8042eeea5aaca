//! The embedded GPU table: PCI device id (and, where one id names two products, subsystem id)
//! to model, architecture and vGPU capabilities. Cross-checked against pci.ids by a test.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Arch {
    Maxwell,
    Pascal,
    Volta,
    Turing,
    Ampere,
    Ada,
    Hopper,
    Blackwell,
}

impl Arch {
    /// Ampere and later create vGPUs on SR-IOV virtual functions.
    pub fn sriov(self) -> bool {
        matches!(
            self,
            Arch::Ampere | Arch::Ada | Arch::Hopper | Arch::Blackwell
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mig {
    No,
    Yes,
    /// NVIDIA's lists do not say; detect at run time.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Model {
    pub device_id: u16,
    /// Only for ids shared by two products.
    pub subsystem_id: Option<u16>,
    /// Product name as operators say it ("A40", "H100 SXM5 80GB").
    pub name: &'static str,
    /// The name vGPU type names start with ("A40" in "A40-24Q").
    pub type_prefix: &'static str,
    pub arch: Arch,
    pub memory_gib: u32,
    pub vgpu: bool,
    pub mig: Mig,
    /// Consumer (GeForce) card: never vGPU-capable.
    pub consumer: bool,
}

impl Model {
    pub fn sriov(&self) -> bool {
        self.vgpu && self.arch.sriov()
    }
}

const fn m(
    device_id: u16,
    name: &'static str,
    type_prefix: &'static str,
    arch: Arch,
    memory_gib: u32,
    mig: Mig,
) -> Model {
    Model {
        device_id,
        subsystem_id: None,
        name,
        type_prefix,
        arch,
        memory_gib,
        vgpu: true,
        mig,
        consumer: false,
    }
}

const fn sub(mut model: Model, subsystem_id: u16) -> Model {
    model.subsystem_id = Some(subsystem_id);
    model
}

const fn geforce(device_id: u16, name: &'static str, arch: Arch, memory_gib: u32) -> Model {
    Model {
        device_id,
        subsystem_id: None,
        name,
        type_prefix: "",
        arch,
        memory_gib,
        vgpu: false,
        mig: Mig::No,
        consumer: true,
    }
}

use Arch::*;
use Mig::{No, Unknown, Yes};

/// Every GPU of the reference's table (NVIDIA's vGPU support list), plus common GeForce cards so
/// that they are named and refused with a reason rather than called "unknown".
pub static MODELS: &[Model] = &[
    m(0x13bd, "Tesla M10", "M10", Maxwell, 32, No),
    m(0x13f2, "Tesla M60", "M60", Maxwell, 16, No),
    m(0x13f3, "Tesla M6", "M6", Maxwell, 8, No),
    m(0x1bb3, "Tesla P4", "P4", Pascal, 8, No),
    m(0x1bb4, "Tesla P6", "P6", Pascal, 16, No),
    m(0x1b38, "Tesla P40", "P40", Pascal, 24, No),
    m(0x15f7, "Tesla P100 PCIe 12GB", "P100C", Pascal, 12, No),
    m(0x15f8, "Tesla P100 PCIe 16GB", "P100", Pascal, 16, No),
    m(0x15f9, "Tesla P100 SXM2 16GB", "P100X", Pascal, 16, No),
    m(0x1db1, "Tesla V100 SXM2 16GB", "V100X", Volta, 16, No),
    m(0x1db3, "Tesla V100 FHHL 16GB", "V100L", Volta, 16, No),
    m(0x1db4, "Tesla V100 PCIe 16GB", "V100", Volta, 16, No),
    m(0x1db5, "Tesla V100 SXM2 32GB", "V100DX", Volta, 32, No),
    m(0x1db6, "Tesla V100 PCIe 32GB", "V100D", Volta, 32, No),
    m(0x1df6, "Tesla V100S PCIe 32GB", "V100S", Volta, 32, No),
    m(0x1eb8, "Tesla T4", "T4", Turing, 16, No),
    sub(
        m(0x1e30, "Quadro RTX 6000", "RTX6000", Turing, 24, No),
        0x12ba,
    ),
    sub(
        m(0x1e30, "Quadro RTX 8000", "RTX8000", Turing, 48, No),
        0x129e,
    ),
    m(0x1e78, "Quadro RTX 6000/8000", "RTX6000P", Turing, 24, No),
    m(0x1e36, "Quadro RTX 6000", "RTX6000", Turing, 24, No),
    m(0x2230, "RTX A6000", "A6000", Ampere, 48, No),
    m(0x2231, "RTX A5000", "A5000", Ampere, 24, No),
    m(0x2233, "RTX A5500", "A5500", Ampere, 24, No),
    m(0x2235, "A40", "A40", Ampere, 48, No),
    m(0x2236, "A10", "A10", Ampere, 24, No),
    sub(m(0x25b6, "A16", "A16", Ampere, 16, No), 0x14a9),
    sub(m(0x25b6, "A2", "A2", Ampere, 16, No), 0x157e),
    m(0x20b7, "A30 PCIe", "A30", Ampere, 24, Yes),
    m(0x20b0, "A100 SXM4 40GB", "A100", Ampere, 40, Yes),
    m(0x20b1, "A100 PCIe 40GB", "A100", Ampere, 40, Yes),
    m(0x20b2, "A100 SXM4 80GB", "A100DX", Ampere, 80, Yes),
    m(0x20b3, "A100-SXM-64GB", "A100", Ampere, 64, Yes),
    m(0x20b5, "A100 PCIe 80GB", "A100D", Ampere, 80, Yes),
    m(0x20f1, "A100 PCIe 40GB", "A100", Ampere, 40, Yes),
    m(0x20b8, "A100X", "A100X", Ampere, 80, Yes),
    m(0x20bd, "A800 SXM4 40GB", "A800", Ampere, 40, Unknown),
    m(0x20f3, "A800-SXM4-80GB", "A800DX", Ampere, 80, Unknown),
    m(0x20f5, "A800 80GB PCIe", "A800D", Ampere, 80, Unknown),
    m(0x20f6, "A800 40GB PCIe", "A800", Ampere, 40, Unknown),
    m(0x27b8, "L4", "L4", Ada, 24, No),
    m(0x27b6, "L2", "L2", Ada, 24, No),
    m(0x26b5, "L40", "L40", Ada, 48, No),
    m(0x26b9, "L40S", "L40S", Ada, 48, No),
    m(0x26b7, "L20", "L20", Ada, 48, No),
    m(0x26ba, "L20", "L20", Ada, 48, No),
    m(
        0x26b1,
        "RTX 6000 Ada Generation",
        "RTX6000-Ada",
        Ada,
        48,
        No,
    ),
    m(
        0x26b2,
        "RTX 5000 Ada Generation",
        "RTX5000-Ada",
        Ada,
        32,
        No,
    ),
    m(
        0x26b3,
        "RTX 5880 Ada Generation",
        "RTX5880-Ada",
        Ada,
        48,
        No,
    ),
    m(0x2330, "H100 SXM5 80GB", "H100XM", Hopper, 80, Yes),
    m(0x2331, "H100 PCIe", "H100", Hopper, 80, Yes),
    m(0x2321, "H100L 94GB", "H100L", Hopper, 94, Yes),
    m(0x2339, "H100 SXM5 94GB", "H100XL", Hopper, 94, Yes),
    m(0x233d, "H100 96GB", "H100XS", Hopper, 96, Yes),
    m(0x2322, "H800 PCIe", "H800", Hopper, 80, Unknown),
    m(0x2324, "H800", "H800XM", Hopper, 80, Unknown),
    m(0x233a, "H800L 94GB", "H800L", Hopper, 94, Unknown),
    m(0x2335, "H200 SXM 141GB", "H200X", Hopper, 141, Yes),
    m(0x233b, "H200 NVL", "H200", Hopper, 141, Yes),
    m(0x2329, "H20", "H20", Hopper, 96, Yes),
    m(0x232c, "H20 HBM3e", "H20X", Hopper, 141, Yes),
    m(0x230e, "H20 NVL16", "H20", Hopper, 141, Yes),
    m(0x2901, "B200", "B200", Blackwell, 180, Yes),
    m(
        0x2bb5,
        "RTX PRO 6000 Blackwell Server Edition",
        "RTX Pro 6000 Blackwell DC",
        Blackwell,
        96,
        Yes,
    ),
    m(
        0x2bb1,
        "RTX PRO 6000 Blackwell Workstation Edition",
        "RTX Pro 6000 Blackwell DC",
        Blackwell,
        96,
        Yes,
    ),
    m(
        0x2bb4,
        "RTX PRO 6000 Blackwell Max-Q Workstation Edition",
        "RTX Pro 6000 Blackwell DC",
        Blackwell,
        96,
        Yes,
    ),
    geforce(0x2684, "GeForce RTX 4090", Ada, 24),
    geforce(0x2704, "GeForce RTX 4080", Ada, 16),
    geforce(0x2782, "GeForce RTX 4070 Ti", Ada, 12),
    geforce(0x2204, "GeForce RTX 3090", Ampere, 24),
    geforce(0x2206, "GeForce RTX 3080", Ampere, 10),
    geforce(0x1e07, "GeForce RTX 2080 Ti Rev. A", Turing, 11),
    geforce(0x1b06, "GeForce GTX 1080 Ti", Pascal, 11),
];

/// What we know about an NVIDIA PCI function's product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identified {
    /// "A40", or "unknown model (10de:1234)".
    pub name: String,
    pub model: Option<&'static Model>,
    pub vgpu_supported: bool,
    /// Why it is not supported, in words an operator understands.
    pub reason: Option<String>,
}

/// Identify a GPU by device and subsystem id. A subsystem-specific entry wins over a generic one.
pub fn identify(device_id: u16, subsystem_id: Option<u16>) -> Identified {
    let candidates: Vec<&'static Model> =
        MODELS.iter().filter(|m| m.device_id == device_id).collect();
    let exact = candidates
        .iter()
        .find(|m| m.subsystem_id.is_some() && m.subsystem_id == subsystem_id);
    let generic = candidates.iter().find(|m| m.subsystem_id.is_none());
    let chosen = exact.or(generic).or_else(|| candidates.first()).copied();
    match chosen {
        Some(model) if model.consumer => Identified {
            name: model.name.to_string(),
            model: Some(model),
            vgpu_supported: false,
            reason: Some(format!(
                "{} is a consumer (GeForce) card: NVIDIA vGPU runs only on data-centre and RTX \
                 workstation GPUs (see docs.nvidia.com/vgpu/gpus-supported-by-vgpu.html)",
                model.name
            )),
        },
        Some(model) => Identified {
            name: model.name.to_string(),
            model: Some(model),
            vgpu_supported: true,
            reason: None,
        },
        None => Identified {
            name: format!("unknown model (10de:{device_id:04x})"),
            model: None,
            vgpu_supported: false,
            reason: Some(format!(
                "10de:{device_id:04x} is not on NVIDIA's vGPU support list as vgpuctl knows it; \
                 if NVIDIA lists it, report the id so it can be added"
            )),
        },
    }
}

/// Find models by what an operator types in a profile's `select` ("A40", "l40s", "H100").
pub fn matches_name(model: &Model, wanted: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace([' ', '-'], "");
    let w = norm(wanted);
    norm(model.name) == w
        || norm(model.type_prefix) == w
        || norm(model.name).trim_start_matches("tesla") == w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a40_from_the_seed() {
        let id = identify(0x2235, Some(0x145a));
        assert_eq!(id.name, "A40");
        assert!(id.vgpu_supported);
        let model = id.model.unwrap();
        assert!(model.sriov());
        assert_eq!(model.mig, Mig::No);
    }

    #[test]
    fn subsystem_tells_a16_from_a2() {
        assert_eq!(identify(0x25b6, Some(0x14a9)).name, "A16");
        assert_eq!(identify(0x25b6, Some(0x157e)).name, "A2");
        assert_eq!(identify(0x1e30, Some(0x129e)).name, "Quadro RTX 8000");
        assert_eq!(identify(0x1e30, Some(0x12ba)).name, "Quadro RTX 6000");
    }

    #[test]
    fn t4_has_no_sriov() {
        let t4 = identify(0x1eb8, None).model.unwrap();
        assert!(!t4.sriov());
    }

    #[test]
    fn consumer_and_unknown_are_refused_with_reasons() {
        let g = identify(0x2684, None);
        assert!(!g.vgpu_supported);
        assert!(g.reason.unwrap().contains("consumer"));
        let u = identify(0x1234, None);
        assert_eq!(u.name, "unknown model (10de:1234)");
        assert!(!u.vgpu_supported);
    }

    #[test]
    fn select_by_name() {
        let a40 = identify(0x2235, None).model.unwrap();
        assert!(matches_name(a40, "A40"));
        assert!(matches_name(a40, "a40"));
        assert!(!matches_name(a40, "A4"));
        let t4 = identify(0x1eb8, None).model.unwrap();
        assert!(matches_name(t4, "T4"));
        assert!(matches_name(t4, "Tesla T4"));
    }
}
