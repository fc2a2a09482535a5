//! Publishing the records of a log-based source (Kafka, RocketMQ) with their offsets tracked.
//!
//! Each record is handed on with a [`Ticket`] from the source's [`OffsetTracker`]. The ticket
//! rides in the event's [`Completion`], so the record counts as finished only when every
//! delivery of its event has ended; the source commits what its tracker says is finished.
//! Publishing waits while the target is full, and gives up only when the source stops: an
//! unpublished record stays unfinished, so its offset is never committed and it is read again.
//!
//! What it does not do: read records, map them to events, or commit offsets (each source's
//! task does, with its client).

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use triggerfish_core::config::InvalidRecords;
use triggerfish_core::event::{EventBatch, EventRef};
use triggerfish_core::sources::offsets::{OffsetTracker, Ticket};

use crate::dispatch::{EnqueueAllError, TriggerHandle};
use crate::sources::{Publisher, SourceMetrics};
use crate::store::{Ack, Completion, DEFAULT_TTL, OfferError, arrival_now};

/// A source's offset tracker, shared with the completions of its events in flight. Locked
/// only for map updates, never across I/O or `.await`.
pub(super) type Tracker<P> = Arc<parking_lot::Mutex<OffsetTracker<P>>>;

/// One record's event, ready to publish, with its ticket.
pub(super) struct Ready<P> {
    /// The record's place in its partition or queue.
    pub ticket: Ticket<P>,
    /// Its event.
    pub event: EventRef,
}

/// Why a record is not an event, as a source's mapper says.
pub(super) trait BadRecord: Display {
    /// The metric's reason: `too_large` or `invalid`.
    fn reason(&self) -> &'static str;
}

impl BadRecord for triggerfish_core::sources::kafka::InvalidRecord {
    fn reason(&self) -> &'static str {
        self.reason()
    }
}

impl BadRecord for triggerfish_core::sources::rocketmq::InvalidMessage {
    fn reason(&self) -> &'static str {
        self.reason()
    }
}

/// Where a log-based source's events go: its target, and its dead-letter sink for records
/// that are not events.
pub(super) struct TrackedPublisher<P: Ord + Clone> {
    /// The source, for logs and metrics.
    pub key: Arc<str>,
    /// The target.
    pub publisher: Arc<Publisher>,
    /// Where descriptions of bad records go (`invalidRecords: deadLetter`).
    pub dead_letter: Option<Arc<TriggerHandle>>,
    /// The offsets.
    pub tracker: Tracker<P>,
    /// Counts published events.
    pub metrics: SourceMetrics,
}

/// Tells the tracker when an event's deliveries ended.
struct OffsetAck<P: Ord + Clone> {
    tracker: Tracker<P>,
    ticket: Ticket<P>,
}

impl<P: Ord + Clone + Send + Sync + 'static> Ack for OffsetAck<P> {
    fn ack(&self) {
        self.tracker.lock().finish(&self.ticket);
    }

    /// A delivery was cut short (shutdown): the record stays unfinished, so its offset is
    /// never committed and it is read again.
    fn nak(&self) {}
}

impl<P: Ord + Clone + Send + Sync + 'static> TrackedPublisher<P> {
    /// Publishes the events of one turn to the target. False when stopping.
    pub async fn publish(&self, ready: Vec<Ready<P>>, stop: &CancellationToken) -> bool {
        if ready.is_empty() {
            return true;
        }
        let n = ready.len();
        match &*self.publisher {
            Publisher::Broker { key, store } => {
                let at = arrival_now();
                let (refs, mut tickets): (Vec<EventRef>, Vec<Option<Ticket<P>>>) = ready
                    .into_iter()
                    .map(|r| (r.event.into_stamped(at), Some(r.ticket)))
                    .unzip();
                let mut pause = Duration::from_millis(2);
                loop {
                    let result = store
                        .publish_tracked(key, &refs, |i| self.completion(tickets[i].take()))
                        .await;
                    match result {
                        Ok(()) => break,
                        Err(OfferError::Full | OfferError::Unavailable(_)) => {
                            tokio::select! {
                                () = stop.cancelled() => return false,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_millis(200));
                        }
                    }
                }
            }
            Publisher::Dispatcher(handle) => {
                for r in ready {
                    if !self.enqueue(handle, r, stop).await {
                        return false;
                    }
                }
            }
        }
        self.metrics.record_many(&self.key, "published", n);
        true
    }

    /// Handles a record that is not an event (`invalid`): counts it by its reason, then, as
    /// `action` says, skips it (its offset is finished now) or queues its description, made by
    /// `describe`, on `dead` for [`TrackedPublisher::dead_letter`]. A description that does not
    /// fit an event either is logged and skipped. `what` names the record in logs ("record",
    /// "message").
    pub fn refuse<E: Display>(
        &self,
        ticket: Ticket<P>,
        invalid: &dyn BadRecord,
        action: InvalidRecords,
        what: &str,
        describe: impl FnOnce() -> Result<EventBatch, E>,
        dead: &mut Vec<Ready<P>>,
    ) {
        let outcome = match action {
            InvalidRecords::DeadLetter => "dead_lettered",
            InvalidRecords::Skip => "skipped",
        };
        self.metrics
            .record(&self.key, &format!("{}_{outcome}", invalid.reason()), 0);
        if action == InvalidRecords::Skip {
            tracing::warn!(source = %self.key, error = %invalid, "bad {what} skipped (invalidRecords: skip)");
            self.tracker.lock().finish(&ticket);
            return;
        }
        match describe() {
            Ok(batch) => {
                tracing::warn!(source = %self.key, error = %invalid, "bad {what} sent to the dead-letter sink");
                dead.push(Ready {
                    ticket,
                    event: one(batch),
                });
            }
            Err(e) => {
                tracing::error!(source = %self.key, error = %invalid, dead_letter_error = %e,
                    "bad {what} skipped: not even its description fits an event");
                self.tracker.lock().finish(&ticket);
            }
        }
    }

    /// Sends bad records' descriptions to the dead-letter dispatcher. False when stopping.
    pub async fn dead_letter(&self, ready: Vec<Ready<P>>, stop: &CancellationToken) -> bool {
        let Some(handle) = &self.dead_letter else {
            // Built only with a dead-letter sink; without one nothing is queued here.
            return true;
        };
        for r in ready {
            if !self.enqueue(handle, r, stop).await {
                return false;
            }
        }
        true
    }

    async fn enqueue(&self, handle: &TriggerHandle, r: Ready<P>, stop: &CancellationToken) -> bool {
        let mut ticket = Some(r.ticket);
        let queued = tokio::select! {
            () = stop.cancelled() => return false,
            q = handle.enqueue_all_with(vec![r.event], DEFAULT_TTL, Instant::now(), |_| self.completion(ticket.take())) => q,
        };
        match queued {
            Ok(()) => true,
            Err(EnqueueAllError::Closed) => false,
            Err(EnqueueAllError::TooLarge) => {
                // One event larger than the sink's whole queue: it can never be delivered.
                tracing::error!(source = %self.key, "an event is larger than the sink's delivery queue (Server.spec.queues.trigger.bytes); it is not published and its offset is not committed");
                false
            }
        }
    }

    fn completion(&self, ticket: Option<Ticket<P>>) -> Completion {
        match ticket {
            Some(ticket) => Completion::new(Box::new(OffsetAck {
                tracker: Arc::clone(&self.tracker),
                ticket,
            })),
            None => Completion::none(),
        }
    }
}

/// The one event of a mapped record's batch (a mapper makes exactly one).
pub(super) fn one(batch: EventBatch) -> EventRef {
    EventRef::new(Arc::new(batch), 0)
        .unwrap_or_else(|| unreachable!("a mapped record is one event"))
}
