//! Fault injection for the crash-consistency tests.
//!
//! Production ignores this entirely unless `VGPUCTL_FAULT_KILL_AT=N` is set: then the process
//! kills itself with SIGKILL at the N-th fault point it passes (1-based). Points are placed at
//! step boundaries and inside file writes. `VGPUCTL_FAULT_COUNT=FILE` appends one line per point
//! passed, so a test can learn how many points a run has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PASSED: AtomicU64 = AtomicU64::new(0);

fn kill_at() -> Option<u64> {
    static KILL_AT: OnceLock<Option<u64>> = OnceLock::new();
    *KILL_AT.get_or_init(|| {
        std::env::var("VGPUCTL_FAULT_KILL_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

fn count_file() -> Option<&'static str> {
    static FILE: OnceLock<Option<String>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var("VGPUCTL_FAULT_COUNT").ok())
        .as_deref()
}

/// A place where a crash is interesting.
pub fn point(label: &str) {
    if kill_at().is_none() && count_file().is_none() {
        return;
    }
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(file) = count_file() {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(f, "{n} {label}");
        }
    }
    if kill_at() == Some(n) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; wait for it to land.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
