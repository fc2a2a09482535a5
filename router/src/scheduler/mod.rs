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
//! - **Delayed events** (the `Scheduler` sink) are re-published to their broker at their due
//!   time, without `deliverat`/`deliverafter`, their TTL decremented.
//! - **Run-time schedules** come from `dev.triggerfish.schedule.create`/`.delete` events.
//!   Names are unique per namespace; creating the same schedule again is a no-op (so
//!   redelivery is harmless), creating a different one under a taken name is refused.
//! - **State** (last tick of each schedule, run-time schedules, pending delayed events) is kept
//!   in the [`state`] store: in memory, saved to `{dataDir}/scheduler/state.json` at most twice a
//!   second and at shutdown, so that `catchUp` can fire ticks missed while the process was down.
//!   Missed ticks are skipped by default, as in Knative.
//!
//! What it does not do: decide cron times (core) or deliver (the dispatchers).

pub mod state;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use triggerfish_core::cron::recurring::{Recurring, ScheduleRequest};
use triggerfish_core::event::{EventBatch, EventRef};

use crate::dispatch::TriggerHandle;
use crate::store::{BrokerKey, Completion, Store};

/// A schedule the scheduler fires, with where its events go.
#[derive(Clone)]
pub struct Source {
    /// Unique key: `namespace/pingsources/name` or `namespace/schedules/name`.
    pub key: Arc<str>,
    /// When and what.
    pub recurring: Recurring,
    /// Where its events go.
    pub target: Arc<TriggerHandle>,
}

/// A run-time schedule, as created, kept to compare repeated creates and to persist it.
#[derive(Clone)]
struct Dynamic {
    request: ScheduleRequest,
    namespace: String,
}

/// Builds the target of a run-time schedule.
pub type TargetFactory = Arc<
    dyn Fn(&str, &ScheduleRequest) -> Result<(Recurring, Arc<TriggerHandle>), String> + Send + Sync,
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
    source: Source,
    generation: u64,
    /// A tick of this schedule is waiting for room in its target's queue.
    busy: Arc<AtomicBool>,
    dynamic: Option<Dynamic>,
}

/// A schedule's next tick: when, the entry generation it was computed for, and the key.
type Tick = (DateTime<Utc>, u64, Arc<str>);

struct Pending {
    broker: BrokerKey,
    event: Arc<EventBatch>,
    ttl: u8,
}

/// The scheduler task's state.
pub struct Scheduler {
    entries: HashMap<Arc<str>, Entry>,
    ticks: BinaryHeap<Reverse<Tick>>,
    pending: BTreeMap<u64, (DateTime<Utc>, Pending)>,
    due: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    next_seq: u64,
    generation: u64,
    store: Store,
    metrics: SchedulerMetrics,
    state: state::StateFile,
    last_fired: HashMap<Arc<str>, DateTime<Utc>>,
    dirty: bool,
    factory: TargetFactory,
    handle: SchedulerHandle,
    first_apply: bool,
}

impl Scheduler {
    /// Starts the scheduler task; returns its handle.
    pub fn start(
        store: Store,
        metrics: SchedulerMetrics,
        state_dir: PathBuf,
        factory: TargetFactory,
        stop: CancellationToken,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (commands, rx) = mpsc::channel(256);
        let (sources, sources_rx) = watch::channel(Vec::new());
        let handle = SchedulerHandle {
            commands,
            sources: Arc::new(sources),
            limits: Arc::new(arc_swap::ArcSwap::from_pointee(Limits::default())),
        };
        let state = state::StateFile::new(state_dir.join("scheduler").join("state.json"));
        let scheduler = Scheduler {
            entries: HashMap::new(),
            ticks: BinaryHeap::new(),
            pending: BTreeMap::new(),
            due: BinaryHeap::new(),
            next_seq: 0,
            generation: 0,
            store,
            metrics,
            state,
            last_fired: HashMap::new(),
            dirty: false,
            factory,
            handle: handle.clone(),
            first_apply: true,
        };
        let task = tokio::spawn(scheduler.run(rx, sources_rx, stop));
        (handle, task)
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sources: watch::Receiver<Vec<Source>>,
        stop: CancellationToken,
    ) {
        let restored = self.state.load().await;
        self.restore(restored);
        let mut last_save = Instant::now();
        loop {
            let now = Utc::now();
            let next = [
                self.ticks.peek().map(|r| r.0.0),
                self.due.peek().map(|r| r.0.0),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = next
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                Some(cmd) = commands.recv() => self.command(cmd),
                Ok(()) = sources.changed() => {
                    let set = sources.borrow_and_update().clone();
                    self.apply(set);
                }
                () = stop.cancelled() => {
                    self.save().await;
                    return;
                }
            }
            self.fire_due(Utc::now());
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
            if let Err(e) = self.create(s.namespace.clone(), s.request) {
                tracing::warn!(namespace = %s.namespace, error = %e, "a saved run-time schedule could not be restored");
            }
        }
        for p in saved.pending {
            match p.decode() {
                Ok((broker, event, ttl, due)) => self.push_pending(broker, event, ttl, due),
                Err(e) => {
                    tracing::error!(error = %e, "a saved delayed event could not be restored")
                }
            }
        }
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
                && let Some(&last) = self.last_fired.get(&source.key)
            {
                for tick in source.recurring.missed(last, now) {
                    tracing::info!(schedule = %source.key, tick = %tick, "firing a tick missed while stopped (catchUp)");
                    self.fire(&source, &Arc::new(AtomicBool::new(false)), tick, true);
                }
            }
            self.insert(source, None, now);
        }
        self.first_apply = false;
        self.metrics.schedules.set(self.entries.len() as i64);
    }

    fn insert(&mut self, source: Source, dynamic: Option<Dynamic>, now: DateTime<Utc>) {
        self.generation += 1;
        if let Some(next) = source.recurring.next_after(now) {
            self.ticks
                .push(Reverse((next, self.generation, Arc::clone(&source.key))));
        }
        let key = Arc::clone(&source.key);
        self.entries.insert(
            key,
            Entry {
                source,
                generation: self.generation,
                busy: Arc::new(AtomicBool::new(false)),
                dynamic,
            },
        );
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Create {
                namespace,
                request,
                reply,
            } => {
                let result = self.create(namespace, *request);
                if result.is_ok() {
                    self.dirty = true;
                }
                let _ = reply.send(result);
            }
            Command::Delete {
                namespace,
                name,
                reply,
            } => {
                let key: Arc<str> = Arc::from(format!("{namespace}/schedules/{name}"));
                if self.entries.get(&key).is_some_and(|e| e.dynamic.is_some()) {
                    self.entries.remove(&key);
                    self.dirty = true;
                    tracing::info!(schedule = %key, "run-time schedule deleted");
                }
                self.metrics.schedules.set(self.entries.len() as i64);
                let _ = reply.send(Ok(()));
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
                self.push_pending(broker, event, ttl, due);
                self.dirty = true;
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn create(&mut self, namespace: String, request: ScheduleRequest) -> Result<(), String> {
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
        let dynamic_count = self
            .entries
            .values()
            .filter(|e| e.dynamic.is_some())
            .count();
        if dynamic_count >= self.handle.limits.load().max_schedules {
            return Err(format!("full: {dynamic_count} run-time schedules exist"));
        }
        let (recurring, target) = (self.factory)(&namespace, &request)?;
        let source = Source {
            key: Arc::clone(&key),
            recurring,
            target,
        };
        self.insert(source, Some(Dynamic { request, namespace }), Utc::now());
        self.metrics.schedules.set(self.entries.len() as i64);
        tracing::info!(schedule = %key, "run-time schedule created");
        Ok(())
    }

    fn push_pending(
        &mut self,
        broker: BrokerKey,
        event: Arc<EventBatch>,
        ttl: u8,
        due: DateTime<Utc>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending
            .insert(seq, (due, Pending { broker, event, ttl }));
        self.due.push(Reverse((due, seq)));
        self.metrics.pending.set(self.pending.len() as i64);
    }

    fn fire_due(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((tick, generation, key))) = self.ticks.peek().cloned() {
            if tick > now {
                break;
            }
            self.ticks.pop();
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let (source, busy) = (entry.source.clone(), Arc::clone(&entry.busy));
            self.fire(&source, &busy, tick, false);
            self.last_fired.insert(Arc::clone(&key), tick);
            self.dirty = true;
            if let Some(next) = source.recurring.next_after(tick) {
                self.ticks.push(Reverse((next, generation, key)));
            }
        }
        while let Some(Reverse((due, seq))) = self.due.peek().copied() {
            if due > now {
                break;
            }
            self.due.pop();
            let Some((_, pending)) = self.pending.remove(&seq) else {
                continue;
            };
            self.dirty = true;
            self.metrics.pending.set(self.pending.len() as i64);
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store
                    .offer(&pending.broker, pending.event, Some(pending.ttl))
                    .await
                {
                    tracing::error!(broker = %pending.broker, error = %e, "a delayed event could not be published");
                }
            });
        }
    }

    fn fire(&self, source: &Source, busy: &Arc<AtomicBool>, tick: DateTime<Utc>, late: bool) {
        if busy.swap(true, Ordering::AcqRel) {
            self.metrics.skipped.inc();
            tracing::warn!(schedule = %source.key, tick = %tick, "tick skipped: the previous one is still waiting for its sink's queue");
            return;
        }
        self.metrics.ticks.inc();
        // The event is built in the task: ticks due together are prepared in parallel, on
        // every core, and the timer loop stays short.
        let source = source.clone();
        let busy = Arc::clone(busy);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let batch = Arc::new(source.recurring.event(tick, &id, late));
            if let Some(event) = EventRef::new(batch, 0) {
                let lateness = (Utc::now() - tick)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics.lateness.observe(lateness);
                // A monotonic maximum: f64 bits of non-negative numbers order like the numbers.
                let _ = metrics
                    .lateness_max
                    .inner()
                    .fetch_max(lateness.to_bits(), Ordering::AcqRel);
                let _ = source
                    .target
                    .enqueue(
                        event,
                        crate::store::DEFAULT_TTL,
                        Instant::now(),
                        Completion::none(),
                    )
                    .await;
            }
            busy.store(false, Ordering::Release);
        });
    }

    async fn save(&mut self) {
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
            .map(|(due, p)| state::SavedEvent::encode(&p.broker, &p.event, p.ttl, *due))
            .collect();
        let last_fired = self
            .last_fired
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.state
            .save(state::State {
                last_fired,
                schedules,
                pending,
            })
            .await;
        self.dirty = false;
    }
}
