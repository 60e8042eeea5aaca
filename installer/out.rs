//! Standard output that never panics. `println!` panics when stdout is a closed pipe
//! (`vgpuctl status | head -1`) or a full device (`>/dev/full`), which would kill a setup half-way
//! through a step. Here a failed write is remembered instead, and the run goes on to its end (or
//! its checkpoint): output is a report, never what decides whether the host is changed.
//! - a closed pipe (EPIPE): the reader is gone; further output is dropped, and the exit is quiet;
//! - any other error (ENOSPC, EIO): said once on stderr at the end, and the run exits 1.

use std::io::{self, Write};
use std::sync::Mutex;

static FAILED: Mutex<Option<io::ErrorKind>> = Mutex::new(None);
static FAILURE_TEXT: Mutex<Option<String>> = Mutex::new(None);

/// Write to stdout and flush (so an error is seen now, not lost in a buffer at exit).
pub fn write(args: std::fmt::Arguments) {
    let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    if failed.is_some() {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|_| stdout.flush()) {
        *failed = Some(e.kind());
        *FAILURE_TEXT.lock().unwrap_or_else(|e| e.into_inner()) = Some(describe(&e));
    }
}

/// The OS error's text without Rust's "(os error N)" suffix.
fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// What went wrong with stdout, if anything but a closed pipe: `cannot write output: ...`.
pub fn error() -> Option<String> {
    let failed = *FAILED.lock().unwrap_or_else(|e| e.into_inner());
    match failed {
        None | Some(io::ErrorKind::BrokenPipe) => None,
        Some(_) => FAILURE_TEXT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|t| format!("cannot write output: {t}")),
    }
}

/// The reader of stdout went away (EPIPE).
pub fn closed() -> bool {
    *FAILED.lock().unwrap_or_else(|e| e.into_inner()) == Some(io::ErrorKind::BrokenPipe)
}

/// `print!` that never panics (see the module comment).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

/// `println!` that never panics (see the module comment).
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}
