//! Shard drivers: take accepted events off a shard queue, match each once against its broker's
//! compiled trigger index, and hand it to the matched triggers' delivery queues.
//!
//! One driver per shard, each a tokio task. A driver reads the routing [`Snapshot`] through an
//! `ArcSwap` once per run of events (no locks), matches with a reused scratch buffer (no
//! allocation), and waits when a trigger queue is full: that wait is the backpressure that
//! fills the shard queue and makes ingress answer 429. Before a queue is full, ingress refuses
//! the events of a backlogged trigger ([`BrokerRoute::backlogged`]), so that the drivers rarely
//! wait on one trigger while the others starve. A run is bounded (256 events) before
//! the driver yields, so one busy shard never starves the runtime; a run that empties the
//! queue goes back to waiting without a yield.
//!
//! What a driver does not do: deliver. See [`crate::dispatch`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::DeliveryOrder;
use triggerfish_core::event::{EventBatch, EventView};
use triggerfish_core::index::{MatchScratch, TriggerIndex};

use crate::dispatch::TriggerHandle;
use crate::ingress::http::IngressLimits;
use crate::metrics::{BrokerLabels, DropLabels, DropReason, Metrics};
use crate::store::memory::ShardQueue;
use crate::store::{BrokerKey, Envelope};

/// Events a driver handles before yielding to the runtime.
const RUN: usize = 256;

/// What the drivers route with: every broker's index and trigger handles. Swapped whole on
/// reload.
pub struct Snapshot {
    /// Brokers by `namespace/name`.
    pub brokers: HashMap<BrokerKey, Arc<BrokerRoute>>,
    /// Ingress limits.
    pub limits: IngressLimits,
    /// Authentication, event policies and rate limits of the ingress.
    pub gate: Arc<crate::auth::Gate>,
}

/// One broker's routing state.
pub struct BrokerRoute {
    /// `namespace/name`.
    pub key: BrokerKey,
    /// The compiled index; trigger id `i` is `triggers[i]`.
    pub index: TriggerIndex,
    /// Delivery handles of the triggers.
    pub triggers: Vec<Arc<TriggerHandle>>,
    /// Events that matched nothing.
    pub unmatched: Counter,
    /// Events dropped because the process stopped before they reached a trigger queue.
    pub dropped_shutdown: Counter,
    /// Backlogged triggers, process-wide ([`crate::dispatch::Backlog`]); `None` where the
    /// store holds backlogs itself (JetStream), and ingress refuses nothing for them.
    backlogged: Option<Arc<AtomicUsize>>,
}

/// An event that ingress refuses because a trigger it matches is backlogged.
#[derive(Debug, PartialEq, Eq)]
pub struct Backlogged<'a> {
    /// Its index in the request.
    pub index: usize,
    /// The first backlogged trigger it matches, `namespace/name`.
    pub trigger: &'a str,
}

impl Backlogged<'_> {
    /// What ingress answers for a request of `n` events of which `refused` are backlogged.
    pub fn summary(refused: &[Backlogged<'_>], n: usize) -> String {
        let first = refused.first().map_or("", |b| b.trigger);
        format!(
            "{} of {n} events match a trigger that is falling behind ({first}); nothing was accepted",
            refused.len()
        )
    }
}

impl std::fmt::Display for Backlogged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matches trigger {}, which is falling behind: retry later",
            self.trigger
        )
    }
}

impl BrokerRoute {
    /// Builds the routing state of a broker.
    pub fn new(
        key: BrokerKey,
        index: TriggerIndex,
        triggers: Vec<Arc<TriggerHandle>>,
        backlogged: Option<Arc<AtomicUsize>>,
        metrics: &Metrics,
    ) -> BrokerRoute {
        let broker = key.to_string();
        BrokerRoute {
            unmatched: metrics
                .unmatched
                .get_or_create(&BrokerLabels {
                    broker: broker.clone(),
                })
                .clone(),
            dropped_shutdown: metrics
                .dropped
                .get_or_create(&DropLabels {
                    broker,
                    reason: DropReason::Shutdown,
                })
                .clone(),
            key,
            index,
            triggers,
            backlogged,
        }
    }

    /// The events of `batch` that match a backlogged trigger. One atomic load while no
    /// trigger is backlogged; otherwise the batch is matched here as well as in its shard.
    pub fn backlogged(&self, batch: &EventBatch) -> Vec<Backlogged<'_>> {
        self.refusing(batch.iter(), None, |trigger, _| {
            trigger.backlog.is_backlogged()
        })
    }

    /// The first trigger whose queue is full for one of `events`, preferring `prefer`
    /// (`namespace/name`) where an event matches several: what [`crate::republish`] waits
    /// on. As cheap as [`BrokerRoute::backlogged`] while no trigger is backlogged (a full
    /// queue is backlogged).
    pub fn full_for<'e>(
        &self,
        events: impl IntoIterator<Item = EventView<'e>>,
        prefer: Option<&str>,
    ) -> Option<&str> {
        let full = self.refusing(events, prefer, |trigger, event| {
            trigger.backlog.is_full_for(event.wire_size())
        });
        full.iter()
            .find(|b| Some(b.trigger) == prefer)
            .or(full.first())
            .map(|b| b.trigger)
    }

    /// The events among `events` that match a trigger `refuses`, each with the first such
    /// trigger, or `prefer` (`namespace/name`) where it is one of them. Matches only while
    /// some trigger is backlogged: `refuses` must never hold for a trigger that is not.
    fn refusing<'e>(
        &self,
        events: impl IntoIterator<Item = EventView<'e>>,
        prefer: Option<&str>,
        refuses: impl Fn(&TriggerHandle, &EventView<'_>) -> bool,
    ) -> Vec<Backlogged<'_>> {
        let mut refused = Vec::new();
        match &self.backlogged {
            Some(count) if count.load(Ordering::Relaxed) > 0 => {}
            _ => return refused,
        }
        let mut scratch = MatchScratch::new();
        let mut matched = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            matched.clear();
            self.index.matches(&event, &mut scratch, &mut matched);
            let mut named = None;
            for trigger in matched
                .iter()
                .filter_map(|&id| self.triggers.get(id as usize))
            {
                if !refuses(trigger, &event) {
                    continue;
                }
                let key = trigger.plan.key.as_str();
                named = named.or(Some(key));
                if prefer == Some(key) {
                    named = Some(key);
                    break;
                }
            }
            if let Some(trigger) = named {
                refused.push(Backlogged { index, trigger });
            }
        }
        refused
    }
}

/// Runs one shard's driver until `stop` is cancelled and its queue is empty.
pub async fn run(
    queue: Arc<ShardQueue>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut scratch = MatchScratch::new();
    let mut matched = Vec::new();
    loop {
        let notified = queue.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if queue.is_empty() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let snap = snapshot.load_full();
        let mut routed = 0;
        while routed < RUN {
            let Some(envelope) = queue.pop() else { break };
            let size = envelope.event.view().wire_size();
            route(envelope, &snap, &metrics, &mut scratch, &mut matched).await;
            queue.release(size);
            routed += 1;
        }
        // Only a full run yields: a yield wakes an idle worker thread to look for work (a
        // futex call and two context switches), which an emptied queue does not need.
        if routed == RUN {
            tokio::task::yield_now().await;
        }
    }
}

/// Matches one event and queues it for every matched trigger.
pub async fn route(
    envelope: Envelope,
    snap: &Snapshot,
    metrics: &Metrics,
    scratch: &mut MatchScratch,
    matched: &mut Vec<u32>,
) {
    route_some(envelope, snap, metrics, scratch, matched, None).await;
}

/// Like [`route`], for only the triggers with delivery order `only` (the JetStream store
/// consumes ordered and unordered triggers separately).
pub async fn route_some(
    envelope: Envelope,
    snap: &Snapshot,
    metrics: &Metrics,
    scratch: &mut MatchScratch,
    matched: &mut Vec<u32>,
    only: Option<DeliveryOrder>,
) {
    let Some(broker) = snap.brokers.get(&envelope.broker) else {
        metrics
            .dropped
            .get_or_create(&DropLabels {
                broker: envelope.broker.to_string(),
                reason: DropReason::BrokerRemoved,
            })
            .inc();
        tracing::warn!(broker = %envelope.broker, id = envelope.event.view().id(), "event dropped: its broker was removed by a reload");
        envelope.completion.finish();
        return;
    };
    matched.clear();
    broker
        .index
        .matches(&envelope.event.view(), scratch, matched);
    // Counted once per event: by the only pass, or by the unordered one of the two.
    if matched.is_empty() && only != Some(DeliveryOrder::Ordered) {
        broker.unmatched.inc();
    }
    if let Some(order) = only {
        matched.retain(|&id| {
            broker
                .triggers
                .get(id as usize)
                .is_some_and(|t| t.plan.order == order)
        });
    }
    for &id in matched.iter() {
        let Some(trigger) = broker.triggers.get(id as usize) else {
            continue;
        };
        trigger.matches.inc();
        let share = envelope.completion.fork();
        if trigger
            .enqueue(
                envelope.event.clone(),
                envelope.ttl,
                envelope.accepted_at,
                share,
            )
            .await
            .is_err()
        {
            broker.dropped_shutdown.inc();
        }
    }
    envelope.completion.finish();
}
