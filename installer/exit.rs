//! Exit codes and the error type the CLI turns into them.
//! 0 done, 1 failed, 2 bad input or usage, 3 stopped at a reboot checkpoint, 130 cancelled by the
//! operator (Esc or Ctrl-C at a prompt, before any change: 128 + SIGINT, as a shell reports Ctrl-C).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Reboot = 3,
    Cancelled = 130,
}

/// An error that knows its exit code. Bad input (profile, arguments, links) is `Usage` (2): the
/// host was not touched. Anything that went wrong while acting is `Failed` (1).
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(msg: impl fmt::Display) -> Failure {
        Failure {
            code: Exit::Usage,
            error: anyhow::anyhow!("{msg}"),
        }
    }
    pub fn usage_from(e: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: Exit::Usage,
            error: e.into(),
        }
    }
    /// The operator cancelled at a prompt; `what` says what was (not) changed.
    pub fn cancelled(what: &str) -> Failure {
        Failure {
            code: Exit::Cancelled,
            error: anyhow::anyhow!("Cancelled: {what}."),
        }
    }
    pub fn failed(msg: impl fmt::Display) -> Failure {
        Failure {
            code: Exit::Failed,
            error: anyhow::anyhow!("{msg}"),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: Exit::Failed,
            error: e.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // anyhow's alternate form prints the whole context chain on one line.
        write!(f, "{:#}", self.error)
    }
}
