//! Waiting for something that happens asynchronously (a delivery, a log
//! line, a process ending): one poll loop for every test, so a timeout
//! always names what was awaited.

use std::time::{Duration, Instant};

/// How often `eventually` checks.
const POLL: Duration = Duration::from_millis(20);

/// Runs `check` until it returns `Some`, for at most `timeout`; panics
/// naming `what` when time is up (a relay dropped while panicking prints
/// its servers' logs).
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(value, 30);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn panics_when_time_is_up() {
        eventually::<()>("nothing", Duration::from_millis(50), || None);
    }
}
