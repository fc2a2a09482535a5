//! Latency histograms (HdrHistogram, nanoseconds, 3 significant digits) and their summary.
//!
//! [`Latencies`] is one histogram for one task. [`SharedLatencies`] is a small set of them
//! behind locks, for the sink, whose connections record concurrently: each connection records
//! into the shard its number picks, so two connections rarely contend, and a lock is held only
//! for one `record` (tens of nanoseconds).

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// The largest latency recorded exactly: one hour. Larger ones are recorded as one hour.
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty histogram covering 1 ns to one hour at 3 significant digits.
    pub fn new() -> Latencies {
        // The bounds are constants that satisfy `new_with_bounds`' preconditions
        // (1 <= low, 2 * low <= high, sigfig <= 5).
        Latencies(Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("constant, valid bounds"))
    }

    /// Records one latency; values beyond the range are clamped to it.
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Records the same latency for `n` events.
    pub fn record_n(&mut self, ns: u64, n: u64) {
        self.0.saturating_record_n(ns.max(1), n);
    }

    /// Adds every value of `other` to this histogram.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so the addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The percentiles and extremes, in microseconds.
    pub fn summary(&self) -> Summary {
        let h = &self.0;
        if h.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Summary {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

/// A latency distribution in microseconds. All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest value.
    pub max_us: f64,
}

/// Histograms recorded into by concurrent tasks; see the module docs.
#[derive(Debug)]
pub struct SharedLatencies {
    shards: Box<[Mutex<Latencies>]>,
}

impl SharedLatencies {
    /// `shards` histograms (at least one).
    pub fn new(shards: usize) -> SharedLatencies {
        SharedLatencies {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Latencies::new()))
                .collect(),
        }
    }

    /// Records `n` events of latency `ns` into the shard `hint` picks.
    pub fn record_n(&self, hint: usize, ns: u64, n: u64) {
        // parking_lot in async code: the lock is held for one record and never across an
        // `.await`, so a waiter spins for nanoseconds at most.
        self.shards[hint % self.shards.len()].lock().record_n(ns, n);
    }

    /// All shards merged into one histogram.
    pub fn merged(&self) -> Latencies {
        let mut all = Latencies::new();
        for shard in &self.shards {
            all.merge(&shard.lock());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_distribution() {
        let mut l = Latencies::new();
        // 1..=1000 µs, one each.
        for us in 1..=1000_u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.min_us, 1.0), "{s:?}");
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p999_us, 999.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
        assert!(close(s.mean_us, 500.5), "{s:?}");
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(Latencies::new().summary(), Summary::default());
        let mut l = Latencies::new();
        l.record(0);
        l.record(u64::MAX);
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_us >= 3.6e9 * 0.999, "clamped to an hour: {s:?}");
    }

    #[test]
    fn shards_merge() {
        let shared = SharedLatencies::new(4);
        for i in 0..100_usize {
            shared.record_n(i, 1000, 2);
        }
        assert_eq!(shared.merged().count(), 200);
    }
}
