//! Whether a set of GPU instances fits one MIG GPU, and the order to create them in. Pure.
//!
//! The rule is NVIDIA's: each GPU instance profile may start only at the memory slices the MIG
//! user guide's placement diagram gives it (the catalog's `starts`), an instance takes `size`
//! slices from there, and "creation of new GPU instance will fail if there is overlap with the
//! already occupied memory slices" (NVML, `nvmlDeviceGetGpuInstancePossiblePlacements_v2`);
//! each profile also has a most-per-GPU (`-lgip`'s Total). The driver picks the placement of
//! each new instance itself, so instances are created larger first, the order NVIDIA's guide
//! advises, which leaves the small ones the gaps.

use crate::catalog::{self, GiProfile};

/// An instance there already: the memory slices it occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupied {
    pub profile: String,
    pub start: u32,
    pub size: u32,
}

/// The catalog model ("A100D", "H200X") a MIG-backed type belongs to.
pub fn model_of(type_name: &str) -> Option<&'static str> {
    catalog::models().into_iter().find(|m| {
        catalog::types_for(m)
            .iter()
            .any(|t| t.gi_profile.is_some() && crate::vgpu_name::same(&t.name, type_name))
    })
}

/// The memory slices a profile ("2g.20gb") takes on any catalog GPU; 0 when none knows it.
pub fn size_of(profile: &str) -> u32 {
    catalog::models()
        .into_iter()
        .flat_map(|m| catalog::gi_profiles(m).iter())
        .find(|p| p.name.eq_ignore_ascii_case(profile))
        .map_or(0, |p| p.size)
}

/// `profiles` in creation order: larger instances first; equal sizes keep their order.
pub fn creation_order(profiles: &mut [String]) {
    profiles.sort_by_key(|p| std::cmp::Reverse(size_of(p)));
}

/// Whether `wanted` (profile name, how many) fits on a GPU of `model` next to `existing`.
/// Err says why in words for the operator: a profile past its maximum, or no placement left.
pub fn fits(model: &str, existing: &[Occupied], wanted: &[(String, u32)]) -> Result<(), String> {
    let mut todo: Vec<&'static GiProfile> = Vec::new();
    for (name, n) in wanted {
        let p = catalog::find_gi_profile(model, name)
            .ok_or_else(|| format!("the {model} has no GPU instance profile {name}"))?;
        let there = existing.iter().filter(|o| o.profile == p.name).count() as u32;
        if there + n > p.max {
            return Err(format!(
                "{} GPU instance(s) of {} are asked for, and a GPU holds at most {}",
                there + n,
                p.name,
                p.max
            ));
        }
        todo.extend(std::iter::repeat_n(p, *n as usize));
    }
    todo.sort_by_key(|p| std::cmp::Reverse(p.size));
    let mut taken: Vec<(u32, u32)> = existing.iter().map(|o| (o.start, o.size)).collect();
    // place_all leaves its placement in the list it is given: try on a copy.
    if place_all(&todo, &mut taken.clone()) {
        // Some placement fits; the driver must not be able to pick one that does not.
        return match unlucky(&todo, &mut taken) {
            None => Ok(()),
            Some((p, start)) => Err(format!(
                "these GPU instances fit the GPU's memory slices only in some placements, and \
                 the driver picks each new instance's placement itself: created larger first, \
                 it may put {p} at slice {start}, which leaves no room for the rest (NVIDIA's \
                 placement rules: each profile starts only at its own slices, and instances \
                 never overlap); choose a mix that fits whatever the driver picks"
            )),
        };
    }
    let slices: u32 =
        todo.iter().map(|p| p.size).sum::<u32>() + existing.iter().map(|o| o.size).sum::<u32>();
    Err(format!(
        "no placement of these GPU instances fits the GPU's 8 memory slices ({slices} asked \
         for{}; NVIDIA's placement rules: each profile starts only at its own slices, and \
         instances never overlap)",
        if existing.is_empty() {
            String::new()
        } else {
            format!(", {} already taken", existing.len())
        }
    ))
}

/// A placement the driver may pick, creating `todo` in this order, after which the rest cannot
/// be placed: (profile, start) of the first such pick, or None when every pick works out.
/// `nvidia-smi mig -cgi` takes no placement, so vgpuctl cannot steer it: only a mix that fits
/// whatever the driver picks is certain to be made without failing halfway.
fn unlucky(todo: &[&GiProfile], taken: &mut Vec<(u32, u32)>) -> Option<(&'static str, u32)> {
    let (p, rest) = todo.split_first()?;
    let free: Vec<u32> = p
        .starts
        .iter()
        .copied()
        .filter(|&s| {
            s + p.size <= 8
                && taken
                    .iter()
                    .all(|&(start, size)| s + p.size <= start || start + size <= s)
        })
        .collect();
    for s in free {
        taken.push((s, p.size));
        let dead = !place_all(rest, &mut taken.clone()) || unlucky(rest, taken).is_some();
        taken.pop();
        if dead {
            return Some((p.name, s));
        }
    }
    None
}

/// Backtracking over each instance's allowed starts (at most 7 instances on 8 slices).
fn place_all(todo: &[&GiProfile], taken: &mut Vec<(u32, u32)>) -> bool {
    let Some((p, rest)) = todo.split_first() else {
        return true;
    };
    for &s in p.starts {
        let free = taken
            .iter()
            .all(|&(start, size)| s + p.size <= start || start + size <= s);
        if free && s + p.size <= 8 {
            taken.push((s, p.size));
            if place_all(rest, taken) {
                return true;
            }
            taken.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    #[test]
    fn stackhpc_mix_fits_and_larger_ones_come_first() {
        // stackhpc: 3 x A100D-2-20C + 1 x A100D-1-10C on one A100 80GB.
        assert_eq!(
            fits("A100D", &[], &w(&[("1g.10gb", 1), ("2g.20gb", 3)])),
            Ok(())
        );
        let mut order: Vec<String> = ["1g.10gb", "2g.20gb", "2g.20gb", "3g.40gb"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        creation_order(&mut order);
        assert_eq!(order, ["3g.40gb", "2g.20gb", "2g.20gb", "1g.10gb"]);
    }

    #[test]
    fn mixes_past_the_slices_or_a_maximum_are_refused() {
        // 3 x 2g take slices 0-5; 1g may start at 6 only once (1g.10gb starts 0..6).
        let e = fits("A100D", &[], &w(&[("2g.20gb", 3), ("1g.10gb", 2)])).unwrap_err();
        assert!(e.contains("no placement"), "{e}");
        let e = fits("A100D", &[], &w(&[("2g.20gb", 4)])).unwrap_err();
        assert!(e.contains("at most 3"), "{e}");
        // 4g.40gb starts at 0 only: with a 3g.40gb there (at 0 or 4), one of them fits at 4.
        assert!(fits("A100D", &[], &w(&[("4g.40gb", 1), ("3g.40gb", 1)])).is_ok());
        assert!(fits("A100D", &[], &w(&[("7g.80gb", 1), ("1g.10gb", 1)])).is_err());
    }

    /// 3g.40gb + 2 x 2g.20gb fits with the 3g at slice 4 (2g at 0 and 2), but the driver may put
    /// the 3g, made first, at 0 (the simulator does, as recorded): then no 2g start is left for
    /// the second. Refused before any change rather than failing after the first instances.
    #[test]
    fn a_mix_the_driver_can_pick_its_way_out_of_is_refused() {
        let e = fits("A100D", &[], &w(&[("3g.40gb", 1), ("2g.20gb", 2)])).unwrap_err();
        assert!(e.contains("only in some placements"), "{e}");
        assert!(e.contains("3g.40gb at slice 0"), "{e}");
        // Whatever the driver picks, these work out.
        for ok in [
            &[("2g.20gb", 3), ("1g.10gb", 1)][..],
            &[("1g.10gb", 7)],
            &[("3g.40gb", 2)],
            &[("4g.40gb", 1), ("2g.20gb", 1), ("1g.10gb", 1)],
        ] {
            assert_eq!(fits("A100D", &[], &w(ok)), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn instances_there_already_take_their_slices() {
        let one = Occupied {
            profile: "1g.10gb".into(),
            start: 2,
            size: 1,
        };
        // A 1g at slice 2 leaves 2g.20gb (starts 0, 2, 4) the starts 0 and 4 only.
        assert!(fits("A100D", std::slice::from_ref(&one), &w(&[("2g.20gb", 2)])).is_ok());
        assert!(fits("A100D", &[one], &w(&[("2g.20gb", 3)])).is_err());
    }

    #[test]
    fn types_name_their_catalog_model() {
        assert_eq!(model_of("NVIDIA A100D-2-20C"), Some("A100D"));
        assert_eq!(model_of("H200X-1-18C"), Some("H200X"));
        assert_eq!(model_of("A100D-20C"), None);
        assert_eq!(size_of("3g.71gb"), 4);
    }
}
