//! Plain-text tables whose columns fit what is in them: a long model name
//! (`RTX PRO 6000 Blackwell Server Edition`) widens its column instead of pushing the rest of
//! its row out of line. Pure.

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// `rows[0]` is the header. Each line is indented two spaces, columns are two spaces apart, and
/// no line ends in spaces.
pub fn render(rows: &[Vec<String>], align: &[Align]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            line.push(' ');
            if c > 0 {
                line.push(' ');
            }
            match align.get(c).copied().unwrap_or(Align::Left) {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_long_cell_widens_its_column_and_the_others_stay_in_line() {
        let t = render(
            &[
                row(&["MODEL", "MEMORY", "VFs"]),
                row(&["A40", "48 GiB", "0/32"]),
                row(&["RTX PRO 6000 Blackwell Server Edition", "96 GiB", "0/48"]),
            ],
            &[Align::Left, Align::Right, Align::Left],
        );
        assert_eq!(
            t,
            "  MODEL                                  MEMORY  VFs\n\
             \x20 A40                                    48 GiB  0/32\n\
             \x20 RTX PRO 6000 Blackwell Server Edition  96 GiB  0/48\n"
        );
    }
}
