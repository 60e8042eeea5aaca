//! One mutating run at a time: an flock on `/var/lib/vgpuctl/lock` holding the owner's pid and
//! command. The kernel drops an flock when its process dies, so a stale lock file from a dead
//! run is simply taken over (and said so).

use std::io::{Read, Seek, Write};

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

pub fn acquire(host: &Host, what: &str) -> Result<Lock> {
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
            return Err(Busy {
                path: format!("/{LOCK}"),
                holder: if holder.trim().is_empty() {
                    "unknown process".into()
                } else {
                    holder.trim().to_string()
                },
            }
            .into());
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
    Ok(Lock { _flock: flock })
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Leave the file, empty: the next run must not mistake a clean exit for a stale lock.
        let _ = self._flock.set_len(0);
    }
}
