//! What an operator types, read as they mean it. Pure.

/// A count typed at "How many per GPU (1-N)": digits, or a number word ("two"), from 1 to `max`.
pub fn count(typed: &str, max: u32) -> Result<u32, String> {
    let t = typed.trim().to_ascii_lowercase();
    let n = match t.parse::<u64>() {
        Ok(n) => n,
        Err(_) => match WORDS.iter().position(|w| *w == t) {
            Some(i) => i as u64,
            None => {
                return Err(format!(
                    "{:?} is not a number: enter a number from 1 to {max}",
                    typed.trim()
                ))
            }
        },
    };
    if n == 0 {
        return Err(format!("enter a number from 1 to {max}"));
    }
    if n > u64::from(max) {
        return Err(format!(
            "{n} does not fit: at most {max} of this type per GPU (enter a number from 1 to {max})"
        ));
    }
    Ok(n as u32)
}

const WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// The names nearest to a mistyped one (`A40-24` -> A40-24A, A40-24C, A40-24Q): those it begins,
/// then those a few edits away, the closest only, in their listed order; none when nothing is
/// close (then the caller lists them all).
pub fn nearest<'a>(typed: &str, names: &'a [String]) -> Vec<&'a str> {
    let t = crate::vgpu_name::short(typed.trim()).to_ascii_lowercase();
    if t.is_empty() {
        return Vec::new();
    }
    let score = |n: &str| {
        let n = n.to_ascii_lowercase();
        if n.starts_with(&t) {
            0
        } else {
            strsim::levenshtein(&t, &n)
        }
    };
    let Some(best) = names.iter().map(|n| score(n)).min() else {
        return Vec::new();
    };
    // Beyond a third of the name (at least 2 edits) a "near" name is a guess, not a typo.
    if best > (t.chars().count() / 3).max(2) {
        return Vec::new();
    }
    names
        .iter()
        .filter(|n| score(n) == best)
        .map(String::as_str)
        .take(4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_digits_or_words_and_refusals_in_words() {
        assert_eq!(count("2", 2), Ok(2));
        assert_eq!(count(" two ", 2), Ok(2));
        assert_eq!(count("Two", 4), Ok(2));
        assert_eq!(
            count("lots", 2),
            Err("\"lots\" is not a number: enter a number from 1 to 2".into())
        );
        assert_eq!(count("0", 2), Err("enter a number from 1 to 2".into()));
        assert!(count("3", 2)
            .unwrap_err()
            .contains("does not fit: at most 2"));
        assert!(count("-1", 2).unwrap_err().contains("from 1 to 2"));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nearest_names_to_a_typo() {
        let all = names(&[
            "A40-1B", "A40-2B", "A40-1Q", "A40-24A", "A40-24C", "A40-24Q", "A40-48Q", "A40-8Q",
        ]);
        assert_eq!(
            nearest("A40-24", &all),
            vec!["A40-24A", "A40-24C", "A40-24Q"]
        );
        assert_eq!(nearest("a40-24q ", &all), vec!["A40-24Q"]);
        assert_eq!(nearest("NVIDIA A40-48", &all), vec!["A40-48Q"]);
        assert_eq!(nearest("A40-84Q", &all), vec!["A40-24Q", "A40-8Q"]);
        assert!(nearest("L40S-4Q-and-more", &all).is_empty());
        assert!(nearest("", &all).is_empty());
    }
}
