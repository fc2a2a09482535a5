//! The scheduler: PingSources and run-time schedules firing on their cron ticks, and delayed
//! events waiting for their time.
//!
//! One task owns two min-heaps (the next tick of every schedule, the due time of every delayed
//! event) and sleeps until the earliest; it never polls, so an idle scheduler costs nothing.
//! The cron arithmetic (DST, day fields) lives in `triggerfish_core::cron`; this is the thin
//! timer loop around it.
//!
//! - **Ticks** become events handed to the schedule's target: a trigger-style dispatcher, so
//!   delivery to the sink has the broker's semantics (retries, dead-letter sink). If a
//!   schedule's previous tick is still waiting for room in that dispatcher's queue, the new tick
//!   is skipped, logged and counted (`triggerfish_scheduler_ticks_skipped_total`) rather than
//!   piling up without bound.
//! - **Ticks are prepared ahead and fired by a thread of their own.** Right after a tick
//!   fires, in the idle time before the next one is due, the task computes the schedule's next
//!   tick, builds its event (cron arithmetic, UUIDv5 id, JSON) and arms it on the `firing`
//!   thread. That thread wakes at the tick (to tens of microseconds, where Tokio's timer rounds
//!   up to the millisecond) and only hands prepared events over without waiting
//!   (`try_enqueue`; a task waits only when a queue is full), so 10,000 schedules due at the
//!   same second cost a hand-off each, not a build each. The task itself wakes `SETTLE`
//!   after an armed tick, to remember it and prepare the next one, so that it does not compete
//!   with the burst for a core.
//! - **Ticks into a broker of this process** (memory store) skip the dispatcher: a burst's
//!   ticks for one broker are offered to it in chunks, one call each ([`Direct`]), and only
//!   when it is full do they take the dispatcher path above.
//! - **Delayed events** (the `Scheduler` sink) are re-published to their broker at their due
//!   time, without `deliverat`/`deliverafter`, their TTL decremented.
//! - **Run-time schedules** come from `dev.triggerfish.schedule.create`/`.delete` events.
//!   Names are unique per namespace; creating the same schedule again is a no-op (so
//!   redelivery is harmless), creating a different one under a taken name is refused.
//! - **State** (last tick of each schedule, run-time schedules, pending delayed events) lives in
//!   a backend. With the memory store it is [`state`]: in memory, saved to
//!   `{dataDir}/scheduler/state.json` at most twice a second and at shutdown, so that `catchUp`
//!   can fire ticks missed while the process was down. With the JetStream store it is
//!   [`cluster`]: JetStream key-value buckets every replica mirrors, and a leader lease so that
//!   one replica fires each tick. Missed ticks are skipped by default, as in Knative.
//! - **Event ids** of ticks are UUIDv5 of the schedule and the tick, so a tick fired twice (by
//!   two leaders around a handover) is deduplicated by the JetStream store.
//!
//! What it does not do: decide cron times (core) or deliver (the dispatchers).

pub mod cluster;
mod firing;
pub mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use triggerfish_core::cron::recurring::{Recurring, ScheduleRequest};
use triggerfish_core::event::{EventBatch, EventRef};

use self::firing::{Armed, Burst, Firer, FiringThread, Gate, hand_off};
use crate::dispatch::TriggerHandle;
use crate::store::memory::MemoryStore;
use crate::store::{BrokerKey, Store, arrival_now};

/// A schedule the scheduler fires, with where its events go.
#[derive(Clone)]
pub struct Source {
    /// Unique key: `namespace/pingsources/name` or `namespace/schedules/name`.
    pub key: Arc<str>,
    /// When and what.
    pub recurring: Recurring,
    /// Where its events go.
    pub target: Arc<TriggerHandle>,
    /// Set when `target` delivers to a broker of this process on the memory store: ticks are
    /// then offered to that broker directly (see [`Direct`]).
    pub direct: Option<Direct>,
}

/// A broker of this process on the memory store, to which a schedule's ticks are offered
/// directly: all of a burst's ticks for one broker in one offer (one queue push per event and
/// one wake-up per shard), with no dispatcher and delivery task per tick. When the broker is
/// full the ticks go through the schedule's dispatcher instead, which waits, retries and
/// dead-letters as the source's `delivery` says.
#[derive(Clone)]
pub struct Direct {
    /// The broker.
    pub broker: BrokerKey,
    /// Its store.
    pub store: Arc<MemoryStore>,
}

/// A run-time schedule, as created, kept to compare repeated creates and to persist it.
#[derive(Clone)]
struct Dynamic {
    request: ScheduleRequest,
    namespace: String,
}

/// Builds the target of a run-time schedule.
pub type TargetFactory = Arc<
    dyn Fn(
            &str,
            &ScheduleRequest,
        ) -> Result<(Recurring, Arc<TriggerHandle>, Option<Direct>), String>
        + Send
        + Sync,
>;

/// Limits of the scheduler sink.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest delay accepted.
    pub max_delay: Duration,
    /// Most delayed events waiting.
    pub max_pending: usize,
    /// Most run-time schedules.
    pub max_schedules: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_delay: Duration::from_secs(7 * 86_400),
            max_pending: 100_000,
            max_schedules: 10_000,
        }
    }
}

enum Command {
    Create {
        namespace: String,
        request: Box<ScheduleRequest>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Delete {
        namespace: String,
        name: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Delay {
        broker: BrokerKey,
        event: Arc<EventBatch>,
        ttl: u8,
        due: DateTime<Utc>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The sending side, held by the `Scheduler` sink and the router.
#[derive(Clone)]
pub struct SchedulerHandle {
    commands: mpsc::Sender<Command>,
    sources: Arc<watch::Sender<Vec<Source>>>,
    /// Limits (reloadable through the `Scheduler` document).
    pub limits: Arc<arc_swap::ArcSwap<Limits>>,
}

/// Why the scheduler refused a request.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The request itself is wrong; retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The scheduler is full or stopping; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl SchedulerHandle {
    /// Replaces the config's schedules. Unchanged ones keep their timing.
    pub fn apply(&self, sources: Vec<Source>) {
        self.sources.send_replace(sources);
    }

    /// Creates a run-time schedule in `namespace`.
    pub async fn create(&self, namespace: String, request: ScheduleRequest) -> Result<(), Refused> {
        self.ask(|reply| Command::Create {
            namespace,
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Deletes a run-time schedule; deleting one that does not exist succeeds.
    pub async fn delete(&self, namespace: String, name: String) -> Result<(), Refused> {
        self.ask(|reply| Command::Delete {
            namespace,
            name,
            reply,
        })
        .await
    }

    /// Holds `event` until `due`, then publishes it to `broker`.
    pub async fn delay(
        &self,
        broker: BrokerKey,
        event: Arc<EventBatch>,
        ttl: u8,
        due: DateTime<Utc>,
    ) -> Result<(), Refused> {
        self.ask(|reply| Command::Delay {
            broker,
            event,
            ttl,
            due,
            reply,
        })
        .await
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), Refused> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| Refused::Unavailable("the scheduler is stopping".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.starts_with("full:") => Err(Refused::Unavailable(e)),
            Ok(Err(e)) => Err(Refused::Invalid(e)),
            Err(_) => Err(Refused::Unavailable("the scheduler is stopping".into())),
        }
    }
}

/// Scheduler metrics.
#[derive(Clone)]
pub struct SchedulerMetrics {
    ticks: Counter,
    skipped: Counter,
    lateness: Histogram,
    lateness_max: Gauge<f64, std::sync::atomic::AtomicU64>,
    pending: Gauge,
    schedules: Gauge,
}

impl SchedulerMetrics {
    /// Creates and registers them.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> SchedulerMetrics {
        let m = SchedulerMetrics {
            ticks: Counter::default(),
            skipped: Counter::default(),
            // 50 µs .. ~10 s, 25% apart.
            lateness: Histogram::new(exponential_buckets(0.00005, 1.25, 55)),
            lateness_max: Gauge::default(),
            pending: Gauge::default(),
            schedules: Gauge::default(),
        };
        registry.register("scheduler_ticks", "Schedule ticks fired", m.ticks.clone());
        registry.register(
            "scheduler_ticks_skipped",
            "Ticks skipped because the previous one was still queued",
            m.skipped.clone(),
        );
        registry.register_with_unit(
            "scheduler_tick_lateness",
            "How late a tick was handed to its delivery queue",
            prometheus_client::registry::Unit::Seconds,
            m.lateness.clone(),
        );
        registry.register_with_unit(
            "scheduler_tick_lateness_max",
            "The latest any tick has been handed to its delivery queue since the start",
            prometheus_client::registry::Unit::Seconds,
            m.lateness_max.clone(),
        );
        registry.register(
            "scheduler_delayed_pending",
            "Delayed events waiting",
            m.pending.clone(),
        );
        registry.register(
            "scheduler_schedules",
            "Active schedules",
            m.schedules.clone(),
        );
        m
    }
}

struct Entry {
    source: Arc<Source>,
    generation: u64,
    /// Whether its armed ticks may fire, and whether one is waiting for room in the target's
    /// queue.
    gate: Arc<Gate>,
    dynamic: Option<Dynamic>,
    /// The tick whose event was built ahead of time and armed on the firing thread.
    armed: Option<DateTime<Utc>>,
}

impl Drop for Entry {
    /// A removed or replaced schedule's armed tick must not fire.
    fn drop(&mut self) {
        self.gate.retire();
    }
}

/// How long after an armed tick this task wakes to remember it and prepare the next one.
const SETTLE: chrono::Duration = chrono::Duration::milliseconds(20);
/// How long before the next due tick preparing stops, so that it never competes with a burst.
const PREPARE_MARGIN: chrono::Duration = chrono::Duration::milliseconds(2);
/// The longest the timer loop prepares at a time before it looks at its inputs again.
const PREPARE_SLICE: Duration = Duration::from_millis(2);

/// A schedule's next tick: when, the entry generation it was computed for, and the key.
type Tick = (DateTime<Utc>, u64, Arc<str>);

struct Pending {
    broker: BrokerKey,
    event: Arc<EventBatch>,
    ttl: u8,
    due: DateTime<Utc>,
}

/// Where the scheduler keeps its state.
enum Backend {
    /// One process: in memory, saved to a file.
    File(state::StateFile),
    /// A cluster: JetStream key-value buckets and a leader lease.
    Cluster(Box<cluster::ClusterState>),
}

/// The scheduler task's state.
pub struct Scheduler {
    entries: HashMap<Arc<str>, Entry>,
    ticks: BinaryHeap<Reverse<Tick>>,
    /// Schedules whose next tick is still to be computed and prepared, with the time to
    /// compute it from: ticks just fired, schedules just added.
    to_prepare: VecDeque<Tick>,
    pending: HashMap<String, Pending>,
    due: BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
    generation: u64,
    store: Store,
    metrics: SchedulerMetrics,
    backend: Backend,
    leader: watch::Receiver<cluster::Lease>,
    last_fired: HashMap<Arc<str>, DateTime<Utc>>,
    dirty: bool,
    factory: TargetFactory,
    handle: SchedulerHandle,
    first_apply: bool,
    /// Fires armed ticks on time, from a thread of its own.
    firing: FiringThread,
    /// Fires ticks that could not be armed in time, from this task.
    firer: Firer,
}

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its state buckets in JetStream are unusable.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The OS refused a thread (out of memory or at its thread limit).
    #[error("starting the scheduler's firing thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Where a scheduler keeps its state: a directory (one process) or JetStream (a cluster).
pub enum StateConfig {
    /// `{dir}/scheduler/state.json`.
    Dir(PathBuf),
    /// JetStream key-value buckets.
    JetStream {
        /// The JetStream context.
        context: Box<async_nats::jetstream::Context>,
        /// Replicas of the buckets.
        replicas: usize,
    },
}

impl Scheduler {
    /// Starts the scheduler task; returns its handle.
    pub async fn start(
        store: Store,
        metrics: SchedulerMetrics,
        state: StateConfig,
        factory: TargetFactory,
        stop: CancellationToken,
    ) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), StartError> {
        let (commands, rx) = mpsc::channel(256);
        let (sources, sources_rx) = watch::channel(Vec::new());
        let handle = SchedulerHandle {
            commands,
            sources: Arc::new(sources),
            limits: Arc::new(arc_swap::ArcSwap::from_pointee(Limits::default())),
        };
        let (leader_tx, leader) = watch::channel(cluster::Lease::None);
        let (backend, changes) = match state {
            StateConfig::Dir(dir) => {
                leader_tx.send_replace(cluster::Lease::Always);
                (
                    Backend::File(state::StateFile::new(
                        dir.join("scheduler").join("state.json"),
                    )),
                    None,
                )
            }
            StateConfig::JetStream { context, replicas } => {
                let cluster = cluster::ClusterState::open(&context, replicas).await?;
                let (tx, changes) = mpsc::channel(1024);
                tokio::spawn({
                    let cluster = cluster.clone();
                    let stop = stop.clone();
                    async move { cluster.watch(tx, stop).await }
                });
                tokio::spawn({
                    let cluster = cluster.clone();
                    let stop = stop.clone();
                    async move { cluster.lead(leader_tx, stop).await }
                });
                (Backend::Cluster(Box::new(cluster)), Some(changes))
            }
        };
        let firer = Firer {
            metrics: metrics.clone(),
            leader: leader.clone(),
        };
        let firing = FiringThread::start(firer.clone(), tokio::runtime::Handle::current())?;
        let scheduler = Scheduler {
            entries: HashMap::new(),
            ticks: BinaryHeap::new(),
            to_prepare: VecDeque::new(),
            pending: HashMap::new(),
            due: BinaryHeap::new(),
            generation: 0,
            store,
            metrics,
            backend,
            leader,
            last_fired: HashMap::new(),
            dirty: false,
            factory,
            handle: handle.clone(),
            first_apply: true,
            firing,
            firer,
        };
        let task = tokio::spawn(scheduler.run(rx, sources_rx, changes, stop));
        Ok((handle, task))
    }

    fn is_leader(&self) -> bool {
        self.leader.borrow().held(Instant::now())
    }

    /// The earliest moment something is due: a tick or a delayed event.
    fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tick = self.ticks.peek().map(|r| r.0.0);
        [tick, self.next_other(now)].into_iter().flatten().min()
    }

    /// When the timer loop must next look at its heaps: when something is due, except that a
    /// tick armed on the firing thread needs this task only afterwards, to remember it and
    /// prepare the next one, [`SETTLE`] later, so as not to compete with the burst for a core.
    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let leader = self.is_leader();
        let tick = self.ticks.peek().map(|Reverse((tick, generation, key))| {
            let armed = leader
                && self
                    .entries
                    .get(key)
                    .is_some_and(|e| e.generation == *generation && e.armed == Some(*tick));
            if armed { *tick + SETTLE } else { *tick }
        });
        [tick, self.next_other(now)].into_iter().flatten().min()
    }

    /// When the loop must look at something other than ticks: the next delayed event on the
    /// leader; on a follower, a second from now, when the lease may have changed hands
    /// (followers keep their tick heap moving but fire nothing).
    fn next_other(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_leader() {
            self.due.peek().map(|r| r.0.0)
        } else {
            Some(now + chrono::Duration::seconds(1))
        }
    }

    /// How long the loop may prepare ticks now: nothing when nothing waits or the next tick
    /// is due within [`PREPARE_MARGIN`], else up to [`PREPARE_SLICE`].
    fn prepare_window(&self, now: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Duration {
        if self.to_prepare.is_empty() {
            return Duration::ZERO;
        }
        match next {
            None => PREPARE_SLICE,
            Some(t) => (t - now - PREPARE_MARGIN)
                .to_std()
                .unwrap_or_default()
                .min(PREPARE_SLICE),
        }
    }

    /// Computes the next tick of the schedules waiting in `to_prepare`, oldest first, and
    /// (on the leader) builds its event and arms it on the firing thread, until `until`: the
    /// cron arithmetic, the UUIDv5 id and the event's JSON (about 13 µs a tick) stay off the
    /// moment of firing.
    fn prepare(&mut self, until: Instant) {
        let leader = self.is_leader();
        let mut armed = Vec::new();
        while let Some((after, generation, key)) = self.to_prepare.pop_front() {
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.generation == generation
                && let Some(next) = entry.source.recurring.next_after(after)
            {
                entry.armed = None;
                if leader && let Some(event) = build_event(&entry.source, next, false) {
                    entry.armed = Some(next);
                    armed.push(Armed {
                        tick: next,
                        event,
                        source: Arc::clone(&entry.source),
                        gate: Arc::clone(&entry.gate),
                    });
                }
                self.ticks.push(Reverse((next, generation, key)));
            }
            if Instant::now() >= until {
                break;
            }
        }
        self.firing.arm(armed);
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sources: watch::Receiver<Vec<Source>>,
        mut changes: Option<mpsc::Receiver<cluster::Change>>,
        stop: CancellationToken,
    ) {
        if let Backend::File(file) = &self.backend {
            let restored = file.load().await;
            self.restore(restored);
        }
        let mut leader = self.leader.clone();
        let mut last_save = Instant::now();
        loop {
            let now = Utc::now();
            let next = self.next_wake(now);
            // With ticks to prepare and time before the next one is due, only yield: the
            // inputs are looked at, then preparing goes on.
            let prepare = self.prepare_window(now, self.next_due(now));
            let sleep = next
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            let wait = async {
                if prepare.is_zero() {
                    // Tokio's timer rounds up to its next millisecond: ticks fire up to 1 ms late.
                    tokio::time::sleep(sleep).await;
                } else {
                    tokio::task::yield_now().await;
                }
            };
            tokio::select! {
                () = wait => {}
                Some(cmd) = commands.recv() => self.command(cmd).await,
                Ok(()) = sources.changed() => {
                    let set = sources.borrow_and_update().clone();
                    self.apply(set);
                }
                Some(change) = async { match changes.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } } => {
                    self.mirror(change);
                }
                Ok(()) = leader.changed() => {}
                () = stop.cancelled() => {
                    self.save().await;
                    return;
                }
            }
            self.fire_due(Utc::now()).await;
            let now = Utc::now();
            let window = self.prepare_window(now, self.next_due(now));
            if !window.is_zero() {
                self.prepare(Instant::now() + window);
            }
            if self.dirty && last_save.elapsed() >= Duration::from_millis(500) {
                self.save().await;
                last_save = Instant::now();
            }
        }
    }

    fn restore(&mut self, saved: state::State) {
        self.last_fired = saved
            .last_fired
            .into_iter()
            .map(|(k, v)| (Arc::from(k.as_str()), v))
            .collect();
        for s in saved.schedules {
            if let Err(e) = self.add_dynamic(s.namespace.clone(), s.request) {
                tracing::warn!(namespace = %s.namespace, error = %e, "a saved run-time schedule could not be restored");
            }
        }
        for (i, p) in saved.pending.into_iter().enumerate() {
            match p.decode() {
                Ok((broker, event, ttl, due)) => {
                    let id = format!("restored-{i}");
                    self.push_pending(
                        id,
                        Pending {
                            broker,
                            event,
                            ttl,
                            due,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "a saved delayed event could not be restored")
                }
            }
        }
    }

    /// Mirrors a change of the cluster state bucket.
    fn mirror(&mut self, change: cluster::Change) {
        match change {
            cluster::Change::Put(key, value) => {
                if let Some(rest) = key.strip_prefix("s.") {
                    let Some((namespace, _)) = rest.split_once('.') else {
                        return;
                    };
                    match serde_json::from_slice::<ScheduleRequest>(&value) {
                        Ok(request) => {
                            let k: Arc<str> =
                                Arc::from(format!("{namespace}/schedules/{}", request.name));
                            let same = self
                                .entries
                                .get(&k)
                                .and_then(|e| e.dynamic.as_ref())
                                .is_some_and(|d| d.request == request);
                            if !same {
                                self.entries.remove(&k);
                                if let Err(e) = self.add_dynamic(namespace.to_owned(), request) {
                                    tracing::warn!(schedule = %k, error = %e, "a run-time schedule could not be started");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "unreadable run-time schedule")
                        }
                    }
                } else if let Some(id) = key.strip_prefix("p.") {
                    match serde_json::from_slice::<state::SavedEvent>(&value)
                        .map_err(|e| e.to_string())
                        .and_then(state::SavedEvent::decode)
                    {
                        Ok((broker, event, ttl, due)) => self.push_pending(
                            id.to_owned(),
                            Pending {
                                broker,
                                event,
                                ttl,
                                due,
                            },
                        ),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "unreadable delayed event")
                        }
                    }
                } else if let Some(k) = key.strip_prefix("l.")
                    && let Some(t) = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                {
                    self.last_fired
                        .insert(Arc::from(decode_key(k).as_str()), t.with_timezone(&Utc));
                }
            }
            cluster::Change::Delete(key) => {
                if let Some(rest) = key.strip_prefix("s.") {
                    if let Some((namespace, name)) = rest.split_once('.') {
                        let k: Arc<str> = Arc::from(format!("{namespace}/schedules/{name}"));
                        if self.entries.get(&k).is_some_and(|e| e.dynamic.is_some()) {
                            self.entries.remove(&k);
                        }
                    }
                } else if let Some(id) = key.strip_prefix("p.") {
                    self.pending.remove(id);
                }
            }
        }
        self.metrics.schedules.set(self.entries.len() as i64);
        self.metrics.pending.set(self.pending.len() as i64);
    }

    fn apply(&mut self, set: Vec<Source>) {
        let now = Utc::now();
        let keep: std::collections::HashSet<Arc<str>> =
            set.iter().map(|s| Arc::clone(&s.key)).collect();
        self.entries
            .retain(|k, e| e.dynamic.is_some() || keep.contains(k));
        for source in set {
            let unchanged = self.entries.get(&source.key).is_some_and(|e| {
                e.source.recurring == source.recurring
                    && Arc::ptr_eq(&e.source.target, &source.target)
            });
            if unchanged {
                continue;
            }
            if self.first_apply
                && self.is_leader()
                && let Some(&last) = self.last_fired.get(&source.key)
            {
                for tick in source.recurring.missed(last, now) {
                    tracing::info!(schedule = %source.key, tick = %tick, "firing a tick missed while stopped (catchUp)");
                    hand_off(
                        &self.metrics,
                        &source,
                        &Arc::new(Gate::default()),
                        tick,
                        None,
                        true,
                    );
                }
            }
            self.insert(source, None, now);
        }
        self.first_apply = false;
        self.metrics.schedules.set(self.entries.len() as i64);
    }

    fn insert(&mut self, source: Source, dynamic: Option<Dynamic>, now: DateTime<Utc>) {
        self.generation += 1;
        self.to_prepare
            .push_back((now, self.generation, Arc::clone(&source.key)));
        let key = Arc::clone(&source.key);
        self.entries.insert(
            key,
            Entry {
                source: Arc::new(source),
                generation: self.generation,
                gate: Arc::new(Gate::default()),
                dynamic,
                armed: None,
            },
        );
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Create {
                namespace,
                request,
                reply,
            } => {
                let _ = reply.send(self.create(namespace, *request).await);
            }
            Command::Delete {
                namespace,
                name,
                reply,
            } => {
                let result = match &self.backend {
                    Backend::Cluster(c) => c.delete(&format!("s.{namespace}.{name}")).await,
                    Backend::File(_) => {
                        let key: Arc<str> = Arc::from(format!("{namespace}/schedules/{name}"));
                        if self.entries.get(&key).is_some_and(|e| e.dynamic.is_some()) {
                            self.entries.remove(&key);
                            self.dirty = true;
                        }
                        Ok(())
                    }
                };
                if result.is_ok() {
                    tracing::info!(namespace = %namespace, name = %name, "run-time schedule deleted");
                }
                self.metrics.schedules.set(self.entries.len() as i64);
                let _ = reply.send(result);
            }
            Command::Delay {
                broker,
                event,
                ttl,
                due,
                reply,
            } => {
                let limits = self.handle.limits.load();
                if self.pending.len() >= limits.max_pending {
                    let _ = reply.send(Err(format!(
                        "full: {} delayed events are waiting",
                        self.pending.len()
                    )));
                    return;
                }
                let id = uuid::Uuid::new_v4().to_string();
                let result = match &self.backend {
                    Backend::Cluster(c) => {
                        let saved = state::SavedEvent::encode(&broker, &event, ttl, due);
                        match serde_json::to_vec(&saved) {
                            Ok(json) => c.put(&format!("p.{id}"), Bytes::from(json)).await,
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Backend::File(_) => {
                        self.push_pending(
                            id,
                            Pending {
                                broker,
                                event,
                                ttl,
                                due,
                            },
                        );
                        self.dirty = true;
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    async fn create(&mut self, namespace: String, request: ScheduleRequest) -> Result<(), String> {
        let dynamic_count = self
            .entries
            .values()
            .filter(|e| e.dynamic.is_some())
            .count();
        if dynamic_count >= self.handle.limits.load().max_schedules {
            return Err(format!("full: {dynamic_count} run-time schedules exist"));
        }
        // Check it fully before storing it: an invalid schedule is refused, not stored.
        request.recurring()?;
        match &self.backend {
            Backend::Cluster(c) => {
                let json = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
                let key = format!("s.{namespace}.{}", request.name);
                match c.create(&key, Bytes::from(json)).await? {
                    None => Ok(()),
                    Some(existing)
                        if serde_json::from_slice::<ScheduleRequest>(&existing)
                            .ok()
                            .as_ref()
                            == Some(&request) =>
                    {
                        Ok(())
                    }
                    Some(_) => Err(format!(
                        "a schedule named {:?} already exists in namespace {namespace:?}; delete it first",
                        request.name
                    )),
                }
            }
            Backend::File(_) => {
                let result = self.add_dynamic(namespace, request);
                if result.is_ok() {
                    self.dirty = true;
                }
                result
            }
        }
    }

    /// Starts a run-time schedule here (from a request, a saved state, or a mirrored change).
    fn add_dynamic(&mut self, namespace: String, request: ScheduleRequest) -> Result<(), String> {
        let key: Arc<str> = Arc::from(format!("{namespace}/schedules/{}", request.name));
        if let Some(existing) = self.entries.get(&key) {
            return match &existing.dynamic {
                Some(d) if d.request == request => Ok(()),
                _ => Err(format!(
                    "a schedule named {:?} already exists in namespace {namespace:?}; delete it first",
                    request.name
                )),
            };
        }
        let (recurring, target, direct) = (self.factory)(&namespace, &request)?;
        let source = Source {
            key: Arc::clone(&key),
            recurring,
            target,
            direct,
        };
        self.insert(source, Some(Dynamic { request, namespace }), Utc::now());
        self.metrics.schedules.set(self.entries.len() as i64);
        tracing::info!(schedule = %key, "run-time schedule created");
        Ok(())
    }

    fn push_pending(&mut self, id: String, pending: Pending) {
        self.due.push(Reverse((pending.due, id.clone())));
        self.pending.insert(id, pending);
        self.metrics.pending.set(self.pending.len() as i64);
    }

    async fn fire_due(&mut self, now: DateTime<Utc>) {
        let leader = self.is_leader();
        let started = Instant::now();
        // Armed ticks are the firing thread's; this only fires those that were not prepared
        // in time, then remembers the tick and computes the next one.
        let mut fired = Vec::new();
        let mut unprepared = Burst::default();
        let mut unprepared_count = 0usize;
        while self.ticks.peek().is_some_and(|r| r.0.0 <= now) {
            let Some(Reverse((tick, generation, key))) = self.ticks.pop() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            if !leader {
                self.to_prepare.push_back((tick, generation, key));
                continue;
            }
            if entry.armed.take() != Some(tick)
                && let Some(event) = build_event(&entry.source, tick, false)
            {
                unprepared_count += 1;
                unprepared.push(Armed {
                    tick,
                    event,
                    source: Arc::clone(&entry.source),
                    gate: Arc::clone(&entry.gate),
                });
            }
            fired.push((tick, generation, key));
        }
        if !leader {
            return;
        }
        if !unprepared.is_empty() {
            self.firer.fire(unprepared);
        }
        if !fired.is_empty() {
            tracing::debug!(
                ticks = fired.len(),
                unprepared = unprepared_count,
                took_us = started.elapsed().as_micros() as u64,
                woke_late_us = fired.first().and_then(|f| (now - f.0).num_microseconds()),
                "ticks done"
            );
        }
        for (tick, generation, key) in fired {
            self.record_fired(&key, tick).await;
            self.to_prepare.push_back((tick, generation, key));
        }
        while let Some(Reverse((due, id))) = self.due.peek().cloned() {
            if due > now {
                break;
            }
            self.due.pop();
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            self.metrics.pending.set(self.pending.len() as i64);
            let store = self.store.clone();
            let cluster = match &self.backend {
                Backend::Cluster(c) => Some(c.clone()),
                Backend::File(_) => {
                    self.dirty = true;
                    None
                }
            };
            tokio::spawn(async move {
                // It enters the broker now (see `crate::store::arrival_now`).
                let mut event = Arc::unwrap_or_clone(pending.event);
                event.stamp_arrival(arrival_now());
                match store
                    .offer(&pending.broker, Arc::new(event), Some(pending.ttl))
                    .await
                {
                    Ok(()) => {
                        if let Some(c) = cluster {
                            let _ = c.delete(&format!("p.{id}")).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(broker = %pending.broker, error = %e, "a delayed event could not be published")
                    }
                }
            });
        }
    }

    /// Remembers the last tick of a schedule that catches up.
    async fn record_fired(&mut self, key: &Arc<str>, tick: DateTime<Utc>) {
        match &self.backend {
            Backend::File(_) => {
                self.last_fired.insert(Arc::clone(key), tick);
                self.dirty = true;
            }
            Backend::Cluster(c)
                if self
                    .entries
                    .get(key)
                    .is_some_and(|e| e.source.recurring.catch_up.is_some()) =>
            {
                let value = Bytes::from(tick.to_rfc3339());
                let _ = c.put(&format!("l.{}", encode_key(key)), value).await;
            }
            Backend::Cluster(_) => {}
        }
    }

    async fn save(&mut self) {
        let Backend::File(file) = &self.backend else {
            self.dirty = false;
            return;
        };
        let schedules = self
            .entries
            .values()
            .filter_map(|e| {
                e.dynamic.as_ref().map(|d| state::SavedSchedule {
                    namespace: d.namespace.clone(),
                    request: d.request.clone(),
                })
            })
            .collect();
        let pending = self
            .pending
            .values()
            .map(|p| state::SavedEvent::encode(&p.broker, &p.event, p.ttl, p.due))
            .collect();
        let last_fired = self
            .last_fired
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        file.save(state::State {
            last_fired,
            schedules,
            pending,
        })
        .await;
        self.dirty = false;
    }
}

/// The event of `source`'s tick at `tick`, with its id: UUIDv5 of the schedule and the tick,
/// so that a tick fired twice has one id.
fn build_event(source: &Source, tick: DateTime<Utc>, late: bool) -> Option<EventRef> {
    let name = format!("{}@{}", source.key, tick.timestamp_millis());
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string();
    EventRef::new(Arc::new(source.recurring.event(tick, &id, late)), 0)
}

/// A schedule key as a KV key token (KV keys allow letters, digits, `-`, `_`, `=`, `.`).
fn encode_key(key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_key(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}
