//! The memory store: one bounded, lock-free queue per shard.
//!
//! An event goes to the shard its partition key hashes to (the `partitionkey` extension, else
//! `source`), so every event of one key passes through one queue, in order. Each queue is a
//! crossbeam `ArrayQueue` plus a budget of events and bytes; a batch is admitted only when every
//! shard it touches has room for its share, so a producer gets all-or-nothing 202 or 429.
//!
//! Like Knative's InMemoryChannel, what is queued here is lost if the process dies. Use the
//! JetStream store when that matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam::queue::ArrayQueue;
use smallvec::SmallVec;
use tokio::sync::Notify;
use triggerfish_core::event::{EventBatch, EventRef};

use super::{BrokerKey, Completion, Envelope, OfferError, event_ttl};

/// Limits of one shard queue.
#[derive(Clone, Copy, Debug)]
pub struct ShardLimits {
    /// Most events queued.
    pub events: usize,
    /// Most bytes queued (events' wire size).
    pub bytes: usize,
}

/// One shard's queue and budget.
pub struct ShardQueue {
    queue: ArrayQueue<Envelope>,
    items: AtomicUsize,
    bytes: AtomicUsize,
    limits: ShardLimits,
    notify: Notify,
}

impl ShardQueue {
    fn new(limits: ShardLimits) -> ShardQueue {
        ShardQueue {
            queue: ArrayQueue::new(limits.events.max(1)),
            items: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            limits,
            notify: Notify::new(),
        }
    }

    /// Reserves room for `items` events of `bytes` bytes in total.
    ///
    /// A queue holding no bytes takes any one request's share, over its byte budget if need
    /// be: the config check sizes the budget to hold a request of `maxRequestBytes` as
    /// received, but ingress may add to its events (the request's trace context becomes each
    /// event's extension), and a full queue's 429 promises that a retry fits.
    fn reserve(&self, items: usize, bytes: usize) -> bool {
        if self.items.fetch_add(items, Ordering::AcqRel) + items > self.limits.events {
            self.items.fetch_sub(items, Ordering::AcqRel);
            return false;
        }
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > self.limits.bytes {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.items.fetch_sub(items, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn unreserve(&self, items: usize, bytes: usize) {
        self.items.fetch_sub(items, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Takes the next event. Its budget is returned by [`ShardQueue::release`] once it has been
    /// handed on, so the budget covers events being matched too.
    pub fn pop(&self) -> Option<Envelope> {
        self.queue.pop()
    }

    /// Returns the budget of one event taken with [`ShardQueue::pop`].
    pub fn release(&self, bytes: usize) {
        self.unreserve(1, bytes);
    }

    /// Waits until an event may be queued. Register interest before checking the queue, so no
    /// wake-up is missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Events queued or being matched.
    pub fn depth(&self) -> usize {
        self.items.load(Ordering::Acquire)
    }
}

/// The shard queues of the process.
pub struct MemoryStore {
    shards: Vec<Arc<ShardQueue>>,
    hasher: ahash::RandomState,
}

impl MemoryStore {
    /// `shards` queues with the given limits each.
    pub fn new(shards: usize, limits: ShardLimits) -> MemoryStore {
        MemoryStore {
            shards: (0..shards.max(1))
                .map(|_| Arc::new(ShardQueue::new(limits)))
                .collect(),
            // Fixed seeds: the shard of a key is stable across restarts, which keeps logs and
            // metrics comparable.
            hasher: ahash::RandomState::with_seeds(
                0x7472_6967,
                0x6765_7266,
                0x6973_6821,
                0x5348_4152,
            ),
        }
    }

    /// The shard queues, for the drivers.
    pub fn shards(&self) -> &[Arc<ShardQueue>] {
        &self.shards
    }

    /// The shard an event belongs to.
    pub fn shard_of(&self, event: &EventRef) -> usize {
        let hash = event.view().with_partition_key(|k| self.hasher.hash_one(k));
        (hash % self.shards.len() as u64) as usize
    }

    /// Admits every event of `batch` or none: see [`super::Store::publish`].
    pub fn try_offer(
        &self,
        broker: &BrokerKey,
        batch: Arc<EventBatch>,
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        let n = batch.len();
        self.offer_indexed(
            broker,
            n,
            |i| EventRef::new(Arc::clone(&batch), i),
            ttl,
            |_| Completion::none(),
        )
    }

    /// Admits every event of `events` or none, sharing their batches (no copy).
    pub fn try_offer_events(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        self.offer_indexed(
            broker,
            events.len(),
            |i| events.get(i).cloned(),
            ttl,
            |_| Completion::none(),
        )
    }

    /// Like [`MemoryStore::try_offer_events`], with a completion for each admitted event, made
    /// by `completion(index)` only once the events are admitted: it hears when every trigger
    /// is done with the event.
    pub fn try_offer_tracked(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        ttl: Option<u8>,
        completion: impl FnMut(usize) -> Completion,
    ) -> Result<(), OfferError> {
        self.offer_indexed(
            broker,
            events.len(),
            |i| events.get(i).cloned(),
            ttl,
            completion,
        )
    }

    fn offer_indexed(
        &self,
        broker: &BrokerKey,
        count: usize,
        event_at: impl Fn(usize) -> Option<EventRef>,
        ttl: Option<u8>,
        mut completion: impl FnMut(usize) -> Completion,
    ) -> Result<(), OfferError> {
        let n = self.shards.len();
        let mut shares: SmallVec<[(usize, usize); 16]> = SmallVec::from_elem((0, 0), n);
        let mut placed: SmallVec<[(EventRef, u16, usize); 64]> = SmallVec::with_capacity(count);
        for i in 0..count {
            let Some(event) = event_at(i) else { continue };
            let view = event.view();
            let hash = view.with_partition_key(|k| self.hasher.hash_one(k));
            let shard = (hash % n as u64) as usize;
            shares[shard].0 += 1;
            shares[shard].1 += view.wire_size();
            placed.push((event, shard as u16, i));
        }
        for (i, &(items, bytes)) in shares.iter().enumerate() {
            if items > 0 && !self.shards[i].reserve(items, bytes) {
                for (j, &(items, bytes)) in shares.iter().enumerate().take(i) {
                    if items > 0 {
                        self.shards[j].unreserve(items, bytes);
                    }
                }
                return Err(OfferError::Full);
            }
        }
        let accepted_at = Instant::now();
        for (event, shard, index) in placed {
            let ttl = ttl.unwrap_or_else(|| event_ttl(&event));
            let envelope = Envelope {
                event,
                broker: Arc::clone(broker),
                ttl,
                accepted_at,
                completion: completion(index),
            };
            let queue = &self.shards[shard as usize];
            // Room was reserved above, and the queue's capacity equals the event budget.
            if let Err(rejected) = queue.queue.push(envelope) {
                // Unreachable while reservations hold; keep the event rather than lose it.
                tracing::error!(shard, "shard queue full despite a reservation; waiting");
                let mut envelope = rejected;
                while let Err(back) = queue.queue.push(envelope) {
                    envelope = back;
                    std::hint::spin_loop();
                }
            }
        }
        for (i, &(items, _)) in shares.iter().enumerate() {
            if items > 0 {
                self.shards[i].notify.notify_one();
            }
        }
        Ok(())
    }

    /// Events queued or being matched, over all shards.
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.depth()).sum()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use triggerfish_core::event::{DecodeLimits, decode_batched};

    use super::*;

    fn batch(n: usize, keys: usize) -> Arc<EventBatch> {
        let events: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"specversion":"1.0","id":"{i}","source":"/s","type":"t","partitionkey":"k{}"}}"#, i % keys))
            .collect();
        let body = Bytes::from(format!("[{}]", events.join(",")));
        Arc::new(
            decode_batched(body, &DecodeLimits::default())
                .unwrap()
                .batch,
        )
    }

    #[test]
    fn admission_is_all_or_nothing() {
        let store = MemoryStore::new(
            4,
            ShardLimits {
                events: 10,
                bytes: 1 << 20,
            },
        );
        let broker: BrokerKey = Arc::from("default/default");
        // One key: every event lands on one shard, which holds 10.
        store.try_offer(&broker, batch(8, 1), None).unwrap();
        assert_eq!(
            store.try_offer(&broker, batch(3, 1), None),
            Err(OfferError::Full)
        );
        assert_eq!(store.queued(), 8, "the refused batch left nothing behind");
        store.try_offer(&broker, batch(2, 1), None).unwrap();
        assert_eq!(store.queued(), 10);
    }

    #[test]
    fn one_key_keeps_its_order_on_one_shard() {
        let store = MemoryStore::new(
            4,
            ShardLimits {
                events: 100,
                bytes: 1 << 20,
            },
        );
        let broker: BrokerKey = Arc::from("default/default");
        store.try_offer(&broker, batch(40, 3), None).unwrap();
        for shard in store.shards() {
            let mut last: std::collections::HashMap<String, u32> = Default::default();
            while let Some(e) = shard.pop() {
                let view = e.event.view();
                let key = view.extension("partitionkey").unwrap().to_string();
                let id: u32 = view.id().parse().unwrap();
                if let Some(prev) = last.insert(key, id) {
                    assert!(prev < id);
                }
            }
        }
    }

    #[test]
    fn byte_budget_applies() {
        let b = batch(4, 1);
        let size: usize = b.iter().map(|v| v.wire_size()).sum();
        let store = MemoryStore::new(
            1,
            ShardLimits {
                events: 100,
                bytes: size - 1,
            },
        );
        let broker: BrokerKey = Arc::from("default/default");
        store.try_offer(&broker, batch(1, 1), None).unwrap();
        assert_eq!(
            store.try_offer(&broker, b.clone(), None),
            Err(OfferError::Full)
        );
        // An empty queue takes a batch over its budget: a 429 must mean "it will fit".
        let idle = MemoryStore::new(
            1,
            ShardLimits {
                events: 100,
                bytes: size - 1,
            },
        );
        idle.try_offer(&broker, b, None).unwrap();
        assert_eq!(
            idle.try_offer(&broker, batch(1, 1), None),
            Err(OfferError::Full)
        );
    }
}
