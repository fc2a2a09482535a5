//! The figures of a run: one JSON line for scripts (stdout) and a summary for people (stderr).
//!
//! Counts are of events, not requests (a batch of 100 answered 429 is 100 rejected events).
//! Loss and duplicates assume each event matches exactly one trigger; with fan-out the
//! sink's counts are per delivery and `lost` reads low.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::loadgen::latency::Summary;
use crate::loadgen::payload::Mode;

/// Everything one `tf-loadgen` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `"send"`, or `"sink-only"`.
    pub kind: &'static str,
    /// The target URL (empty for a sink-only run).
    pub target: String,
    /// Content mode of the requests.
    pub mode: Mode,
    /// Events per request.
    pub batch: u32,
    /// Concurrent connections.
    pub connections: usize,
    /// The rate asked for, in events/s; `None` for `max`.
    pub rate: Option<f64>,
    /// Events the run planned (`None` when only the duration bounded it).
    pub planned: Option<u64>,
    /// Requests sent.
    pub requests: u64,
    /// Events sent: accepted + rejected + failed.
    pub sent: u64,
    /// Events in requests the target answered 2xx.
    pub accepted: u64,
    /// Events in requests the target answered with another status.
    pub rejected: u64,
    /// Events in requests that got no answer.
    pub failed: u64,
    /// Planned events never sent (the run ran out of time or was stopped).
    pub unsent: u64,
    /// Target responses per status code.
    pub statuses: BTreeMap<String, u64>,
    /// Failed connection attempts to the target.
    pub connect_errors: u64,
    /// Seconds from the first due time to the last answer.
    pub send_seconds: f64,
    /// Seconds from the first due time to the last arrival at the sink.
    pub deliver_seconds: f64,
    /// Accepted events per second of sending.
    pub accepted_per_s: f64,
    /// Events received (first deliveries) per second, first send to last arrival.
    pub delivered_per_s: f64,
    /// Events received at the sink for the first time.
    pub received: u64,
    /// Events received again.
    pub duplicates: u64,
    /// Accepted events not received by the end of the drain.
    pub lost: u64,
    /// Received events that were never accepted (delivered despite a non-2xx answer, or
    /// fan-out to several triggers).
    pub unexpected: u64,
    /// Events at the sink without a load-generator id.
    pub foreign: u64,
    /// Events at the sink without a readable stamp.
    pub unstamped: u64,
    /// Sink requests answered 503 on purpose.
    pub sink_failed: u64,
    /// Sink requests held on purpose.
    pub sink_slowed: u64,
    /// Sink requests it could not parse.
    pub sink_bad_requests: u64,
    /// End to end: due time of the request → arrival at the sink, per event.
    pub e2e: Summary,
    /// Due time → the target's answer, per request.
    pub ack: Summary,
    /// Open loop: actual send − due time, per request; how far the generator fell behind.
    pub send_lag: Summary,
    /// The load generator, the sink and the router share this many cores.
    pub cores: usize,
}

impl RunReport {
    /// The JSON line.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// The summary for people.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.kind == "send" {
            let rate = self
                .rate
                .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}/s"));
            writeln!(
                w,
                "tf-loadgen: {} → {} ({:?}, batch {}, {} connections, rate {rate})",
                self.sent, self.target, self.mode, self.batch, self.connections
            )?;
            writeln!(
                w,
                "  sent {}  accepted {}  rejected {}  failed {}  unsent {}  statuses {:?}",
                self.sent, self.accepted, self.rejected, self.failed, self.unsent, self.statuses
            )?;
            writeln!(
                w,
                "  throughput: accepted {:.0} events/s over {:.2} s, delivered {:.0} events/s over {:.2} s",
                self.accepted_per_s, self.send_seconds, self.delivered_per_s, self.deliver_seconds
            )?;
        }
        writeln!(
            w,
            "  sink: received {}  duplicates {}  lost {}  unexpected {}  foreign {}  unstamped {}  (503 on purpose {}, slowed {}, bad {})",
            self.received,
            self.duplicates,
            self.lost,
            self.unexpected,
            self.foreign,
            self.unstamped,
            self.sink_failed,
            self.sink_slowed,
            self.sink_bad_requests
        )?;
        write_latency(w, "end-to-end", &self.e2e)?;
        if self.kind == "send" {
            write_latency(w, "ack", &self.ack)?;
            if self.send_lag.count > 0 {
                write_latency(w, "send lag", &self.send_lag)?;
            }
        }
        writeln!(
            w,
            "  note: the load generator, its sink and the router share {} cores",
            self.cores
        )
    }
}

fn write_latency(w: &mut dyn Write, what: &str, s: &Summary) -> io::Result<()> {
    writeln!(
        w,
        "  {what:<10} µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n = {})",
        s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us, s.count
    )
}
