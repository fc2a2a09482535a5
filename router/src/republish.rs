//! Publishing the events the router makes while it delivers: replies, and events a trigger
//! forwards to a broker (a `Broker` subscriber or dead-letter sink).
//!
//! They meet the rules a producer meets at ingress: the broker's queues must have room, and
//! no event may match a backlogged trigger ([`crate::dispatch::Backlog`]). Unlike a producer,
//! the delivery that makes them holds one of its trigger's delivery slots while it waits, and
//! a full queue may be waiting on that very slot. A subscriber that replies with events its
//! own trigger matches again (a reply loop, or a reply of several events) fills the trigger's
//! queue; the shard driver then waits for room in it, and the replies wait for room in the
//! shard. Waiting without a bound would stall every trigger of the shard for good, so
//! [`Republisher::publish`]:
//! - waits for room at most `patience` (the trigger's `timeout`, 30 s by default);
//! - does not wait at all when the trigger refusing the events is the one publishing them:
//!   only its own deliveries can make room in its queue.
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

/// Publishes the router's own events under ingress's rules, waiting a bounded time.
#[derive(Clone)]
pub struct Republisher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    store: Store,
}

/// Why the router's own events were not taken. Nothing of them was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An event matches the publishing trigger itself, which is falling behind: a reply loop.
    /// Only the trigger's own deliveries could make room, so waiting cannot help.
    #[error(
        "the events match trigger {trigger}, which published them and is falling behind (a reply loop?): only its own deliveries can make room, so they are refused at once"
    )]
    OwnBacklog {
        /// The trigger, `namespace/name`.
        trigger: String,
    },
    /// An event matches a trigger that was still falling behind when patience ran out.
    #[error("the events match trigger {trigger}, which was still falling behind after {waited:?}")]
    Backlogged {
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
            let refused = match self.backlogged(broker, events, publisher) {
                Some(trigger) if publisher == Some(trigger.as_str()) => {
                    return Err(Refused::OwnBacklog { trigger });
                }
                Some(trigger) => Refused::Backlogged {
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

    /// The backlogged trigger of `broker` that one of `events` matches, preferring
    /// `publisher`; `None` when none is (or the store keeps no backlogs).
    fn backlogged(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        publisher: Option<&str>,
    ) -> Option<String> {
        let snapshot = self.snapshot.load();
        let route = snapshot.brokers.get(broker)?;
        let refused = route.backlogged_among(events.iter().map(EventRef::view), publisher);
        refused
            .iter()
            .find(|b| Some(b.trigger) == publisher)
            .or(refused.first())
            .map(|b| b.trigger.to_owned())
    }
}
