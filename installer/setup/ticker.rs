//! A heartbeat for a step that takes a while (SR-IOV readiness, the driver's installer, an
//! initramfs rebuild): on a terminal a spinner with the elapsed time and what is awaited, on
//! stderr, cleared when the step ends; otherwise a plain line on stdout every interval, so a
//! journal or a CI log shows the run is alive and what it waits for. Never a silent wait.

use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a plain progress line is printed while a step runs (not on a terminal).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Overrides the plain lines' interval, in milliseconds (a slow console that wants fewer lines,
/// or a test that wants them soon).
pub const INTERVAL_ENV: &str = "VGPUCTL_PROGRESS_INTERVAL_MS";

fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_INTERVAL)
}

/// Runs until dropped.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    spinner: Option<indicatif::ProgressBar>,
}

/// The plain line printed after `elapsed` of waiting for `what`.
pub fn line(what: &str, elapsed: Duration) -> String {
    format!("      ... {} s: {what}", elapsed.as_secs())
}

impl Ticker {
    /// Start showing that `what` is being waited for.
    pub fn start(what: &str) -> Ticker {
        Ticker::start_every(what, interval())
    }

    fn start_every(what: &str, every: Duration) -> Ticker {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("      {spinner} {elapsed} {msg}")
            {
                s.set_style(style);
            }
            s.set_message(what.to_string());
            s.enable_steady_tick(Duration::from_millis(120));
            return Ticker {
                stop,
                thread: None,
                spinner: Some(s),
            };
        }
        let (what, flag) = (what.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("vgpuctl-ticker".into())
            .spawn(move || {
                let start = Instant::now();
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                // Stopped before this thread first waited: the step was quicker than a spawn.
                while !*stopped {
                    let (guard, timeout) = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if timeout.timed_out() {
                        crate::outln!("{}", line(&what, start.elapsed()));
                    }
                }
            })
            .ok();
        Ticker {
            stop,
            thread,
            spinner: None,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_how_long_and_what_for() {
        assert_eq!(
            line("SR-IOV on 4 GPUs", Duration::from_millis(20_400)),
            "      ... 20 s: SR-IOV on 4 GPUs"
        );
    }

    #[test]
    fn a_ticker_dropped_at_once_stops_at_once_not_after_its_interval() {
        // Dropping joins the thread (no line can come after the step's result). A step quicker
        // than the thread's start once made that join wait a whole interval: 10 s per step.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(Ticker::start_every("nothing", Duration::from_secs(3600)));
            let _ = tx.send(());
        });
        // A hang guard, not a speed check: the bug waits an hour.
        assert!(
            rx.recv_timeout(Duration::from_secs(300)).is_ok(),
            "the ticker waited out its interval"
        );
    }
}
