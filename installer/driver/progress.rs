//! Progress of a transfer: an indicatif bar (bytes, rate, ETA) on a terminal, one plain line
//! every few seconds otherwise (journald keeps them), nothing in quiet mode. Never a silent wait:
//! even in line mode a line is printed when the transfer starts and when it ends.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    #[default]
    Auto,
    Bar,
    Lines,
    Quiet,
}

/// Where messages (warnings, progress lines) go: stderr, or a buffer in tests.
#[derive(Clone)]
pub struct Messages {
    sink: Option<Arc<Mutex<Vec<u8>>>>,
}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.sink.is_some() {
            "Messages(buffer)"
        } else {
            "Messages(stderr)"
        })
    }
}

impl Messages {
    pub fn stderr() -> Messages {
        Messages { sink: None }
    }
    /// Messages kept in a buffer (tests read it back).
    pub fn buffer() -> (Messages, Arc<Mutex<Vec<u8>>>) {
        let b = Arc::new(Mutex::new(Vec::new()));
        (
            Messages {
                sink: Some(b.clone()),
            },
            b,
        )
    }
    fn is_terminal(&self) -> bool {
        self.sink.is_none() && std::io::stderr().is_terminal()
    }
    pub fn line(&self, text: &str) {
        // Printed below; traced at debug only so a stderr subscriber does not show it twice.
        tracing::debug!(target: "vgpuctl::driver", "{text}");
        match &self.sink {
            Some(b) => {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(b, "{text}");
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }
    pub fn warn(&self, text: &str) {
        tracing::debug!(target: "vgpuctl::driver", "warning: {text}");
        let line = format!("WARNING: {text}");
        match &self.sink {
            Some(b) => {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(b, "{line}");
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }
}

/// One transfer's progress (download or extraction).
pub struct Transfer {
    label: String,
    total: Option<u64>,
    pos: u64,
    messages: Messages,
    bar: Option<ProgressBar>,
    lines: bool,
    interval: Duration,
    started: Instant,
    start_pos: u64,
    last_line: Instant,
    last_pos: u64,
}

/// How often a plain progress line is printed.
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Transfer {
    /// `label` must already be redacted (it is shown as is).
    pub fn new(mode: ProgressMode, messages: &Messages, label: &str, total: Option<u64>) -> Self {
        let use_bar = match mode {
            ProgressMode::Bar => true,
            ProgressMode::Auto => messages.is_terminal(),
            ProgressMode::Lines | ProgressMode::Quiet => false,
        };
        let bar = use_bar.then(|| {
            let pb = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            pb.set_style(style);
            pb.set_message(label.to_string());
            pb
        });
        let now = Instant::now();
        let t = Transfer {
            label: label.to_string(),
            total,
            pos: 0,
            messages: messages.clone(),
            bar,
            lines: !use_bar && mode != ProgressMode::Quiet,
            interval: LINE_INTERVAL,
            started: now,
            start_pos: 0,
            last_line: now,
            last_pos: 0,
        };
        if t.lines {
            t.messages.line(&format!(
                "{}: starting{}",
                t.label,
                total
                    .map(|n| format!(", {}", HumanBytes(n)))
                    .unwrap_or_default()
            ));
        }
        t
    }

    /// Shorter line interval (tests).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// (Re)start at `pos` of `total` (a resume starts past zero, a restart at zero).
    pub fn reset(&mut self, pos: u64, total: Option<u64>) {
        self.pos = pos;
        self.total = total;
        self.start_pos = pos;
        self.last_pos = pos;
        self.started = Instant::now();
        self.last_line = self.started;
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.reset();
            b.set_position(pos);
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.pos += n;
        if let Some(b) = &self.bar {
            b.set_position(self.pos);
        } else if self.lines && self.last_line.elapsed() >= self.interval {
            let dt = self.last_line.elapsed().as_secs_f64();
            let rate = (self.pos - self.last_pos) as f64 / dt.max(1e-6);
            self.messages.line(&format!(
                "{}: {}, {}/s",
                self.label,
                self.amount(),
                HumanBytes(rate as u64)
            ));
            self.last_line = Instant::now();
            self.last_pos = self.pos;
        }
    }

    /// A message that must not be torn by the bar.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| self.messages.line(text)),
            None => self.messages.line(text),
        }
    }

    fn amount(&self) -> String {
        match self.total {
            Some(t) if t > 0 => format!(
                "{} of {} ({}%)",
                HumanBytes(self.pos),
                HumanBytes(t),
                self.pos * 100 / t
            ),
            _ => HumanBytes(self.pos).to_string(),
        }
    }

    pub fn finish(self, what: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = (self.pos - self.start_pos) as f64 / secs.max(1e-6);
        let text = format!(
            "{}: {what}, {} in {:.1} s ({}/s)",
            self.label,
            HumanBytes(self.pos),
            secs,
            HumanBytes(rate as u64)
        );
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.bar.is_some() || self.lines {
            self.messages.line(&text);
        }
    }

    /// Stop drawing without a summary (the caller reports the failure).
    pub fn abandon(self) {
        if let Some(b) = &self.bar {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_mode_prints_start_periodic_and_end_lines() {
        let (m, buf) = Messages::buffer();
        let mut t = Transfer::new(ProgressMode::Auto, &m, "downloading x.zip", Some(1000))
            .with_interval(Duration::ZERO);
        t.inc(250);
        t.inc(250);
        t.finish("done");
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].starts_with("downloading x.zip: starting, 1000 B"),
            "{out}"
        );
        assert!(lines[1].contains("250 B of 1000 B (25%)"), "{out}");
        assert!(lines[2].contains("(50%)"), "{out}");
        assert!(lines[3].contains("done, 500 B in"), "{out}");
    }

    #[test]
    fn quiet_prints_nothing() {
        let (m, buf) = Messages::buffer();
        let mut t = Transfer::new(ProgressMode::Quiet, &m, "x", None);
        t.inc(5);
        t.finish("done");
        assert!(buf.lock().unwrap().is_empty());
    }
}
