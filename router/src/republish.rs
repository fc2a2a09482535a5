//! Publishing the events the router makes while it delivers: replies, and events a trigger
//! forwards to a broker (a `Broker` subscriber or dead-letter sink).
//!
//! The delivery that makes them holds one of its trigger's delivery slots while they wait for
//! room, and the room may be waiting on that very slot. A subscriber that replies with events
//! its own trigger matches again (a reply loop, growing if a reply carries several events)
//! fills the trigger's queue; the shard driver then waits for room in it, and replies that
//! wait for room in the shard wait on that driver. Waiting without a bound stalled every
//! trigger of the shard for good. So [`Republisher::publish`]:
//! - does not hand the shard an event for a trigger whose queue is full (the shard driver
//!   would wait on it), nor anything while the shard queues are full, and tries again;
//! - waits so at most `patience` (the trigger's `timeout`, 30 s by default);
//! - does not wait at all when the full queue is the publishing trigger's own (the trigger
//!   whose reply, forward or dead letter it is, even into its own broker): only its own
//!   deliveries can make room there.
//!
//! It waits on *full* queues, not on backlogged ones as ingress does: a backlog lasts until
//! its queue is half empty, and two triggers replying to each other (A answers with B's
//! events, B with A's) would each hold the other's backlog, with room in both queues.
//!
//! A refused publication fails the delivery, as in Knative when a reply destination refuses
//! a reply: the caller dead-letters the event that was answered (replies) or treats the
//! refusal as a 429 or 503 attempt (forwards), which its retry policy may repeat.
//!
//! What this module does not do: queue, match or deliver (see [`crate::store`],
//! [`crate::shard`] and [`crate::dispatch`]). Events with no delivery slot behind them
//! (scheduled events, sources) wait for room with [`Store::offer`] instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::StatusCode;
use triggerfish_core::event::EventRef;

use crate::shard::Snapshot;
use crate::store::{BrokerKey, OfferError, Store};

/// The first pause before trying again; pauses double up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Publishes the router's own events, waiting a bounded time for room.
#[derive(Clone)]
pub struct Republisher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    store: Store,
}

/// Why the router's own events were not taken. Nothing of them was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An event matches the publishing trigger itself, whose queue is full: a reply loop.
    /// Only the trigger's own deliveries could make room, so waiting cannot help.
    #[error(
        "the events match trigger {trigger}, which published them and whose queue is full (a reply or forward loop?): only its own deliveries can make room, so they are refused at once"
    )]
    OwnQueueFull {
        /// The trigger, `namespace/name`.
        trigger: String,
    },
    /// An event matches a trigger whose queue was still full when patience ran out.
    #[error("the events match trigger {trigger}, whose queue was still full after {waited:?}")]
    TriggerFull {
        /// The trigger, `namespace/name`.
        trigger: String,
        /// How long the publication waited.
        waited: Duration,
    },
    /// The broker's shard queues stayed full.
    #[error("the queues of broker {broker} were still full after {waited:?}")]
    Full {
        /// The broker, `namespace/name`.
        broker: String,
        /// How long the publication waited.
        waited: Duration,
    },
    /// The store could not take events (JetStream unreachable).
    #[error("the store was still unavailable after {waited:?}: {reason}")]
    Unavailable {
        /// The store's error.
        reason: String,
        /// How long the publication waited.
        waited: Duration,
    },
}

impl Refused {
    /// The status a broker's ingress answers a producer for the same refusal: 503 for an
    /// unavailable store, else 429. `knativeerrorcode` carries it.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl Republisher {
    /// A publisher into the brokers of `snapshot` (the live routing state) through `store`.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, store: Store) -> Republisher {
        Republisher { snapshot, store }
    }

    /// Publishes `events` to `broker` with `ttl`, all or nothing, trying again while they are
    /// refused for at most `patience`. `publisher` is the trigger publishing them
    /// (`namespace/name`), if any: a refusal that names it comes back at once.
    pub async fn publish(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        ttl: u8,
        patience: Duration,
        publisher: Option<&str>,
    ) -> Result<(), Refused> {
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let refused = match self.full_trigger(broker, events, publisher) {
                Some(trigger) if publisher == Some(trigger.as_str()) => {
                    return Err(Refused::OwnQueueFull { trigger });
                }
                Some(trigger) => Refused::TriggerFull {
                    trigger,
                    waited: started.elapsed(),
                },
                None => match self.store.offer_once(broker, events, Some(ttl)).await {
                    Ok(()) => return Ok(()),
                    Err(OfferError::Full) => Refused::Full {
                        broker: broker.to_string(),
                        waited: started.elapsed(),
                    },
                    Err(OfferError::Unavailable(reason)) => Refused::Unavailable {
                        reason,
                        waited: started.elapsed(),
                    },
                },
            };
            let left = patience.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(refused);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The trigger of `broker` whose queue is full for one of `events`, preferring
    /// `publisher`; `None` when there is none (or the store keeps no queues per trigger).
    fn full_trigger(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        publisher: Option<&str>,
    ) -> Option<String> {
        let snapshot = self.snapshot.load();
        let route = snapshot.brokers.get(broker)?;
        route
            .full_for(events.iter().map(EventRef::view), publisher)
            .map(str::to_owned)
    }
}
