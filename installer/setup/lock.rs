//! One mutating run at a time: an flock on `/var/lib/vgpuctl/lock` holding the owner's pid and
//! command. The kernel drops an flock when its process dies, so a stale lock file from a dead
//! run is simply taken over (and said so).

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::host::Host;

pub const LOCK: &str = "var/lib/vgpuctl/lock";

pub struct Lock {
    _flock: Flock<std::fs::File>,
}

#[derive(Debug, thiserror::Error)]
#[error("another vgpuctl run holds the lock {path}: {holder}; wait for it to finish (or stop it) and try again")]
pub struct Busy {
    pub path: String,
    pub holder: String,
}

/// Take the lock now, or fail naming its holder.
pub fn acquire(host: &Host, what: &str) -> Result<Lock> {
    try_acquire(host, what)?.map_err(Into::into)
}

/// Take the lock, waiting at most `max` for a run that holds it (said once on stderr). For
/// commands that must not give up at the first try: two boot-time restores, or a restore during
/// a setup, would otherwise both create the same vGPUs.
pub fn acquire_waiting(host: &Host, what: &str, max: Duration) -> Result<Lock> {
    let start = Instant::now();
    let mut said = false;
    loop {
        match try_acquire(host, what)? {
            Ok(lock) => {
                if said {
                    eprintln!(
                        "vgpuctl {what}: got the lock after waiting {:.1} s",
                        start.elapsed().as_secs_f64()
                    );
                }
                return Ok(lock);
            }
            Err(busy) if start.elapsed() >= max => {
                return Err(anyhow::Error::new(busy)
                    .context(format!("waited {} s for the lock", max.as_secs())));
            }
            Err(busy) => {
                if !said {
                    eprintln!(
                        "vgpuctl {what}: waiting (at most {} s) for the lock {}: {}",
                        max.as_secs(),
                        busy.path,
                        busy.holder
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `Ok(Err(busy))` when another live process holds the lock.
fn try_acquire(host: &Host, what: &str) -> Result<std::result::Result<Lock, Busy>> {
    let path = host.checked_path(LOCK)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Ok(Err(Busy {
                path: format!("/{LOCK}"),
                holder: if holder.trim().is_empty() {
                    "unknown process".into()
                } else {
                    holder.trim().to_string()
                },
            }));
        }
    };
    let mut previous = String::new();
    let _ = flock.read_to_string(&mut previous);
    if let Some(pid) = previous.split_whitespace().nth(1) {
        tracing::warn!(
            "took over a stale lock left by pid {pid} ({})",
            previous.trim()
        );
    }
    flock.set_len(0)?;
    flock.rewind()?;
    write!(flock, "pid {} {what}", std::process::id())?;
    flock.sync_all()?;
    Ok(Ok(Lock { _flock: flock }))
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Leave the file, empty: the next run must not mistake a clean exit for a stale lock.
        let _ = self._flock.set_len(0);
    }
}
