//! Readiness polling instead of fixed sleeps: check often at first, then back off a little,
//! and give up at a deadline.

use std::time::{Duration, Instant};

/// Poll `ready` until it returns Some or `timeout` passes. The interval starts at 2 ms and grows
/// to at most 25 ms, so a condition that becomes true is seen within ~25 ms.
pub fn until<T>(timeout: Duration, ready: impl FnMut() -> Option<T>) -> Option<T> {
    until_every(timeout, Duration::from_millis(25), ready)
}

/// [`until`] with the longest interval between two looks set by the caller: a condition that is
/// a few cheap reads can be looked at every few ms, so what it waits for is seen at once.
pub fn until_every<T>(
    timeout: Duration,
    longest: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(2).min(longest);
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return None;
        }
        std::thread::sleep(interval.min(timeout - elapsed));
        interval = (interval * 3 / 2).min(longest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_ready() {
        let mut n = 0;
        let v = until(Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, Some(3));
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let mut calls = 0;
        let v: Option<()> = until(Duration::from_millis(30), || {
            calls += 1;
            None
        });
        assert!(v.is_none());
        assert!(calls >= 2);
    }
}
