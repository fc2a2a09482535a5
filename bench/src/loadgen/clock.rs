//! The time base that send stamps and arrivals are measured on.
//!
//! A stamp is nanoseconds since the Unix epoch, but it is computed as the wall-clock time at
//! the start of the process plus a monotonic [`Instant`] offset. Inside one process (the usual
//! case: the sender and the sink of `tf-loadgen`) arrival − send is therefore a difference of
//! two `Instant`s, immune to clock steps. Across processes on one machine (a `--sink-only`
//! sink receiving from another sender) the stamps still agree, up to how far the two
//! processes' wall-clock anchors differ, which is microseconds unless the clock was stepped in
//! between.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic clock anchored to the wall clock once.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    /// Anchors a new clock at the current instant.
    pub fn new() -> Clock {
        let base = Instant::now();
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, saturating_nanos);
        Clock { base, base_unix_ns }
    }

    /// Nanoseconds since the Unix epoch, now.
    pub fn now_ns(&self) -> u64 {
        self.at(Instant::now())
    }

    /// Nanoseconds since the Unix epoch at `t` (never before the anchor).
    pub fn at(&self, t: Instant) -> u64 {
        self.base_unix_ns
            .saturating_add(saturating_nanos(t.saturating_duration_since(self.base)))
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Asks Linux to wake this process's sleeping threads on time: by default a timed sleep may
/// end up to 50 µs late (the timer slack), which the open-loop pacer would add to every
/// request's send lag. Call it first thing in `main`: threads inherit the slack of the thread
/// that starts them, and `/proc/self/timerslack_ns` sets the main thread's. Best effort:
/// returns whether it took effect (not on other systems, or in sandboxes without the file).
pub fn tighten_timer_slack() -> bool {
    std::fs::write("/proc/self/timerslack_ns", "1").is_ok()
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
