//! Saying a thing once for the GPUs it is true of: an 8-GPU host's identical per-GPU lines
//! (`check`'s findings, `types`' tables) become one line naming the GPUs. Pure.

/// Items grouped by key, in the order each key first appears, with the values (GPUs) of each.
pub fn group<K: PartialEq, V>(items: impl IntoIterator<Item = (K, V)>) -> Vec<(K, Vec<V>)> {
    let mut out: Vec<(K, Vec<V>)> = Vec::new();
    for (k, v) in items {
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, vs)) => vs.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

/// The GPUs of one model a line is about: `0000:67:00.0 A40` for one; for several
/// `8 × A40 0000:67:00.0 … 0000:e8:00.0` when they are all the host's GPUs of that model (the
/// range can then hide none), else every address (`2 × A40 0000:67:00.0, 0000:e8:00.0`).
pub fn label(model: &str, addrs: &[String], all_of_model: bool) -> String {
    match addrs {
        [one] => format!("{one} {model}"),
        [first, .., last] if all_of_model && addrs.len() > 2 => {
            format!("{} × {model} {first} … {last}", addrs.len())
        }
        _ => format!("{} × {model} {}", addrs.len(), addrs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_gpu_is_named_as_before_several_as_a_count() {
        assert_eq!(
            label("A40", &a(&["0000:67:00.0"]), true),
            "0000:67:00.0 A40"
        );
        let eight: Vec<String> = (0..8).map(|i| format!("0000:6{i}:00.0")).collect();
        assert_eq!(
            label("A40", &eight, true),
            "8 × A40 0000:60:00.0 … 0000:67:00.0"
        );
        // Not all of the model's GPUs: a range would hide which, so every address.
        assert_eq!(
            label(
                "A40",
                &a(&["0000:67:00.0", "0000:68:00.0", "0000:e8:00.0"]),
                false
            ),
            "3 × A40 0000:67:00.0, 0000:68:00.0, 0000:e8:00.0"
        );
    }

    #[test]
    fn groups_keep_first_appearance_order() {
        let g = group([(1, "a".to_string()), (2, "b".into()), (1, "c".into())]);
        assert_eq!(g, vec![(1, a(&["a", "c"])), (2, a(&["b"]))]);
    }
}
