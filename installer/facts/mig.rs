//! MIG mode as the loaded driver reports it in `nvidia-smi -q` (recorded-behaviour.md §5): per
//! GPU block, `MIG Mode` / `Current : Enabled|Disabled|N/A` / `Pending : ...`. Current and
//! pending differ while a change waits for the GPU's reset (an Ampere GPU). Pure.

use std::collections::BTreeMap;

use serde::Serialize;

/// One GPU's MIG capability and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MigMode {
    /// The driver offers MIG on this GPU (its mode reads other than `N/A`).
    pub capable: bool,
    /// `mig.mode.current`: GPU instances can be made now.
    pub current: bool,
    /// `mig.mode.pending`: the mode after the GPU's next reset.
    pub pending: bool,
}

/// `GPU 00000000:17:00.0` blocks -> PCI address -> its `MIG Mode` answer. A block without one
/// (a driver or GPU that prints none) is left out: no answer, not "no MIG".
pub fn parse(text: &str) -> BTreeMap<String, MigMode> {
    let mut out = BTreeMap::new();
    let mut gpu: Option<String> = None;
    let mut in_block = false;
    for line in text.lines() {
        if let Some(addr) = line.strip_prefix("GPU ") {
            gpu = crate::pci::from_nvidia_smi(addr.trim());
            in_block = false;
            continue;
        }
        if line.trim() == "MIG Mode" {
            in_block = true;
            continue;
        }
        let (Some(g), true) = (&gpu, in_block) else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            in_block = false;
            continue;
        };
        let on = match value.trim() {
            "Enabled" => Some(true),
            "Disabled" => Some(false),
            _ => None,
        };
        let m = out.entry(g.clone()).or_insert(MigMode {
            capable: true,
            current: false,
            pending: false,
        });
        m.capable &= on.is_some();
        match key.trim() {
            "Current" => m.current = on.unwrap_or(false),
            "Pending" => {
                m.pending = on.unwrap_or(false);
                in_block = false;
            }
            _ => in_block = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_pending_per_gpu_and_na() {
        let text = "Attached GPUs : 2\nGPU 00000000:17:00.0\n    Product Name : NVIDIA A100D\n    MIG Mode\n        Current                           : Disabled\n        Pending                           : Enabled\n    vGPU Heterogeneous Mode : N/A\nGPU 00000000:E8:00.0\n    MIG Mode\n        Current                           : N/A\n        Pending                           : N/A\nGPU 00000000:65:00.0\n    Product Name : NVIDIA A40\n";
        let m = parse(text);
        assert_eq!(
            m["0000:17:00.0"],
            MigMode {
                capable: true,
                current: false,
                pending: true
            }
        );
        assert!(!m["0000:e8:00.0"].capable);
        assert!(!m.contains_key("0000:65:00.0"), "no block, no answer");
    }
}
