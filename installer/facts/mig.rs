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

/// `nvidia-smi mig -i <gpu> -lgi`: the GPU instances there are.
pub fn list_instances(gpu: &str) -> crate::host::Cmd {
    crate::host::Cmd::new("nvidia-smi")
        .arg("mig")
        .arg("-i")
        .arg(gpu)
        .arg("-lgi")
}

/// One GPU instance as `-lgi` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GpuInstance {
    /// The profile's short name ("1g.10gb").
    pub profile: String,
    pub profile_id: u32,
    /// Handed out by the driver, out of order (9, 7, 8, 11, ...): read back, never predicted.
    pub id: u32,
    /// `Placement Start:Size`: the memory slices it takes (what a new instance must not
    /// overlap).
    pub start: u32,
    pub size: u32,
}

/// The rows of `-lgi`'s table: `|   0  MIG 1g.10gb     19        9          0:1     |`.
/// A table without rows (or `No GPU instances found`) is none.
pub fn parse_instances(text: &str) -> Vec<GpuInstance> {
    text.lines()
        .filter_map(|l| {
            let inner = l.trim().strip_prefix('|')?.strip_suffix('|')?;
            let w: Vec<&str> = inner.split_whitespace().collect();
            let [_gpu, "MIG", name, profile_id, id, placement] = w[..] else {
                return None;
            };
            let (start, size) = placement.split_once(':')?;
            Some(GpuInstance {
                profile: name.to_string(),
                profile_id: profile_id.parse().ok()?,
                id: id.parse().ok()?,
                start: start.parse().ok()?,
                size: size.parse().ok()?,
            })
        })
        .collect()
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

    #[test]
    fn instances_are_read_back_as_listed() {
        let text = "+----------------------------------------------------+\n\
| GPU instances:                                     |\n\
| GPU   Name          Profile  Instance   Placement  |\n\
|                       ID       ID       Start:Size |\n\
|====================================================|\n\
|   0  MIG 1g.10gb     19       13          6:1     |\n\
+----------------------------------------------------+\n\
|   0  MIG 1g.10gb     19        9          0:1     |\n\
+----------------------------------------------------+\n";
        let gis = parse_instances(text);
        assert_eq!(gis.iter().map(|g| g.id).collect::<Vec<_>>(), [13, 9]);
        assert_eq!((gis[0].start, gis[0].size), (6, 1));
        assert!(gis
            .iter()
            .all(|g| g.profile == "1g.10gb" && g.profile_id == 19));
        assert!(parse_instances("No GPU instances found: Not Found\n").is_empty());
    }
}
