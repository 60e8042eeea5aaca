//! The type picker's rows, fitted to the terminal: a row wider than the console wraps onto the
//! next line, and the picker's redraw (which counts one line per row) then scrolls its prompt
//! away (an 80×24 IPMI/iDRAC console). Columns by importance, so what is cut is the tail. Pure.

/// One type as the picker shows it.
pub struct TypeRow<'a> {
    pub name: &'a str,
    pub framebuffer_mib: u64,
    /// How many fit per GPU.
    pub fits: u32,
    pub series: char,
    pub meaning: &'a str,
}

/// The picker writes a 2-column marker before each row ("> " or "❯ "), and a row that fills the
/// last column wraps the cursor on some terminals: both are kept free.
pub const MARKER_COLUMNS: usize = 3;

/// The rows, each at most `columns - MARKER_COLUMNS` characters wide (cut with '…').
pub fn render(rows: &[TypeRow], columns: usize) -> Vec<String> {
    let name_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let room = columns.saturating_sub(MARKER_COLUMNS).max(1);
    rows.iter()
        .map(|r| {
            let full = format!(
                "{:<name_w$}  {:>6} MiB  up to {:>2} per GPU  {}: {}",
                r.name, r.framebuffer_mib, r.fits, r.series, r.meaning
            );
            fit(&full, room)
        })
        .collect()
}

/// `s` cut to `width` characters, the last one '…' when something was cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<TypeRow<'static>> {
        vec![
            TypeRow {
                name: "A40-1B",
                framebuffer_mib: 1024,
                fits: 32,
                series: 'B',
                meaning: "virtual PC (business desktops)",
            },
            TypeRow {
                name: "A40-24Q",
                framebuffer_mib: 24576,
                fits: 2,
                series: 'Q',
                meaning: "RTX virtual workstation (professional graphics)",
            },
        ]
    }

    #[test]
    fn an_80_column_console_gets_rows_that_do_not_wrap() {
        let r = render(&rows(), 80);
        for row in &r {
            assert!(row.chars().count() <= 77, "{row:?}");
        }
        // What is cut is the series' meaning; name, size and count stay whole.
        assert!(
            r[1].starts_with("A40-24Q   24576 MiB  up to  2 per GPU  Q: RTX"),
            "{:?}",
            r[1]
        );
        assert!(r[1].ends_with('…'));
        assert_eq!(
            r[0],
            "A40-1B     1024 MiB  up to 32 per GPU  B: virtual PC (business desktops)"
        );
    }

    #[test]
    fn a_wide_terminal_shows_whole_rows() {
        let r = render(&rows(), 200);
        assert!(r[1].ends_with("(professional graphics)"), "{:?}", r[1]);
    }

    #[test]
    fn fit_counts_characters_not_bytes() {
        assert_eq!(fit("× abc", 5), "× abc");
        assert_eq!(fit("× abcdef", 5), "× ab…");
    }
}
