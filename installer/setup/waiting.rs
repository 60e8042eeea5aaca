//! Never a silent wait in a step: while one runs longer than a moment, a terminal shows a spinner
//! with what is awaited and the time so far (cleared when the step ends), and a log (stdout not a
//! terminal: journald, a pipe) gets one plain line every [`LINE_EVERY`]. `[1/20] Enable SR-IOV`
//! sat silent until "ready after 5.0 s", the driver install and the initramfs rebuild too.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::plan::Action;

/// How often a log gets a "still waiting" line.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// A terminal's spinner appears only for a wait longer than this (most steps take milliseconds).
const SPINNER_AFTER: Duration = Duration::from_millis(800);

/// What a step waits for, in the words of its line. Pure.
pub fn awaited(action: &Action, title: &str) -> String {
    match action {
        Action::EnableSriov { pf, .. } => format!("the VFs of {pf} and their vGPU types"),
        Action::InstallDriver { .. } => "the driver download and installer".into(),
        Action::Run(cmd) => format!("`{cmd}`"),
        Action::CreateVgpus { gpu, .. } => format!("the vGPUs on {gpu}"),
        _ => title.to_string(),
    }
}

/// The log's line after `elapsed`. Pure.
pub fn line(what: &str, elapsed: Duration) -> String {
    format!("      still waiting for {what} ({} s)", elapsed.as_secs())
}

/// Run `work`, saying what is awaited while it runs.
pub fn run<T: Send>(what: &str, work: impl FnOnce() -> T + Send) -> T {
    // The spinner draws on stderr: both must be the terminal, or the log gets lines.
    let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let start = Instant::now();
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            if terminal {
                spin(what, start, &finished)
            } else {
                lines(what, start, &finished)
            }
        });
        let out = work();
        let _ = done.send(());
        out
    })
}

fn lines(what: &str, start: Instant, finished: &mpsc::Receiver<()>) {
    let mut next = LINE_EVERY;
    loop {
        match finished.recv_timeout(next.saturating_sub(start.elapsed())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                crate::outln!("{}", line(what, start.elapsed()));
                next += LINE_EVERY;
            }
            _ => return,
        }
    }
}

fn spin(what: &str, start: Instant, finished: &mpsc::Receiver<()>) {
    if finished.recv_timeout(SPINNER_AFTER).is_ok() {
        return;
    }
    // Its elapsed time counts from the step's start, not from the spinner's.
    let bar = indicatif::ProgressBar::new_spinner().with_elapsed(start.elapsed());
    bar.set_style(
        indicatif::ProgressStyle::with_template("      {spinner} waiting for {msg}: {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    loop {
        bar.tick();
        if finished.recv_timeout(Duration::from_millis(120)).is_ok() {
            break;
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_says_what_and_how_long() {
        assert_eq!(
            line(
                "the VFs of 0000:67:00.0 and their vGPU types",
                Duration::from_millis(20_400)
            ),
            "      still waiting for the VFs of 0000:67:00.0 and their vGPU types (20 s)"
        );
        let a = Action::Run(crate::host::Cmd::new("update-initramfs").arg("-u"));
        assert_eq!(awaited(&a, "Rebuild"), "`update-initramfs -u`");
    }
}
