//! Mixed-size (heterogeneous) mode as the loaded driver reports it in `nvidia-smi -q`
//! (recorded-behaviour.md §3, §4): the driver-level `Heterogenous Multi-vGPU : Supported` (sic),
//! per GPU `Heterogeneous Time-Slice Profiles : Supported` and `vGPU Heterogeneous Mode`. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

/// One GPU's mixed-size capability and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MixedSize {
    /// The driver and this GPU can run vGPUs of different sizes side by side.
    pub supported: bool,
    /// The GPU is in mixed-size mode now (`nvidia-smi vgpu -i <gpu> -shm 1`; it does not persist
    /// across reboots and `sriov-manage -e` clears it).
    pub enabled: bool,
}

/// `GPU 00000000:E8:00.0` blocks -> PCI address -> the GPU's mixed-size answer. A driver that does
/// not print the driver-level capability line (before vGPU 17) supports it on no GPU. A GPU
/// without a per-GPU capability line is judged by the driver's line alone.
pub fn parse(text: &str) -> BTreeMap<String, MixedSize> {
    let value = |line: &str, key: &str| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let driver = text
        .lines()
        .find_map(|l| {
            value(l, "Heterogenous Multi-vGPU").or_else(|| value(l, "Heterogeneous Multi-vGPU"))
        })
        .is_some_and(|v| v == "Supported");
    let mut out = BTreeMap::new();
    let mut gpu: Option<String> = None;
    for line in text.lines() {
        if let Some(addr) = line.strip_prefix("GPU ") {
            gpu = crate::pci::from_nvidia_smi(addr.trim());
            if let Some(g) = &gpu {
                out.insert(
                    g.clone(),
                    MixedSize {
                        supported: driver,
                        enabled: false,
                    },
                );
            }
            continue;
        }
        let Some(m) = gpu.as_ref().and_then(|g| out.get_mut(g)) else {
            continue;
        };
        if let Some(v) = value(line, "Heterogeneous Time-Slice Profiles") {
            m.supported = driver && v == "Supported";
        } else if let Some(v) = value(line, "vGPU Heterogeneous Mode") {
            m.enabled = v == "Enabled";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_line_and_per_gpu_lines() {
        let text = "Driver Version : 550.163.02\nvGPU Driver Capability\n        Heterogenous Multi-vGPU           : Supported\n\nAttached GPUs : 2\nGPU 00000000:E8:00.0\n    vGPU Device Capability\n        Heterogeneous Time-Slice Profiles : Supported\n    vGPU Heterogeneous Mode               : Enabled\nGPU 00000001:04:00.0\n    vGPU Device Capability\n        Heterogeneous Time-Slice Profiles : Not Supported\n    vGPU Heterogeneous Mode               : N/A\n";
        let m = parse(text);
        assert_eq!(
            m["0000:e8:00.0"],
            MixedSize {
                supported: true,
                enabled: true
            }
        );
        assert_eq!(
            m["0001:04:00.0"],
            MixedSize {
                supported: false,
                enabled: false
            }
        );
        // An older driver prints no capability line: no GPU supports it.
        let old = "Driver Version : 535.54\nGPU 00000000:E8:00.0\n    Product Name : NVIDIA A40\n";
        assert!(!parse(old)["0000:e8:00.0"].supported);
    }
}
