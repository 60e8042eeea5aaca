//! A lexer for the shell fragments `grub-mkconfig` sources (`/etc/default/grub`, its drop-ins):
//! it splits a file into simple commands the way `/bin/sh` does, so an editor can see every
//! assignment the shell would execute, wherever it is on a line, and tell which of them may not
//! run (or not in this shell).
//!
//! It follows POSIX sh's token rules (quotes, backslashes, `$(...)`, backticks, `#` comments,
//! the operators `; & && | || ( ) < >`), and tracks compound commands only far enough to know
//! that a command is inside one (`if`, loops, `case`, `{ }`, subshells, function bodies).
//! Behaviour checked against dash and `bash --posix`:
//! - `A=1 B=2` sets both; `A=1 && false` sets A; `false && A=1` does not.
//! - `A=1 true` does not set A (prefix assignment to a regular command); `A=1 :` does (special
//!   builtin); `A=1 | true`, `A=1 &` and `(A=1)` run in a subshell and do not.
//! - `unset A` removes A; a sourced file stops at `return`.

/// A byte range of the content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    pub start: usize,
    pub end: usize,
}

/// One simple command: its words (redirections removed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<Word>,
    /// May not run: after `&&`/`||`, inside `if`/loops/`case`/`{ }`/a function body, after a
    /// `return` or `exit`, or negated with `!`.
    pub conditional: bool,
    /// Runs in a subshell (pipeline, `&`, `( )`): its assignments do not reach the caller.
    pub subshell: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub commands: Vec<Command>,
    /// Constructs this lexer does not follow (byte offset, what): here-documents.
    pub unsupported: Vec<(usize, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// if, while, until, for, `{`, a function body.
    Group,
    Case,
    Paren,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}
fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `NAME=` at the start of a word: the name's length.
pub fn assignment_name(word: &str) -> Option<usize> {
    let b = word.as_bytes();
    if b.is_empty() || !is_name_start(b[0]) {
        return None;
    }
    let n = b.iter().take_while(|c| is_name(**c)).count();
    (b.get(n) == Some(&b'=')).then_some(n)
}

/// Index past the quoted or substituted region starting at `i` (`'`, `"`, `` ` ``, `$(`, `${`).
/// Unterminated regions end at the end of the input.
fn skip_region(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'\'' => b[i + 1..]
            .iter()
            .position(|c| *c == b'\'')
            .map_or(b.len(), |k| i + 1 + k + 1),
        b'"' => {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j = match b[j] {
                    b'\\' => j + 2,
                    b'`' => skip_region(b, j),
                    b'$' if matches!(b.get(j + 1), Some(b'(' | b'{')) => skip_region(b, j),
                    _ => j + 1,
                };
            }
            (j + 1).min(b.len())
        }
        b'`' => {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'`' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        }
        b'$' => {
            let (open, close) = if b.get(i + 1) == Some(&b'{') {
                (b'{', b'}')
            } else {
                (b'(', b')')
            };
            let mut depth = 0usize;
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    c if c == open => {
                        depth += 1;
                        j += 1;
                    }
                    c if c == close => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return j;
                        }
                    }
                    b'\\' => j += 2,
                    b'\'' | b'"' | b'`' => j = skip_region(b, j),
                    b'$' if matches!(b.get(j + 1), Some(b'(' | b'{')) => j = skip_region(b, j),
                    _ => j += 1,
                }
            }
            b.len()
        }
        _ => i + 1,
    }
}

struct Lexer<'a> {
    text: &'a str,
    out: Scan,
    cur: Command,
    blocks: Vec<Block>,
    /// Set by `&&`/`||` until the end of the and-or list.
    andor: bool,
    /// The previous command was piped into the next one.
    pipe_in: bool,
    negated: bool,
    /// A `return` or `exit` was seen: what follows may not run.
    stopped: bool,
    for_header: bool,
    case_header: bool,
    /// Between `in` or `;;` and the `)` of a case pattern.
    case_pattern: bool,
    redirect_target: bool,
    function_parens: bool,
    /// Index in `out.commands` where the current and-or list started (for `&`).
    list_start: usize,
}

impl<'a> Lexer<'a> {
    fn word(&mut self, w: Word) {
        let t = &self.text[w.start..w.end];
        if self.redirect_target {
            self.redirect_target = false;
            return;
        }
        if self.for_header {
            self.for_header = t != "do";
            return;
        }
        if self.case_header {
            self.case_header = t != "in";
            self.case_pattern = !self.case_header;
            return;
        }
        if self.case_pattern {
            if t == "esac" {
                self.case_pattern = false;
                self.blocks.pop();
            }
            return;
        }
        if self.cur.words.is_empty() {
            match t {
                "if" | "while" | "until" | "{" => return self.blocks.push(Block::Group),
                "for" => {
                    self.for_header = true;
                    return self.blocks.push(Block::Group);
                }
                "case" => {
                    self.case_header = true;
                    return self.blocks.push(Block::Case);
                }
                "then" | "else" | "elif" | "do" => return,
                "fi" | "done" | "}" | "esac" => {
                    self.blocks.pop();
                    return;
                }
                "!" => {
                    self.negated = true;
                    return;
                }
                _ => {}
            }
        }
        self.cur.words.push(w);
    }

    fn end_command(&mut self) {
        if self.cur.words.is_empty() {
            self.negated = false;
            return;
        }
        let mut c = std::mem::take(&mut self.cur);
        c.conditional = self.andor
            || self.stopped
            || self.negated
            || self.blocks.iter().any(|b| *b != Block::Paren);
        c.subshell = self.pipe_in || self.blocks.contains(&Block::Paren);
        let first = &self.text[c.words[0].start..c.words[0].end];
        if first == "return" || first == "exit" {
            self.stopped = true;
        }
        self.negated = false;
        self.pipe_in = false;
        self.out.commands.push(c);
    }

    fn end_list(&mut self) {
        self.end_command();
        self.andor = false;
        self.list_start = self.out.commands.len();
    }
}

/// Split `text` into simple commands (see the module docs).
pub fn scan(text: &str) -> Scan {
    let b = text.as_bytes();
    let mut lx = Lexer {
        text,
        out: Scan::default(),
        cur: Command::default(),
        blocks: Vec::new(),
        andor: false,
        pipe_in: false,
        negated: false,
        stopped: false,
        for_header: false,
        case_header: false,
        case_pattern: false,
        redirect_target: false,
        function_parens: false,
        list_start: 0,
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' => i += 1,
            b'\\' if b.get(i + 1) == Some(&b'\n') => i += 2,
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |k| i + k);
            }
            b'\n' => {
                lx.end_list();
                i += 1;
            }
            b';' => {
                lx.end_list();
                if b.get(i + 1) == Some(&b';') {
                    lx.case_pattern = lx.blocks.last() == Some(&Block::Case);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                lx.end_command();
                lx.andor = true;
                i += 2;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                lx.end_command();
                lx.andor = true;
                i += 2;
            }
            b'&' => {
                // Background: the whole and-or list runs in a subshell.
                lx.end_command();
                let from = lx.list_start;
                for c in &mut lx.out.commands[from..] {
                    c.subshell = true;
                }
                lx.end_list();
                i += 1;
            }
            b'|' if lx.case_pattern => i += 1,
            b'(' if lx.case_pattern => i += 1,
            b')' if lx.case_pattern => {
                lx.case_pattern = false;
                i += 1;
            }
            b'|' => {
                if let Some(c) = {
                    lx.end_command();
                    lx.out.commands.last_mut()
                } {
                    c.subshell = true;
                }
                lx.pipe_in = true;
                i += 1;
            }
            b'(' => {
                if !lx.cur.words.is_empty() {
                    // `name()`: a function definition; its body is a compound command.
                    lx.cur.words.clear();
                    lx.function_parens = true;
                } else {
                    lx.blocks.push(Block::Paren);
                }
                i += 1;
            }
            b')' => {
                if lx.function_parens {
                    lx.function_parens = false;
                } else {
                    lx.end_command();
                    lx.blocks.pop();
                }
                i += 1;
            }
            b'<' | b'>' => {
                if b[i] == b'<' && b.get(i + 1) == Some(&b'<') {
                    lx.out.unsupported.push((i, "a here-document (<<)".into()));
                }
                i += 1;
                while i < b.len() && matches!(b[i], b'<' | b'>' | b'&' | b'|' | b'-') {
                    i += 1;
                }
                lx.redirect_target = true;
            }
            _ => {
                let start = i;
                while i < b.len() {
                    match b[i] {
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<'
                        | b'>' => break,
                        b'\\' => i += 2,
                        b'\'' | b'"' | b'`' => i = skip_region(b, i),
                        b'$' if matches!(b.get(i + 1), Some(b'(' | b'{')) => i = skip_region(b, i),
                        _ => i += 1,
                    }
                }
                i = i.min(b.len());
                let w = Word { start, end: i };
                // `2>file`: the digits are the redirection's file descriptor.
                let io_number = matches!(b.get(i), Some(b'<' | b'>'))
                    && text[start..i].bytes().all(|c| c.is_ascii_digit());
                if !io_number {
                    lx.word(w);
                }
            }
        }
    }
    lx.end_list();
    lx.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(t: &str) -> Vec<(Vec<&str>, bool, bool)> {
        scan(t)
            .commands
            .iter()
            .map(|c| {
                (
                    c.words.iter().map(|w| &t[w.start..w.end]).collect(),
                    c.conditional,
                    c.subshell,
                )
            })
            .collect()
    }

    #[test]
    fn commands_and_their_context() {
        assert_eq!(
            cmds("GRUB_TIMEOUT=5; GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\" # c\n"),
            vec![
                (vec!["GRUB_TIMEOUT=5"], false, false),
                (
                    vec!["GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\""],
                    false,
                    false
                )
            ]
        );
        assert_eq!(
            cmds("[ -e /x ] && A=1 || B=2\nC=3 && false\n"),
            vec![
                (vec!["[", "-e", "/x", "]"], false, false),
                (vec!["A=1"], true, false),
                (vec!["B=2"], true, false),
                (vec!["C=3"], false, false),
                (vec!["false"], true, false),
            ]
        );
        assert_eq!(
            cmds("if [ x ]; then\n  A=1\nfi\nB=2 | cat\n(C=3)\nD=4 &\nE=5"),
            vec![
                (vec!["[", "x", "]"], true, false),
                (vec!["A=1"], true, false),
                (vec!["B=2"], false, true),
                (vec!["cat"], false, true),
                (vec!["C=3"], false, true),
                (vec!["D=4"], false, true),
                (vec!["E=5"], false, false),
            ]
        );
    }

    #[test]
    fn quotes_substitutions_and_redirections_stay_inside_words() {
        let t = "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nX=\"$(a \"b;c\" | d)\" 2>/dev/null\nY='a\nb'; Z=1\n";
        assert_eq!(
            cmds(t),
            vec![
                (
                    vec!["GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`"],
                    false,
                    false
                ),
                (vec!["X=\"$(a \"b;c\" | d)\""], false, false),
                (vec!["Y='a\nb'"], false, false),
                (vec!["Z=1"], false, false),
            ]
        );
    }

    #[test]
    fn functions_case_loops_and_return() {
        let t = "f() {\n A=1\n}\ncase $x in\n a|b) B=2 ;;\nesac\nfor i in 1 2; do C=3; done\nD=4\n[ -e x ] || return\nE=5\n";
        let c = cmds(t);
        assert_eq!(c[0], (vec!["A=1"], true, false));
        assert_eq!(c[1], (vec!["B=2"], true, false));
        assert_eq!(c[2], (vec!["C=3"], true, false));
        assert_eq!(c[3], (vec!["D=4"], false, false));
        assert_eq!(c.last().unwrap(), &(vec!["E=5"], true, false));
    }
}
