//! The wizard's prompts: every one cancels on Esc (and Ctrl-C, see [`crate::interrupt`]) with
//! "Cancelled: nothing was changed." and exit 130, and marks its cursor row without colour when
//! colour is off (NO_COLOR): the coloured theme marks a multi-select's cursor row by colour only.

use dialoguer::console::{Key, Term};
use dialoguer::theme::{ColorfulTheme, SimpleTheme, Theme};
use dialoguer::{Confirm, MultiSelect, Select};

use crate::exit::Failure;

/// The theme for this terminal: coloured, or plain with a '>' on the cursor row and [x]/[ ]
/// boxes when colour is off (console honours NO_COLOR and CLICOLOR).
pub fn theme() -> Box<dyn Theme> {
    if dialoguer::console::colors_enabled_stderr() {
        Box::new(ColorfulTheme::default())
    } else {
        Box::new(SimpleTheme)
    }
}

/// The terminal's width in columns (80 when it does not say, as console assumes).
pub fn columns() -> usize {
    usize::from(Term::stderr().size().1)
}

pub fn cancelled() -> Failure {
    Failure::cancelled(crate::interrupt::what_changed())
}

fn broken(e: impl std::fmt::Display) -> Failure {
    Failure::usage(format!(
        "the terminal stopped answering ({e}); nothing was changed"
    ))
}

/// One of `items`; Esc cancels.
pub fn select<T: std::fmt::Display>(
    prompt: &str,
    items: &[T],
    default: usize,
) -> Result<usize, Failure> {
    Select::with_theme(&*theme())
        .with_prompt(prompt)
        .items(items)
        .default(default.min(items.len().saturating_sub(1)))
        .interact_opt()
        .map_err(broken)?
        .ok_or_else(cancelled)
}

/// Some of `items`; Esc cancels. The caller reports the choice (dialoguer's report repeats every
/// chosen row on one line, which wraps on a narrow console).
pub fn multi_select<T: std::fmt::Display>(
    prompt: &str,
    items: &[T],
    defaults: &[bool],
) -> Result<Vec<usize>, Failure> {
    MultiSelect::with_theme(&*theme())
        .with_prompt(prompt)
        .report(false)
        .items(items)
        .defaults(defaults)
        .interact_opt()
        .map_err(broken)?
        .ok_or_else(cancelled)
}

/// Yes or no; Esc cancels.
pub fn confirm(prompt: &str, default: bool) -> Result<bool, Failure> {
    Confirm::with_theme(&*theme())
        .with_prompt(prompt)
        .default(default)
        .interact_opt()
        .map_err(broken)?
        .ok_or_else(cancelled)
}

/// A line of text. `default` is shown and taken on an empty answer; what is typed replaces it
/// (never appends to it). `check` turns the answer into the value or says what is wrong, and the
/// question is asked again. `secret`: nothing typed is echoed. Esc cancels. dialoguer's Input
/// and Password ignore Esc, so this reads the keys itself.
pub fn line<T>(
    prompt: &str,
    default: Option<&str>,
    secret: bool,
    check: impl Fn(&str) -> Result<T, String>,
) -> Result<T, Failure> {
    let term = Term::stderr();
    let theme = theme();
    loop {
        let mut head = String::new();
        if secret {
            let _ = theme.format_password_prompt(&mut head, prompt);
        } else {
            let _ = theme.format_input_prompt(&mut head, prompt, default);
        }
        term.write_str(&head).map_err(broken)?;
        term.flush().map_err(broken)?;
        let mut typed = String::new();
        loop {
            match term.read_key().map_err(broken)? {
                Key::Escape => {
                    let _ = term.write_line("");
                    return Err(cancelled());
                }
                Key::Enter => break,
                Key::Backspace if !typed.is_empty() => {
                    typed.pop();
                    if !secret {
                        term.clear_chars(1).map_err(broken)?;
                    }
                }
                Key::Char(c) if !c.is_control() => {
                    typed.push(c);
                    if !secret {
                        term.write_str(c.encode_utf8(&mut [0; 4])).map_err(broken)?;
                    }
                }
                _ => {}
            }
        }
        let answer = match (typed.is_empty(), default) {
            (true, Some(d)) => d.to_string(),
            _ => typed.clone(),
        };
        term.write_line("").map_err(broken)?;
        match check(&answer) {
            Ok(v) => return Ok(v),
            Err(why) => {
                let mut msg = String::new();
                let _ = theme.format_error(&mut msg, &why);
                term.write_line(&msg).map_err(broken)?;
            }
        }
    }
}
