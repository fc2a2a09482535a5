//! Per-trigger delivery: the bounded queue in front of each trigger, its dispatcher task, and
//! Knative's delivery semantics (retries, backoff, timeout, `Retry-After`, dead-lettering,
//! replies).
//!
//! Each trigger owns a queue bounded in events and in bytes, by two semaphores whose permits
//! travel with each job: a place in the queue, given back when the job's delivery starts, and
//! its bytes, given back when the delivery ends. A job the dispatcher has taken off the channel
//! but not started (waiting for a delivery slot, or behind its partition key) still holds its
//! place, so it counts as queued. Shard drivers wait when the queue is full, which pushes back
//! through the shard queues to ingress (429).
//!
//! Before it is full, a queue that fills faster than it drains is *backlogged* ([`Backlog`]):
//! from the moment less than a quarter of its places or bytes are free until half of both are
//! free again. HTTP and QUIC ingress refuse (429) the requests carrying an event that a
//! backlogged trigger matches, so that the shard drivers, which every trigger of a shard
//! shares, do not end up waiting on one slow subscriber while the others starve. The queue's
//! last quarter takes the events accepted before the refusals began.
//!
//! - **Unordered** triggers deliver up to `maxInFlight` events at once. When their subscriber
//!   takes batches (HTTP with `spec.batch`, QUIC), they deliver batch by batch instead
//!   (`batched.rs`).
//! - **Ordered** triggers deliver one event at a time per partition key (the `partitionkey`
//!   extension, else `source`), in arrival order, retries included; different keys proceed in
//!   parallel, up to `maxInFlight` keys.
//! - **Replies** re-enter the broker through [`crate::republish`], which waits a bounded time
//!   for room (a reply loop would otherwise stall its shard); a reply the broker refuses
//!   dead-letters the event it answers. A reply without a `traceparent` of its own continues
//!   the trace of the event it answers. A response that says it is a CloudEvent and is not
//!   one fails its attempt with 502, as in Knative ([`TriggerContext::take_reply`]).
//!
//! The decisions themselves (what to retry, how long to wait) come from
//! `triggerfish_core::delivery`; this module only drives them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use triggerfish_core::config::{DeliveryFormat, DeliveryOrder};
use triggerfish_core::delivery::{
    Cause, DeadLetter, Decision, DeliveryPolicy, ErrorSource, Failure, GiveUp,
};
use triggerfish_core::event::trace::TraceContext;
use triggerfish_core::event::{AttrValue, DecodeLimits, EncodeOptions, EventBatch, EventRef};

use crate::metrics::{
    AttemptLabels, AttemptOutcome, DropLabels, DropReason, FailureLabels, Metrics, TriggerLabels,
};
use crate::plan::TriggerPlan;
use crate::sinks::{Attempt, Request, Sink};

mod batched;
use crate::republish::{Refused, Republisher};
use crate::store::{BrokerKey, Completion, TTL_EXTENSION, arrival_now};

/// Per-attempt timeout when the delivery spec sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One matched event waiting for delivery by one trigger.
pub struct Job {
    /// The event.
    pub event: EventRef,
    /// Remaining reply hops.
    pub ttl: u8,
    /// When ingress accepted the event.
    pub accepted_at: Instant,
    /// This trigger's share of the event's completion.
    pub completion: Completion,
    /// The job's place in the trigger's queue, given back when its delivery starts.
    queued: Option<OwnedSemaphorePermit>,
    /// The event's bytes in the trigger's byte budget, returned when the delivery ends.
    _budget: OwnedSemaphorePermit,
}

/// Limits of one trigger queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most events queued.
    pub events: usize,
    /// Most bytes queued or in flight.
    pub bytes: usize,
}

/// Whether a trigger's queue is filling faster than it drains, for ingress to refuse the
/// events it matches (see the module docs). Shared by the trigger's handle and its deliveries.
///
/// It is set after an event is queued and cleared after a delivery starts or ends: while
/// nothing changes, a relaxed load (and for clearing a fence) each. Every backlogged trigger counts once in a process-wide
/// count, so that ingress looks no further while it is 0.
pub struct Backlog {
    backlogged: AtomicBool,
    /// Places in the queue: `events` permits.
    places: Arc<Semaphore>,
    /// Bytes queued or in flight: `bytes` permits.
    budget: Arc<Semaphore>,
    events: usize,
    bytes: usize,
    /// Backlogged triggers, process-wide.
    count: Arc<AtomicUsize>,
    /// Times this queue became backlogged.
    episodes: Counter,
    /// One warning a minute at most.
    warnings: LogLimit,
    trigger: String,
}

/// How often a recurring warning (a backlogged trigger, refused replies, a TTL used up) is
/// logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Backlog {
    /// Events waiting in the queue (not counting those being delivered): in the channel, or
    /// taken off it by the dispatcher and not started yet.
    pub fn depth(&self) -> usize {
        self.events.saturating_sub(self.places.available_permits())
    }

    fn new(
        limits: QueueLimits,
        count: Arc<AtomicUsize>,
        episodes: Counter,
        trigger: String,
    ) -> Backlog {
        let events = limits.events.min(Semaphore::MAX_PERMITS);
        let bytes = limits.bytes.min(Semaphore::MAX_PERMITS);
        Backlog {
            backlogged: AtomicBool::new(false),
            places: Arc::new(Semaphore::new(events)),
            budget: Arc::new(Semaphore::new(bytes)),
            events,
            bytes,
            count,
            episodes,
            warnings: LogLimit::new(WARN_EVERY),
            trigger,
        }
    }

    /// Whether ingress should refuse the events this trigger matches.
    pub fn is_backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Relaxed)
    }

    /// Whether the queue has no place, or too few bytes free, for an event of `bytes` now. A
    /// full queue is backlogged too (it was marked when it filled).
    pub fn is_full_for(&self, bytes: usize) -> bool {
        self.places.available_permits() == 0
            || self.budget.available_permits() < bytes.clamp(1, self.bytes)
    }

    /// Less than a quarter of the places or of the bytes is free.
    fn filling(&self) -> bool {
        self.places.available_permits() * 4 < self.events
            || self.budget.available_permits() * 4 < self.bytes
    }

    /// At least half of the places and of the bytes are free.
    fn drained(&self) -> bool {
        self.places.available_permits() * 2 >= self.events
            && self.budget.available_permits() * 2 >= self.bytes
    }

    /// After an event was queued.
    fn note_queued(&self) {
        if self.is_backlogged() || !self.filling() {
            return;
        }
        if self
            .backlogged
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.episodes.inc();
            self.warn();
            // Deliveries that ended between `filling` and the flag found no flag to clear; the
            // fences in `relieve` make either them or this call see the other's change.
            self.relieve();
        }
    }

    /// After a delivery started (its place is free) or ended (its bytes are free).
    fn relieve(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.is_backlogged() || !self.drained() {
            return;
        }
        if self
            .backlogged
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.count.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(trigger = %self.trigger, "trigger caught up: ingress accepts the events it matches again");
        }
    }

    /// Logs the backlog, unless it was logged within [`WARN_EVERY`]: a trigger at its
    /// limit is backlogged many times a second (`triggerfish_trigger_backlogs_total` counts
    /// each time).
    fn warn(&self) {
        if self.warnings.allow() {
            tracing::warn!(
                trigger = %self.trigger,
                queued = self.events.saturating_sub(self.places.available_permits()),
                times = self.episodes.get(),
                "trigger is falling behind: ingress refuses the events it matches (429) until its queue is half empty; logged once a minute at most, triggerfish_trigger_backlogs_total counts every time"
            );
        }
    }
}

/// Lets a log line through at most once per period, for conditions that can recur many times
/// a second (a metric counts every time).
struct LogLimit {
    every: Duration,
    made: Instant,
    /// When a line last went through, in ms since `made`; `u64::MAX`: never.
    last: std::sync::atomic::AtomicU64,
}

impl LogLimit {
    fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            made: Instant::now(),
            last: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// Whether to log now; when it answers yes, the next yes is a period away.
    fn allow(&self) -> bool {
        let now = u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if last != u64::MAX && now.saturating_sub(last) < every {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        if *self.backlogged.get_mut() {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The sending side of a trigger: what shard drivers hold in the routing snapshot.
pub struct TriggerHandle {
    /// The plan this trigger was started from.
    pub plan: Arc<TriggerPlan>,
    tx: mpsc::Sender<Job>,
    /// The queue's places and bytes, and whether it is backlogged.
    pub backlog: Arc<Backlog>,
    limits: QueueLimits,
    /// Counts matches.
    pub matches: Counter,
    /// Cancelled once the dispatcher has stopped (its queue closed, every event taken) and its
    /// last delivery has finished: what an ordered successor waits for.
    pub drained: CancellationToken,
}

/// The trigger's dispatcher stopped (only during shutdown).
#[derive(Debug, thiserror::Error)]
#[error("trigger dispatcher stopped")]
pub struct Closed;

/// Why [`TriggerHandle::try_enqueue`] queued nothing.
pub enum TryEnqueueError {
    /// The queue has no room now: here are the event and its completion back; wait with
    /// [`TriggerHandle::enqueue`].
    Full(EventRef, Completion),
    /// The dispatcher stopped (only during shutdown).
    Closed,
}

/// Why [`TriggerHandle::enqueue_all`] queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueAllError {
    /// The dispatcher stopped (only during shutdown).
    #[error("trigger dispatcher stopped")]
    Closed,
    /// The events together exceed the queue's limits, so they can never be queued at once.
    #[error("the events exceed the delivery queue's limits")]
    TooLarge,
}

impl TriggerHandle {
    /// Queues an event for delivery, waiting while the trigger's queue is full.
    pub async fn enqueue(
        &self,
        event: EventRef,
        ttl: u8,
        accepted_at: Instant,
        completion: Completion,
    ) -> Result<(), Closed> {
        let place = Arc::clone(&self.backlog.places)
            .acquire_owned()
            .await
            .map_err(|_| Closed)?;
        let size = event.view().wire_size().clamp(1, self.limits.bytes) as u32;
        let budget = Arc::clone(&self.backlog.budget)
            .acquire_many_owned(size)
            .await
            .map_err(|_| Closed)?;
        let job = Job {
            event,
            ttl,
            accepted_at,
            completion,
            queued: Some(place),
            _budget: budget,
        };
        self.tx.send(job).await.map_err(|_| Closed)?;
        self.backlog.note_queued();
        Ok(())
    }

    /// Queues an event if the trigger's queue has room now, without waiting: the scheduler
    /// hands its ticks over this way, so a burst of ticks costs no task per tick. On a full
    /// queue the event and completion come back, to be queued with [`TriggerHandle::enqueue`].
    pub fn try_enqueue(
        &self,
        event: EventRef,
        ttl: u8,
        accepted_at: Instant,
        completion: Completion,
    ) -> Result<(), TryEnqueueError> {
        use tokio::sync::TryAcquireError;
        let refused = |e: TryAcquireError, event, completion| match e {
            TryAcquireError::Closed => TryEnqueueError::Closed,
            TryAcquireError::NoPermits => TryEnqueueError::Full(event, completion),
        };
        let place = match Arc::clone(&self.backlog.places).try_acquire_owned() {
            Ok(p) => p,
            Err(e) => return Err(refused(e, event, completion)),
        };
        let size = event.view().wire_size().clamp(1, self.limits.bytes) as u32;
        let budget = match Arc::clone(&self.backlog.budget).try_acquire_many_owned(size) {
            Ok(b) => b,
            Err(e) => return Err(refused(e, event, completion)),
        };
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                return Err(TryEnqueueError::Full(event, completion));
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(TryEnqueueError::Closed),
        };
        permit.send(Job {
            event,
            ttl,
            accepted_at,
            completion,
            queued: Some(place),
            _budget: budget,
        });
        self.backlog.note_queued();
        Ok(())
    }

    /// Queues all of `events` or none: waits until the queue has room for every one of them
    /// (events and bytes), then queues them together. Sources use it so that a request is
    /// accepted only once all of its events are; cancelling the future queues nothing.
    pub async fn enqueue_all(
        &self,
        events: Vec<EventRef>,
        ttl: u8,
        accepted_at: Instant,
    ) -> Result<(), EnqueueAllError> {
        self.enqueue_all_with(events, ttl, accepted_at, |_| Completion::none())
            .await
    }

    /// Like [`TriggerHandle::enqueue_all`], with a completion for each event, made by
    /// `completion(index)` once all of them are certain to be queued: Kafka sources learn
    /// this way when each event's delivery has ended.
    pub async fn enqueue_all_with(
        &self,
        events: Vec<EventRef>,
        ttl: u8,
        accepted_at: Instant,
        mut completion: impl FnMut(usize) -> Completion,
    ) -> Result<(), EnqueueAllError> {
        let sizes: Vec<usize> = events
            .iter()
            .map(|e| e.view().wire_size().clamp(1, self.limits.bytes))
            .collect();
        let total: usize = sizes.iter().sum();
        if total > self.limits.bytes.min(Semaphore::MAX_PERMITS)
            || events.len() > self.limits.events.min(Semaphore::MAX_PERMITS)
        {
            return Err(EnqueueAllError::TooLarge);
        }
        let too_large = |_| EnqueueAllError::TooLarge;
        let mut places = Arc::clone(&self.backlog.places)
            .acquire_many_owned(u32::try_from(events.len()).map_err(too_large)?)
            .await
            .map_err(|_| EnqueueAllError::Closed)?;
        let mut budget = Arc::clone(&self.backlog.budget)
            .acquire_many_owned(u32::try_from(total).map_err(too_large)?)
            .await
            .map_err(|_| EnqueueAllError::Closed)?;
        let permits = self
            .tx
            .reserve_many(events.len())
            .await
            .map_err(|_| EnqueueAllError::Closed)?;
        for (i, ((event, size), permit)) in events.into_iter().zip(sizes).zip(permits).enumerate() {
            let (Some(share), Some(place)) = (budget.split(size), places.split(1)) else {
                return Err(EnqueueAllError::Closed);
            };
            permit.send(Job {
                event,
                ttl,
                accepted_at,
                completion: completion(i),
                queued: Some(place),
                _budget: share,
            });
        }
        self.backlog.note_queued();
        Ok(())
    }

    /// Events waiting in the queue (not counting those being delivered): in the channel, or
    /// taken off it by the dispatcher and not started yet.
    pub fn depth(&self) -> usize {
        self.backlog.depth()
    }
}

/// Everything a delivery of one trigger needs.
pub struct TriggerContext {
    /// Labels, for logs.
    pub label: TriggerLabels,
    /// Where events go.
    pub sink: Sink,
    /// Where undeliverable events go.
    pub dead_letter: Option<Sink>,
    /// When to retry.
    pub policy: DeliveryPolicy,
    /// Binary or structured.
    pub format: DeliveryFormat,
    /// The broker replies go back to.
    pub broker: BrokerKey,
    /// Publishes replies, with a bounded wait for room.
    pub republisher: Republisher,
    /// One warning a minute at most about refused replies.
    refusals_logged: LogLimit,
    /// One warning a minute at most about events dropped at `knativebrokerttl` 0.
    ttl_logged: LogLimit,
    /// One warning a minute at most about replies that are not valid CloudEvents.
    invalid_replies_logged: LogLimit,
    /// Limits for decoding replies.
    pub reply_limits: DecodeLimits,
    /// Tracks delivery tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Deliveries in flight, over all triggers.
    pub in_flight: Arc<AtomicUsize>,
    /// Whether replies go back into the broker (triggers yes; sources no).
    pub replies: bool,
    /// The trigger's delivery rate limit (`spec.rateLimit`): attempts wait for a token.
    rate: Option<governor::DefaultDirectRateLimiter>,
    /// The queue's room, freed as deliveries start and end.
    backlog: Arc<Backlog>,
    counters: Counters,
    /// Cancels [`TriggerHandle::drained`] when the last holder of the context (the dispatcher
    /// and its delivery tasks) is gone.
    _drained: DropGuard,
}

struct Counters {
    /// The trigger's name, for the labels of [`Counters::failures`].
    trigger: String,
    success: Counter,
    retryable: Counter,
    permanent: Counter,
    retries: Counter,
    dead_lettered: Counter,
    replies: Counter,
    replies_refused: Counter,
    no_dls: Counter,
    dls_failed: Counter,
    ttl_exhausted: Counter,
    latency: Histogram,
    /// Failed attempts by cause: a label created on the first failure of each cause.
    failures: Family<FailureLabels, Counter>,
}

impl Counters {
    fn new(metrics: &Metrics, label: &TriggerLabels) -> Counters {
        let attempt = |outcome| {
            metrics
                .attempts
                .get_or_create(&AttemptLabels {
                    trigger: label.trigger.clone(),
                    outcome,
                })
                .clone()
        };
        let dropped = |reason| {
            metrics
                .dropped
                .get_or_create(&DropLabels {
                    broker: label.broker.clone(),
                    reason,
                })
                .clone()
        };
        Counters {
            trigger: label.trigger.clone(),
            success: attempt(AttemptOutcome::Success),
            retryable: attempt(AttemptOutcome::Retryable),
            permanent: attempt(AttemptOutcome::Permanent),
            retries: metrics.retries.get_or_create(label).clone(),
            dead_lettered: metrics.dead_lettered.get_or_create(label).clone(),
            replies: metrics.replies.get_or_create(label).clone(),
            replies_refused: metrics.replies_refused.get_or_create(label).clone(),
            no_dls: dropped(DropReason::NoDeadLetterSink),
            dls_failed: dropped(DropReason::DeadLetterFailed),
            ttl_exhausted: dropped(DropReason::TtlExhausted),
            latency: metrics.delivery_latency.get_or_create(label).clone(),
            failures: metrics.failures.clone(),
        }
    }

    /// Counts a failed attempt: retryable or permanent, and by its cause.
    fn failed(&self, failure: &Failure) {
        if failure.retryable {
            self.retryable.inc();
        } else {
            self.permanent.inc();
        }
        self.failures
            .get_or_create(&FailureLabels {
                trigger: self.trigger.clone(),
                cause: failure.cause.label().into_owned(),
            })
            .inc();
    }
}

/// Starts a trigger's dispatcher and returns its handle.
///
/// `after` is the [`TriggerHandle::drained`] of the dispatcher this one replaces (a reload
/// changed the trigger's delivery). An ordered trigger delivers nothing before it is
/// cancelled, so that each key's events before the reload are delivered (or dead-lettered)
/// before those after it; the new events wait in the queue meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn start(
    plan: Arc<TriggerPlan>,
    after: Option<CancellationToken>,
    sink: Sink,
    dead_letter: Option<Sink>,
    republisher: Republisher,
    reply_limits: DecodeLimits,
    limits: QueueLimits,
    metrics: &Metrics,
    tracker: TaskTracker,
    in_flight: Arc<AtomicUsize>,
    backlogged: Arc<AtomicUsize>,
) -> TriggerHandle {
    let label = TriggerLabels::of(&plan);
    let (policy, format) = match &plan.delivery {
        Some(d) => (d.policy.clone(), d.format),
        None => (DeliveryPolicy::default(), DeliveryFormat::default()),
    };
    let backlog = Arc::new(Backlog::new(
        limits,
        backlogged,
        metrics.backlogs.get_or_create(&label).clone(),
        plan.key.clone(),
    ));
    let drained = CancellationToken::new();
    let ctx = Arc::new(TriggerContext {
        _drained: drained.clone().drop_guard(),
        backlog: Arc::clone(&backlog),
        counters: Counters::new(metrics, &label),
        label: label.clone(),
        sink,
        dead_letter,
        policy,
        format,
        broker: Arc::from(plan.broker.as_str()),
        republisher,
        refusals_logged: LogLimit::new(WARN_EVERY),
        ttl_logged: LogLimit::new(WARN_EVERY),
        invalid_replies_logged: LogLimit::new(WARN_EVERY),
        reply_limits,
        tracker: tracker.clone(),
        in_flight,
        replies: plan.replies,
        rate: plan.rate_limit.map(|r| {
            governor::RateLimiter::direct(
                governor::Quota::per_second(r.events_per_second)
                    .allow_burst(r.burst.unwrap_or(r.events_per_second)),
            )
        }),
    });
    let (tx, rx) = mpsc::channel(limits.events.max(1));
    let max_in_flight = plan.max_in_flight.get() as usize;
    match (plan.order, ctx.sink.batched()) {
        (DeliveryOrder::Ordered, _) => tracker.spawn(run_ordered(rx, ctx, max_in_flight, after)),
        (_, Some((sink, spec))) => tracker.spawn(batched::run(rx, ctx, sink, spec)),
        _ => tracker.spawn(run_unordered(rx, ctx, max_in_flight)),
    };
    TriggerHandle {
        matches: metrics.matches.get_or_create(&label).clone(),
        plan,
        tx,
        backlog,
        limits,
        drained,
    }
}

async fn run_unordered(
    mut rx: mpsc::Receiver<Job>,
    ctx: Arc<TriggerContext>,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    while let Some(job) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let task_ctx = Arc::clone(&ctx);
        ctx.tracker.spawn(async move {
            deliver(&task_ctx, job).await;
            drop(slot);
        });
    }
}

async fn run_ordered(
    mut rx: mpsc::Receiver<Job>,
    ctx: Arc<TriggerContext>,
    max_in_flight: usize,
    after: Option<CancellationToken>,
) {
    if let Some(after) = after.filter(|a| !a.is_cancelled()) {
        tracing::info!(trigger = %ctx.label.trigger,
            "ordered trigger changed: its new delivery waits until the previous one has delivered or dead-lettered the events it holds");
        after.cancelled().await;
        tracing::debug!(trigger = %ctx.label.trigger, "previous delivery drained; delivering");
    }
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    // Keys with a delivery in flight, and the events of each waiting behind it.
    let mut waiting: HashMap<u64, VecDeque<Job>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::channel::<u64>(max_in_flight.max(1));
    let mut open = true;
    loop {
        tokio::select! {
            Some(key) = done_rx.recv() => {
                let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                match next {
                    Some(job) => spawn_keyed(&ctx, job, key, done_tx.clone()),
                    None => {
                        waiting.remove(&key);
                    }
                }
            }
            job = rx.recv(), if open && waiting.len() < max_in_flight => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let key = job.event.view().with_partition_key(|k| hasher.hash_one(k));
                match waiting.get_mut(&key) {
                    Some(queue) => queue.push_back(job),
                    None => {
                        waiting.insert(key, VecDeque::new());
                        spawn_keyed(&ctx, job, key, done_tx.clone());
                    }
                }
            }
            else => break,
        }
        if !open && waiting.is_empty() {
            break;
        }
    }
}

fn spawn_keyed(ctx: &Arc<TriggerContext>, job: Job, key: u64, done: mpsc::Sender<u64>) {
    let task_ctx = Arc::clone(ctx);
    ctx.tracker.spawn(async move {
        deliver(&task_ctx, job).await;
        // The dispatcher outlives its deliveries, except at shutdown, where nobody waits.
        let _ = done.send(key).await;
    });
}

/// A reply continues the trace of the events it answers, when they share one: its events
/// without a `traceparent` of their own take that context ([`TraceContext`]), within the
/// `limits` the reply was decoded under.
fn continue_trace<'e>(
    batch: EventBatch,
    answered: impl IntoIterator<Item = &'e EventRef>,
    limits: &DecodeLimits,
) -> EventBatch {
    match TraceContext::shared(answered.into_iter().map(EventRef::view)) {
        Some(context) => batch.with_trace_context(&context, limits),
        None => batch,
    }
}

/// Delivers one job with retries, then dead-letters, drops or feeds back its reply.
async fn deliver(ctx: &TriggerContext, mut job: Job) {
    ctx.in_flight.fetch_add(1, Ordering::AcqRel);
    let _in_flight = InFlight(&ctx.in_flight, 1);
    // Counted in flight first, so that it is never counted nowhere (see `Router::undelivered`).
    drop(job.queued.take());
    ctx.backlog.relieve();
    let view = job.event.view();
    let opts = EncodeOptions {
        skip: &[TTL_EXTENSION],
        add: &[],
    };
    let req = ctx.request(job.ttl);
    let (attempt, reply, decision) = attempts(ctx, false, &ctx.sink, &job.event, &opts, &req).await;
    match decision {
        Some(Decision::Succeeded) => {
            ctx.counters
                .latency
                .observe(job.accepted_at.elapsed().as_secs_f64());
            if let Some(reply) = reply {
                // Boxed: the wait for room makes the future large, and every delivery task
                // would carry it, replies or not.
                Box::pin(ctx.reply_or_dead_letter(&job.event, *reply, job.ttl)).await;
            }
        }
        // Boxed, as the reply: a failure path, kept out of every delivery task's future.
        Some(Decision::DeadLetter(dl)) => {
            Box::pin(ctx.dead_letter(&job.event, &attempt, dl, job.ttl)).await;
        }
        Some(Decision::Retry { .. }) | None => {
            ctx.counters.ttl_exhausted.inc();
            if ctx.ttl_logged.allow() {
                tracing::warn!(trigger = %ctx.label.trigger, id = view.id(),
                    "event dropped: knativebrokerttl exhausted; logged once a minute at most, triggerfish_delivery_dropped_total{{reason=\"ttl_exhausted\"}} counts every time");
            }
        }
    }
    job.completion.finish();
    drop(job._budget);
    ctx.backlog.relieve();
}

/// Counts a delivery's events in flight until dropped (also when shutdown cancels it).
struct InFlight<'a>(&'a AtomicUsize, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// Attempts until the policy stops; returns the last attempt, its reply (to the trigger's
/// broker; never for a dead letter) and the final decision (`None` when a forward to another
/// broker found the TTL used up).
async fn attempts(
    ctx: &TriggerContext,
    dead_letter: bool,
    sink: &Sink,
    event: &EventRef,
    opts: &EncodeOptions<'_>,
    req: &Request,
) -> (Attempt, Option<Box<EventBatch>>, Option<Decision>) {
    let view = event.view();
    let mut number = 1;
    loop {
        if !dead_letter {
            ctx.wait_for_rate(1).await;
        }
        let attempt = sink.send(event, opts, req).await;
        if matches!(attempt, Attempt::TtlExhausted) {
            return (attempt, None, None);
        }
        let (attempt, reply) = if dead_letter {
            (attempt.take_reply().0, None)
        } else {
            ctx.take_reply(attempt)
        };
        let decision = ctx.policy.next_attempt(
            number,
            &attempt.outcome(),
            SystemTime::now(),
            fastrand::u64(..),
        );
        match decision {
            Decision::Succeeded => {
                if !dead_letter {
                    ctx.counters.success.inc();
                }
                return (attempt, reply, Some(decision));
            }
            Decision::Retry {
                after,
                next_attempt,
                failure,
            } => {
                if !dead_letter {
                    ctx.counters.failed(&failure);
                    ctx.counters.retries.inc();
                }
                tracing::debug!(trigger = %ctx.label.trigger, destination = %sink.describe(), id = view.id(),
                    attempt = number, cause = ?failure.cause, retry_in = ?after, "delivery attempt failed; retrying");
                tokio::time::sleep(after).await;
                number = next_attempt;
            }
            Decision::DeadLetter(dl) => {
                // A dead letter's own failures are counted by the caller, as dead-lettered
                // or dropped.
                if !dead_letter {
                    ctx.counters.failed(&dl.failure);
                }
                return (attempt, None, Some(decision));
            }
        }
    }
}

impl TriggerContext {
    /// Splits a subscriber's reply off its `attempt`. Without replies (a source's delivery) the
    /// reply is dropped unread. A reply that is not a valid CloudEvent fails the attempt
    /// instead ([`Attempt::invalid_reply`]), as Knative's broker fails it.
    fn take_reply(&self, attempt: Attempt) -> (Attempt, Option<Box<EventBatch>>) {
        let (attempt, reply) = attempt.take_reply();
        match reply {
            Some(reply) if self.replies => match *reply {
                Ok(batch) => (attempt, Some(Box::new(batch))),
                Err(why) => {
                    if self.invalid_replies_logged.allow() {
                        tracing::warn!(trigger = %self.label.trigger, destination = %self.sink.describe(), error = %why,
                            "the subscriber's reply is not a valid CloudEvent: the attempt failed (502), and is retried or dead-lettered; logged once a minute at most");
                    }
                    (Attempt::invalid_reply(&why), None)
                }
            },
            _ => (attempt, None),
        }
    }

    /// Waits until the trigger's rate limit allows an attempt at `events` events (retries
    /// count too: they load the subscriber like first attempts). More events than the limit's
    /// burst take it in bursts.
    async fn wait_for_rate(&self, events: usize) {
        use governor::clock::Clock;
        let Some(limiter) = &self.rate else { return };
        let mut left = u32::try_from(events).unwrap_or(u32::MAX);
        let mut burst = left;
        while let Some(n) = std::num::NonZeroU32::new(left.min(burst)) {
            match limiter.check_n(n) {
                Ok(Ok(())) => left -= n.get(),
                Ok(Err(not_until)) => {
                    let now = governor::clock::DefaultClock::default().now();
                    tokio::time::sleep(not_until.wait_time_from(now)).await;
                }
                Err(governor::InsufficientCapacity(most)) => burst = most.max(1),
            }
        }
    }

    fn request(&self, ttl: u8) -> Request {
        Request {
            format: self.format,
            timeout: self.policy.timeout().unwrap_or(DEFAULT_TIMEOUT),
            reply_limits: self.reply_limits,
            ttl,
            wants_reply: self.replies,
            broker: Arc::clone(&self.broker),
        }
    }

    /// Feeds a delivered event's reply back into its broker. `Err` when the broker refused it
    /// ([`Republisher::publish`], waiting up to the trigger's `timeout`): the delivery failed
    /// after all, and the caller dead-letters the events the reply answers
    /// ([`TriggerContext::reply_refused`]).
    async fn reply(&self, mut batch: EventBatch, ttl: u8) -> Result<(), Refused> {
        if batch.is_empty() {
            return Ok(());
        }
        let ttl = ttl.saturating_sub(1);
        if ttl == 0 {
            self.counters.ttl_exhausted.inc_by(batch.len() as u64);
            if self.ttl_logged.allow() {
                tracing::warn!(trigger = %self.label.trigger,
                    "reply dropped: knativebrokerttl exhausted (reply loop?); logged once a minute at most, triggerfish_delivery_dropped_total{{reason=\"ttl_exhausted\"}} counts every time");
            }
            return Ok(());
        }
        batch.stamp_arrival(arrival_now());
        let events: Vec<EventRef> = Arc::new(batch).into_refs().collect();
        let patience = self.policy.timeout().unwrap_or(DEFAULT_TIMEOUT);
        let trigger = Some(self.label.trigger.as_str());
        let published = self
            .republisher
            .publish(&self.broker, &events, ttl, patience, trigger)
            .await;
        match &published {
            Ok(()) => {
                self.counters.replies.inc_by(events.len() as u64);
            }
            Err(refused) => {
                self.counters.replies_refused.inc();
                if self.refusals_logged.allow() {
                    tracing::warn!(trigger = %self.label.trigger, error = %refused,
                        "the broker refused a reply, so the event it answers goes to the dead-letter sink (or is dropped without one); logged once a minute at most, triggerfish_delivery_replies_refused_total counts every time");
                }
            }
        }
        published
    }

    /// Feeds back `event`'s reply, and dead-letters `event` if the broker refuses it.
    async fn reply_or_dead_letter(&self, event: &EventRef, reply: EventBatch, ttl: u8) {
        let reply = continue_trace(reply, [event], &self.reply_limits);
        if let Err(refused) = self.reply(reply, ttl).await {
            self.reply_refused(event, &refused, ttl).await;
        }
    }

    /// The broker refused the reply to `event`: as Knative does when a reply destination
    /// refuses, the event goes to the dead-letter sink, with `knativeerrordest` naming the
    /// broker, `knativeerrorcode` 429 (503 for an unavailable store) and the reason as
    /// `knativeerrordata`.
    async fn reply_refused(&self, event: &EventRef, refused: &Refused, ttl: u8) {
        let dl = DeadLetter {
            failure: Failure {
                cause: Cause::Status(refused.status()),
                source: ErrorSource::Router,
                retryable: false,
            },
            attempts: 1,
            reason: GiveUp::NotRetryable,
        };
        let destination = format!("broker:{}", self.broker);
        self.dead_letter_to(destination, event, &Attempt::refused(refused), dl, ttl)
            .await;
    }

    /// [`TriggerContext::dead_letter_to`] with the subscriber as `knativeerrordest` (not an
    /// `async fn`, so that its future is `dead_letter_to`'s, no larger).
    fn dead_letter<'a>(
        &'a self,
        event: &'a EventRef,
        attempt: &'a Attempt,
        dl: DeadLetter,
        ttl: u8,
    ) -> impl std::future::Future<Output = ()> + 'a {
        self.dead_letter_to(self.sink.describe(), event, attempt, dl, ttl)
    }

    /// Sends `event` to the dead-letter sink with the `knativeerror*` extensions of its failed
    /// `attempt` at `destination`; without a dead-letter sink, drops it with a count and a log.
    async fn dead_letter_to(
        &self,
        destination: String,
        event: &EventRef,
        attempt: &Attempt,
        dl: DeadLetter,
        ttl: u8,
    ) {
        let view = &event.view();
        let Some(dls) = &self.dead_letter else {
            self.counters.no_dls.inc();
            tracing::warn!(trigger = %self.label.trigger, destination = %destination, id = view.id(), attempts = dl.attempts,
                cause = ?dl.failure.cause, "event dropped after its last attempt: the trigger has no dead-letter sink");
            return;
        };
        let data = match attempt {
            Attempt::Response(r) if !r.body_excerpt.is_empty() => {
                Some(base64::engine::general_purpose::STANDARD.encode(&r.body_excerpt))
            }
            _ => None,
        };
        let code = i32::from(dl.error_code());
        let mut add = vec![
            ("knativeerrordest", AttrValue::Str(&destination)),
            ("knativeerrorcode", AttrValue::Int(code)),
        ];
        if let Some(d) = &data {
            add.push(("knativeerrordata", AttrValue::Str(d)));
        }
        let opts = EncodeOptions {
            skip: &[TTL_EXTENSION],
            add: &add,
        };
        // A dead-letter sink's reply goes nowhere, as in Knative.
        let req = Request {
            wants_reply: false,
            ..self.request(ttl)
        };
        let (_, _, decision) = attempts(self, true, dls, event, &opts, &req).await;
        if matches!(decision, Some(Decision::Succeeded)) {
            self.counters.dead_lettered.inc();
            tracing::info!(trigger = %self.label.trigger, id = view.id(), code, "event sent to the dead-letter sink");
        } else {
            self.counters.dls_failed.inc();
            tracing::error!(trigger = %self.label.trigger, id = view.id(), dead_letter_sink = %dls.describe(),
                "event dropped: the dead-letter sink failed too");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` would return, without calling it.
    fn future_size<F>(_make: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn never<T>() -> T {
        unreachable!("only the types matter")
    }

    /// Every delivery is a spawned task holding this future, and spawning moves it more than
    /// once: a large future inlined into it (JetStream's publish is ~5 KB) costs every event.
    #[test]
    fn a_delivery_task_stays_small() {
        let deliver = future_size(|| deliver(never::<&'static TriggerContext>(), never()));
        assert!(
            deliver <= 3 * 1024,
            "the delivery future is {deliver} bytes: box the large future that grew it"
        );
    }

    /// Backlogged from fewer than a quarter of the places (or bytes) free until half of both
    /// are free; counted process-wide once, and no longer once dropped.
    #[test]
    fn a_backlog_begins_at_three_quarters_and_ends_at_half() {
        let count = Arc::new(AtomicUsize::new(0));
        let limits = QueueLimits {
            events: 8,
            bytes: 1000,
        };
        let backlog = Backlog::new(
            limits,
            Arc::clone(&count),
            Counter::default(),
            "ns/t".into(),
        );
        let take = |n: usize| -> Vec<OwnedSemaphorePermit> {
            (0..n)
                .map(|_| Arc::clone(&backlog.places).try_acquire_owned().unwrap())
                .collect()
        };
        let mut places = take(6);
        backlog.note_queued();
        assert!(!backlog.is_backlogged(), "2 of 8 free");
        places.extend(take(1));
        backlog.note_queued();
        assert!(backlog.is_backlogged(), "1 of 8 free");
        backlog.note_queued();
        assert_eq!(count.load(Ordering::SeqCst), 1, "counted once");
        assert_eq!(backlog.episodes.get(), 1);

        places.truncate(5);
        backlog.relieve();
        assert!(backlog.is_backlogged(), "3 of 8 free: not yet half");
        places.truncate(4);
        backlog.relieve();
        assert!(!backlog.is_backlogged(), "half free");
        assert_eq!(count.load(Ordering::SeqCst), 0);

        // Bytes count as well, and places alone do not end it.
        let bytes = Arc::clone(&backlog.budget)
            .try_acquire_many_owned(751)
            .unwrap();
        backlog.note_queued();
        assert!(backlog.is_backlogged(), "249 of 1000 bytes free");
        places.extend(take(1));
        drop(bytes);
        backlog.relieve();
        assert!(backlog.is_backlogged(), "bytes free, but 3 of 8 places");
        drop(places);
        backlog.relieve();
        assert!(!backlog.is_backlogged());

        let _places = take(8);
        backlog.note_queued();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(backlog.episodes.get(), 3, "each time");
        drop(backlog);
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "a stopped trigger is not counted"
        );
    }
}
