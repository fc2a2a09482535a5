//! Where accepted events wait until a shard matches them: the seam between ingress and
//! dispatch.
//!
//! Ingress offers events to the [`Store`] and answers the producer once the store has taken
//! them. Each event then reaches the matcher as an [`Envelope`] carrying a [`Completion`]: the
//! store's way to learn that every delivery of the event has ended (delivered, dead-lettered,
//! or dropped with a count). The shard and delivery code never look behind this seam.
//!
//! - [`memory`]: bounded lock-free queues, one per shard. Fast, and like Knative's
//!   InMemoryChannel it loses what is queued when the process dies.
//! - [`jetstream`]: a NATS JetStream stream per broker, shared by every replica: ingress
//!   answers once JetStream stored the events, and an event is acknowledged once its
//!   deliveries ended, so delivery is at-least-once across crashes.
//!
//! What this module does not do: match or deliver. See [`crate::shard`] and
//! [`crate::dispatch`].

pub mod jetstream;
pub mod memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use triggerfish_core::event::{ArrivalTime, EventBatch, EventRef};

/// The broker an event was published to: `namespace/name`.
pub type BrokerKey = Arc<str>;

/// The TTL that stops reply loops (Knative's `knativebrokerttl`).
pub const DEFAULT_TTL: u8 = 255;

/// The extension carrying the TTL.
pub const TTL_EXTENSION: &str = "knativebrokerttl";

/// Now, as the `knativearrivaltime` that Knative's broker ingress gives every event it
/// accepts. Every way into a broker stamps its events with it before they are shared
/// ([`EventBatch::stamp_arrival`], [`EventRef::stamped`]): HTTP and QUIC ingress, sources,
/// replies, a trigger forwarding to a broker, schedules and delayed events when they fire.
/// Events read back from JetStream keep the value they were stored with.
pub fn arrival_now() -> ArrivalTime {
    ArrivalTime::from(std::time::SystemTime::now())
}

/// One accepted event on its way to the matcher.
pub struct Envelope {
    /// The event, sharing its batch's buffers.
    pub event: EventRef,
    /// The broker it was published to.
    pub broker: BrokerKey,
    /// Remaining reply hops.
    pub ttl: u8,
    /// When ingress accepted it.
    pub accepted_at: Instant,
    /// Tells the store when the event has been fully handled.
    pub completion: Completion,
}

/// Why a store did not take events.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    /// The queues are full; the producer should retry later (HTTP 429).
    #[error("queues are full")]
    Full,
    /// The store cannot take events at all right now (HTTP 503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The store in use. An enum rather than a trait object: there are few stores, and the hot path
/// stays monomorphic.
#[derive(Clone)]
pub enum Store {
    /// In-memory shard queues.
    Memory(Arc<memory::MemoryStore>),
    /// NATS JetStream streams.
    JetStream(Arc<jetstream::JetStreamStore>),
}

impl Store {
    /// Takes a producer's events, all or nothing: the memory store answers at once (full
    /// queues are [`OfferError::Full`], HTTP 429); JetStream answers once every event is
    /// stored (a failure is [`OfferError::Unavailable`], HTTP 503). `ttl` overrides the TTL of
    /// every event (replies); `None` reads each event's `knativebrokerttl`, defaulting to 255.
    pub async fn publish(
        &self,
        broker: &BrokerKey,
        batch: Arc<EventBatch>,
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        match self {
            Store::Memory(m) => m.try_offer(broker, batch, ttl),
            Store::JetStream(js) => {
                let refs: Vec<EventRef> = batch.into_refs().collect();
                Box::pin(js.publish(broker, &refs, ttl)).await
            }
        }
    }

    /// Takes events of existing batches, all or nothing, answering at once as
    /// [`Store::publish`] does.
    pub async fn offer_once(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        match self {
            Store::Memory(m) => m.try_offer_events(broker, events, ttl),
            // Boxed: JetStream's publish future is ~5 KB, and every caller's future (each
            // delivery task's among them) would otherwise carry it inline.
            Store::JetStream(js) => Box::pin(js.publish(broker, events, ttl)).await,
        }
    }

    /// Offers events, waiting for room instead of failing when the queues are full, for as
    /// long as it takes. For events the router itself produces with no producer to push back
    /// on and no delivery slot held while they wait (delayed events). Replies and forwards to a
    /// broker hold a slot, and use [`crate::republish`], which bounds the wait.
    pub async fn offer(
        &self,
        broker: &BrokerKey,
        batch: Arc<EventBatch>,
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        let refs: Vec<EventRef> = batch.into_refs().collect();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match self.offer_once(broker, &refs, ttl).await {
                // Full queues, or JetStream unreachable: the router's own events wait.
                Err(OfferError::Full | OfferError::Unavailable(_)) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Publishes events for a source that commits its position in an external log (Kafka)
    /// only once the events are safe, all or nothing. `completion(index)` is called for each
    /// event once they are taken:
    /// - the memory store loses what it holds when the process dies, so there an event's
    ///   completion finishes only when every trigger is done with it (delivered or
    ///   dead-lettered);
    /// - JetStream has stored the events when this returns, and its consumers deliver them
    ///   at least once, so their completions are finished at once.
    ///
    /// Full queues are [`OfferError::Full`]: nothing was taken, try again later.
    pub async fn publish_tracked(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        mut completion: impl FnMut(usize) -> Completion,
    ) -> Result<(), OfferError> {
        match self {
            Store::Memory(m) => m.try_offer_tracked(broker, events, None, completion),
            Store::JetStream(js) => {
                Box::pin(js.publish(broker, events, None)).await?;
                for i in 0..events.len() {
                    completion(i).finish();
                }
                Ok(())
            }
        }
    }

    /// Events waiting in each shard queue, for the depth gauges.
    pub fn shard_depths(&self) -> Vec<usize> {
        match self {
            Store::Memory(m) => m.shards().iter().map(|s| s.depth()).collect(),
            Store::JetStream(_) => Vec::new(),
        }
    }

    /// Events accepted but not yet handed to a trigger queue.
    pub fn queued(&self) -> usize {
        match self {
            Store::Memory(m) => m.queued(),
            // Queued events are JetStream's; what matters at shutdown is what is in flight.
            Store::JetStream(_) => 0,
        }
    }
}

/// Reads an event's TTL extension (integer, or a string holding one), defaulting to 255.
pub fn event_ttl(event: &EventRef) -> u8 {
    use triggerfish_core::event::AttrValue;
    match event.view().extension(TTL_EXTENSION) {
        Some(AttrValue::Int(i)) => i.clamp(0, i32::from(DEFAULT_TTL)) as u8,
        Some(AttrValue::Str(s)) => s
            .trim()
            .parse::<i64>()
            .map_or(DEFAULT_TTL, |i| i.clamp(0, 255) as u8),
        _ => DEFAULT_TTL,
    }
}

/// Acknowledges an event to the store it came from once every delivery of it has ended.
pub trait Ack: Send + Sync {
    /// Every delivery ended (delivered, dead-lettered, or dropped and counted).
    fn ack(&self);
    /// At least one delivery did not end (the process is stopping); the store should
    /// redeliver the event if it can.
    fn nak(&self);
}

/// Shares of events whose completion someone waits for ([`Completion::new`]: a durable store,
/// or a log-based source tracking offsets) that are not finished yet, in this process. Those
/// events are not lost if the process stops before delivering them: whoever waits delivers them
/// again (see [`awaited_shares`]).
static AWAITED: AtomicUsize = AtomicUsize::new(0);

/// How many shares of awaited events are outstanding (queued, matched, or being delivered):
/// events that JetStream redelivers, or records that a Kafka or RocketMQ source reads again,
/// when this process stops without finishing them. Shutdown reports them apart from the
/// memory store's events, which are lost.
pub fn awaited_shares() -> usize {
    AWAITED.load(Ordering::Acquire)
}

struct Group {
    ack: Box<dyn Ack>,
    outstanding: AtomicUsize,
    unfinished: AtomicBool,
}

/// A share in an event's completion. An event matched by three triggers has three shares; the
/// store hears about the event when the last one is finished. Dropping a share without
/// [`Completion::finish`] counts as unfinished, so a delivery cut short by shutdown is
/// redelivered by durable stores rather than lost.
pub struct Completion {
    group: Option<Arc<Group>>,
}

impl Completion {
    /// A completion nobody listens to (the memory store).
    pub fn none() -> Completion {
        Completion { group: None }
    }

    /// A completion that calls `ack` once every share is finished.
    pub fn new(ack: Box<dyn Ack>) -> Completion {
        AWAITED.fetch_add(1, Ordering::AcqRel);
        Completion {
            group: Some(Arc::new(Group {
                ack,
                outstanding: AtomicUsize::new(1),
                unfinished: AtomicBool::new(false),
            })),
        }
    }

    /// Another share of the same event.
    pub fn fork(&self) -> Completion {
        if let Some(g) = &self.group {
            g.outstanding.fetch_add(1, Ordering::AcqRel);
            AWAITED.fetch_add(1, Ordering::AcqRel);
        }
        Completion {
            group: self.group.clone(),
        }
    }

    /// This share is done.
    pub fn finish(mut self) {
        self.release(false);
    }

    fn release(&mut self, unfinished: bool) {
        let Some(g) = self.group.take() else { return };
        AWAITED.fetch_sub(1, Ordering::AcqRel);
        if unfinished {
            g.unfinished.store(true, Ordering::Release);
        }
        if g.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            if g.unfinished.load(Ordering::Acquire) {
                g.ack.nak();
            } else {
                g.ack.ack();
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.release(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counts {
        acks: AtomicUsize,
        naks: AtomicUsize,
    }

    struct Probe(Arc<Counts>);

    impl Ack for Probe {
        fn ack(&self) {
            self.0.acks.fetch_add(1, Ordering::SeqCst);
        }
        fn nak(&self) {
            self.0.naks.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn acks_once_when_every_share_is_finished() {
        let counts = Arc::new(Counts::default());
        let root = Completion::new(Box::new(Probe(Arc::clone(&counts))));
        let a = root.fork();
        let b = root.fork();
        root.finish();
        a.finish();
        assert_eq!(counts.acks.load(Ordering::SeqCst), 0);
        b.finish();
        assert_eq!(counts.acks.load(Ordering::SeqCst), 1);
        assert_eq!(counts.naks.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dropped_share_naks() {
        let counts = Arc::new(Counts::default());
        let root = Completion::new(Box::new(Probe(Arc::clone(&counts))));
        let a = root.fork();
        drop(a);
        root.finish();
        assert_eq!(counts.naks.load(Ordering::SeqCst), 1);
        assert_eq!(counts.acks.load(Ordering::SeqCst), 0);
    }
}
