//! The open-loop schedule: when each request is due, independently of when earlier ones were
//! answered.
//!
//! Request `k` is due at `start + k × interval`, with `interval = events per request / rate`.
//! The sender stamps each event with its request's due time, not the time it actually left,
//! so a stalled target shows up in the latencies of every request that should have been sent
//! during the stall (no coordinated omission, as in wrk2). This module is pure arithmetic; the
//! pacing thread in [`sender`](super::sender) turns it into permits.

use std::time::Duration;

/// Why a schedule could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// The rate is not a positive, finite number of events per second.
    #[error("the rate must be a positive number of events per second, not {0}")]
    Rate(f64),
    /// More than one request per nanosecond: no timer can pace that.
    #[error("{0} requests per second is beyond what can be scheduled")]
    TooFast(f64),
}

/// Due times of requests at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    interval_ns: f64,
}

impl Schedule {
    /// A schedule sending `events_per_sec` events per second, `events_per_request` at a time.
    pub fn new(events_per_sec: f64, events_per_request: u32) -> Result<Schedule, ScheduleError> {
        if !(events_per_sec.is_finite() && events_per_sec > 0.0) {
            return Err(ScheduleError::Rate(events_per_sec));
        }
        let requests_per_sec = events_per_sec / f64::from(events_per_request.max(1));
        let interval_ns = 1e9 / requests_per_sec;
        if interval_ns < 1.0 {
            return Err(ScheduleError::TooFast(requests_per_sec));
        }
        Ok(Schedule { interval_ns })
    }

    /// The time between two requests.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns as u64)
    }

    /// When request `k` (from 0) is due, after the start.
    pub fn due(&self, k: u64) -> Duration {
        // Rounded up, so that `due_by(due(k)) == k + 1`. f64 holds integers exactly up to
        // 2^53 ns (104 days): ample for a run.
        Duration::from_nanos((k as f64 * self.interval_ns).ceil() as u64)
    }

    /// How many requests are due once `elapsed` has passed since the start: request 0 is due
    /// at once, so this is at least 1.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        (elapsed.as_nanos() as f64 / self.interval_ns) as u64 + 1
    }

    /// How many requests are due in a run of `duration`: those due strictly before its end.
    pub fn requests_in(&self, duration: Duration) -> u64 {
        (duration.as_nanos() as f64 / self.interval_ns).ceil() as u64
    }
}

/// How a run's events are cut into requests: `events` events in requests of at most `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Events per request (1 outside batch mode).
    pub batch: u32,
    /// Events in the whole run; `u64::MAX` when only a duration bounds it.
    pub events: u64,
}

impl Plan {
    /// The requests of the run (the last one may be a partial batch).
    pub fn requests(&self) -> u64 {
        self.events.div_ceil(u64::from(self.batch.max(1)))
    }

    /// Request `k`: the sequence number of its first event and how many events it carries, or
    /// `None` past the end of the run.
    pub fn request(&self, k: u64) -> Option<(u64, u32)> {
        let batch = u64::from(self.batch.max(1));
        let first = k.checked_mul(batch)?;
        if first >= self.events {
            return None;
        }
        let n = (self.events - first).min(batch);
        Some((first, n as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate() {
        // 1000 events/s in batches of 10: a request every 10 ms.
        let s = Schedule::new(1000.0, 10).unwrap();
        assert_eq!(s.interval(), Duration::from_millis(10));
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(3), Duration::from_millis(30));
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_micros(9_999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(10)), 2);
        assert_eq!(s.due_by(Duration::from_millis(95)), 10);
        assert_eq!(s.requests_in(Duration::from_secs(1)), 100);
        assert_eq!(s.requests_in(Duration::from_millis(1001)), 101);
    }

    #[test]
    fn due_and_due_by_agree() {
        let s = Schedule::new(33_333.0, 1).unwrap();
        for k in [0_u64, 1, 2, 17, 1000, 123_456] {
            // Request k is due at due(k): by then k + 1 requests are due.
            assert_eq!(s.due_by(s.due(k)), k + 1, "k = {k}");
        }
    }

    #[test]
    fn invalid_rates() {
        assert_eq!(Schedule::new(0.0, 1), Err(ScheduleError::Rate(0.0)));
        assert!(Schedule::new(f64::NAN, 1).is_err());
        assert!(matches!(
            Schedule::new(2e9, 1),
            Err(ScheduleError::TooFast(_))
        ));
    }

    #[test]
    fn plan_cuts_the_last_batch_short() {
        let p = Plan {
            batch: 100,
            events: 250,
        };
        assert_eq!(p.requests(), 3);
        assert_eq!(p.request(0), Some((0, 100)));
        assert_eq!(p.request(2), Some((200, 50)));
        assert_eq!(p.request(3), None);
        let unbounded = Plan {
            batch: 1,
            events: u64::MAX,
        };
        assert_eq!(unbounded.request(u64::MAX), None);
        assert_eq!(unbounded.request(7), Some((7, 1)));
    }
}
