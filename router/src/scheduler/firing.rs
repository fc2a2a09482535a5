//! The firing thread: hands prepared ticks to their delivery queues at their due time.
//!
//! The scheduler task prepares each schedule's next tick (its event built, see the module
//! above) and arms it here. One OS thread sleeps until the earliest armed tick, wakes on time
//! (a condition variable's deadline: tens of microseconds, where Tokio's timer rounds up to the
//! millisecond and then waits for a free worker), takes every tick due at that moment and hands
//! them over: ticks into a broker of this process in chunks of [`DIRECT_CHUNK`] per broker,
//! the others one `try_enqueue` each. It touches no map and no heap while firing; what a tick
//! needs travels with it ([`Armed`]).
//!
//! A schedule removed or replaced after its tick was armed has its [`Gate`] retired, and the
//! armed tick is dropped when it comes due. On a cluster, the thread fires only while this
//! replica holds the leader lease.
//!
//! What it does not do: compute ticks, build events or remember what fired (the scheduler task
//! does all three), or wait for room in a full queue (a Tokio task does, see [`hand_off`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;
use triggerfish_core::event::{ArrivalTime, EventRef};

use super::{Direct, SchedulerMetrics, Source, build_event, cluster};
use crate::dispatch::TryEnqueueError;
use crate::store::memory::MemoryStore;
use crate::store::{BrokerKey, Completion};

/// Ticks offered to a [`Direct`] broker at once, at most: a burst is offered in chunks, so
/// that its first ticks do not wait for the last ones.
const DIRECT_CHUNK: usize = 1024;

/// What a schedule's armed ticks look at when they come due.
#[derive(Default)]
pub(super) struct Gate {
    /// A tick is waiting for room in the target's queue: the next ones are skipped.
    busy: AtomicBool,
    /// The schedule was removed or replaced: its armed ticks must not fire.
    retired: AtomicBool,
}

impl Gate {
    /// Stops the schedule's armed ticks from firing.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

/// A prepared tick, with everything firing it needs.
pub(super) struct Armed {
    /// When it is due.
    pub tick: DateTime<Utc>,
    /// Its event.
    pub event: EventRef,
    /// Its schedule.
    pub source: Arc<Source>,
    /// Its schedule's gate.
    pub gate: Arc<Gate>,
}

/// Ticks to fire together, grouped by where they go.
#[derive(Default)]
pub(super) struct Burst {
    direct: Vec<DirectGroup>,
    other: Vec<Armed>,
}

/// A burst's ticks into one broker of this process.
struct DirectGroup {
    broker: BrokerKey,
    store: Arc<MemoryStore>,
    ticks: Vec<Armed>,
}

impl Burst {
    /// Adds a tick.
    pub(super) fn push(&mut self, armed: Armed) {
        let Some(Direct { broker, store }) = &armed.source.direct else {
            self.other.push(armed);
            return;
        };
        match self
            .direct
            .iter()
            .position(|g| Arc::ptr_eq(&g.store, store) && g.broker == *broker)
        {
            Some(i) => self.direct[i].ticks.push(armed),
            None => self.direct.push(DirectGroup {
                broker: Arc::clone(broker),
                store: Arc::clone(store),
                ticks: vec![armed],
            }),
        }
    }

    /// Adds another burst's ticks.
    fn append(&mut self, other: Burst) {
        for group in other.direct {
            for armed in group.ticks {
                self.push(armed);
            }
        }
        self.other.extend(other.other);
    }

    /// Whether it holds no tick.
    pub(super) fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.other.is_empty()
    }
}

/// What firing needs besides the ticks.
#[derive(Clone)]
pub(super) struct Firer {
    pub metrics: SchedulerMetrics,
    pub leader: watch::Receiver<cluster::Lease>,
}

impl Firer {
    /// Hands a burst's ticks over, unless this replica is not the leader.
    pub(super) fn fire(&self, burst: Burst) {
        if !self.leader.borrow().held(Instant::now()) {
            return;
        }
        let started = Instant::now();
        let woke = Utc::now();
        // Ticks offered straight to a broker enter it now (see `crate::store::arrival_now`).
        let arrival = ArrivalTime::from(woke);
        // Lateness is recorded once everything is handed over: (tick, moment, count).
        let mut handed: Vec<(DateTime<Utc>, DateTime<Utc>, u64)> = Vec::new();
        let mut chunk = Vec::with_capacity(DIRECT_CHUNK);
        let mut armed_chunk = Vec::with_capacity(DIRECT_CHUNK);
        for DirectGroup {
            broker,
            store,
            ticks,
        } in burst.direct
        {
            let mut ticks = ticks.into_iter().peekable();
            while ticks.peek().is_some() {
                for armed in ticks.by_ref() {
                    if armed.gate.retired.load(Ordering::Acquire) {
                        continue;
                    }
                    if armed.gate.busy.load(Ordering::Acquire) {
                        // Skipped and counted there.
                        self.hand_off(armed);
                        continue;
                    }
                    chunk.push(armed.event.stamped(arrival));
                    armed_chunk.push(armed);
                    if chunk.len() == DIRECT_CHUNK {
                        break;
                    }
                }
                if chunk.is_empty() {
                    continue;
                }
                self.offer_direct(&broker, &store, &mut chunk, &mut armed_chunk, &mut handed);
            }
        }
        for armed in burst.other {
            if !armed.gate.retired.load(Ordering::Acquire) {
                self.hand_off(armed);
            }
        }
        let took = started.elapsed();
        if let (Some(first), Some(last)) = (handed.first(), handed.last()) {
            tracing::debug!(
                ticks = handed.iter().map(|h| h.2).sum::<u64>(),
                took_us = took.as_micros() as u64,
                woke_late_us = (woke - first.0).num_microseconds(),
                last_late_us = (last.1 - last.0).num_microseconds(),
                "ticks offered to their brokers"
            );
        }
        for (tick, at, count) in handed {
            let lateness = lateness(tick, at);
            for _ in 0..count {
                self.metrics.lateness.observe(lateness);
            }
            record_max(&self.metrics, lateness);
        }
    }

    /// Offers one chunk to its broker; if the broker is full, each tick goes through its
    /// schedule's dispatcher instead, which waits, retries and dead-letters as the source's
    /// `delivery` says.
    fn offer_direct(
        &self,
        broker: &BrokerKey,
        store: &MemoryStore,
        chunk: &mut Vec<EventRef>,
        armed: &mut Vec<Armed>,
        handed: &mut Vec<(DateTime<Utc>, DateTime<Utc>, u64)>,
    ) {
        // As a delivery to a Broker sink: one hop.
        let ttl = crate::store::DEFAULT_TTL.saturating_sub(1);
        match store.try_offer_events(broker, chunk, Some(ttl)) {
            Ok(()) => {
                let at = Utc::now();
                self.metrics.ticks.inc_by(chunk.len() as u64);
                for a in armed.iter() {
                    match handed.last_mut() {
                        Some((tick, moment, count)) if *tick == a.tick && *moment == at => {
                            *count += 1
                        }
                        _ => handed.push((a.tick, at, 1)),
                    }
                }
                chunk.clear();
                armed.clear();
            }
            Err(e) => {
                tracing::debug!(broker = %broker, error = %e, ticks = chunk.len(), "ticks go through their dispatchers");
                chunk.clear();
                for a in armed.drain(..) {
                    self.hand_off(a);
                }
            }
        }
    }

    fn hand_off(&self, armed: Armed) {
        hand_off(
            &self.metrics,
            &armed.source,
            &armed.gate,
            armed.tick,
            Some(armed.event),
            false,
        );
    }
}

/// Ticks due at one moment, as the firing thread takes them: [`Burst`], or a plain list in
/// tests.
pub(super) trait Pile: Default + Send + 'static {
    /// One tick.
    type Item: Send;
    /// When `item` is due.
    fn due(item: &Self::Item) -> DateTime<Utc>;
    /// Adds a tick.
    fn push(&mut self, item: Self::Item);
    /// Adds another pile's ticks.
    fn append(&mut self, other: Self);
}

impl Pile for Burst {
    type Item = Armed;
    fn due(item: &Armed) -> DateTime<Utc> {
        item.tick
    }
    fn push(&mut self, item: Armed) {
        Burst::push(self, item);
    }
    fn append(&mut self, other: Burst) {
        Burst::append(self, other);
    }
}

/// Armed ticks by due time, shared by the scheduler task and the firing thread.
struct Armory<P> {
    /// Locked briefly: to arm a slice of prepared ticks, or to take the due ones.
    state: Mutex<ArmoryState<P>>,
    changed: Condvar,
}

struct ArmoryState<P> {
    piles: BTreeMap<DateTime<Utc>, P>,
    stopped: bool,
}

/// The scheduler task's end of the firing thread. Dropping it stops the thread.
pub(super) struct FiringThread<P: Pile = Burst> {
    armory: Arc<Armory<P>>,
}

impl FiringThread<Burst> {
    /// Starts the thread that fires bursts with `firer`. `runtime` runs the tasks that wait
    /// for room in a full queue.
    pub(super) fn start(firer: Firer, runtime: tokio::runtime::Handle) -> std::io::Result<Self> {
        FiringThread::spawn(move |burst| {
            let _runtime = runtime.enter();
            firer.fire(burst);
        })
    }
}

impl<P: Pile> FiringThread<P> {
    /// Starts a thread that calls `fire` with the ticks due, at their due time.
    fn spawn(mut fire: impl FnMut(P) + Send + 'static) -> std::io::Result<Self> {
        let armory = Arc::new(Armory {
            state: Mutex::new(ArmoryState {
                piles: BTreeMap::new(),
                stopped: false,
            }),
            changed: Condvar::new(),
        });
        let shared = Arc::clone(&armory);
        std::thread::Builder::new()
            .name("tf-scheduler-fire".into())
            .spawn(move || run(&shared, &mut fire))?;
        Ok(FiringThread { armory })
    }

    /// Arms prepared ticks; the thread wakes earlier if one of them is due before the
    /// earliest it was waiting for.
    pub(super) fn arm(&self, ticks: Vec<P::Item>) {
        if ticks.is_empty() {
            return;
        }
        let mut state = self.armory.state.lock();
        let earliest = state.piles.first_key_value().map(|(t, _)| *t);
        let mut sooner = false;
        for item in ticks {
            let due = P::due(&item);
            sooner |= earliest.is_none_or(|e| due < e);
            state.piles.entry(due).or_default().push(item);
        }
        drop(state);
        if sooner {
            self.armory.changed.notify_one();
        }
    }
}

impl<P: Pile> Drop for FiringThread<P> {
    fn drop(&mut self) {
        self.armory.state.lock().stopped = true;
        self.armory.changed.notify_one();
    }
}

/// The firing thread: sleeps until the earliest pile is due, then fires every pile due.
fn run<P: Pile>(armory: &Armory<P>, fire: &mut impl FnMut(P)) {
    let mut state = armory.state.lock();
    loop {
        if state.stopped {
            return;
        }
        let Some(&due) = state.piles.keys().next() else {
            armory.changed.wait(&mut state);
            continue;
        };
        let now = Utc::now();
        if due > now {
            let wait = (due - now).to_std().unwrap_or_default();
            armory.changed.wait_for(&mut state, wait);
            continue;
        }
        // Everything due now, in one pile; the first (usually the only one) as it is.
        let mut pile = state.piles.pop_first().map(|(_, p)| p).unwrap_or_default();
        while let Some(entry) = state.piles.first_entry() {
            if *entry.key() > now {
                break;
            }
            pile.append(entry.remove());
        }
        drop(state);
        tracing::trace!(
            late_us = (now - due).num_microseconds(),
            "firing thread woke"
        );
        fire(pile);
        state = armory.state.lock();
    }
}

/// Hands a tick's event (`prepared`, else built now) to the schedule's target queue. When
/// the queue is full a task waits for room, and until it got it the schedule's next ticks are
/// skipped (`busy`), so ticks never pile up without bound.
pub(super) fn hand_off(
    metrics: &SchedulerMetrics,
    source: &Source,
    gate: &Arc<Gate>,
    tick: DateTime<Utc>,
    prepared: Option<EventRef>,
    late: bool,
) {
    if gate.busy.load(Ordering::Acquire) {
        metrics.skipped.inc();
        tracing::warn!(schedule = %source.key, tick = %tick, "tick skipped: the previous one is still waiting for its sink's queue");
        return;
    }
    let Some(event) = prepared.or_else(|| build_event(source, tick, late)) else {
        return;
    };
    metrics.ticks.inc();
    let ttl = crate::store::DEFAULT_TTL;
    match source
        .target
        .try_enqueue(event, ttl, Instant::now(), Completion::none())
    {
        Ok(()) => observe_lateness(metrics, tick),
        Err(TryEnqueueError::Closed) => {}
        Err(TryEnqueueError::Full(event, completion)) => {
            gate.busy.store(true, Ordering::Release);
            let (target, gate, metrics) = (
                Arc::clone(&source.target),
                Arc::clone(gate),
                metrics.clone(),
            );
            tokio::spawn(async move {
                if target
                    .enqueue(event, ttl, Instant::now(), completion)
                    .await
                    .is_ok()
                {
                    observe_lateness(&metrics, tick);
                }
                gate.busy.store(false, Ordering::Release);
            });
        }
    }
}

/// Records how late a tick reached its delivery queue.
fn observe_lateness(metrics: &SchedulerMetrics, tick: DateTime<Utc>) {
    let lateness = lateness(tick, Utc::now());
    metrics.lateness.observe(lateness);
    record_max(metrics, lateness);
}

fn lateness(tick: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (at - tick).to_std().unwrap_or_default().as_secs_f64()
}

fn record_max(metrics: &SchedulerMetrics, lateness: f64) {
    // A monotonic maximum: f64 bits of non-negative numbers order like the numbers.
    let _ = metrics
        .lateness_max
        .inner()
        .fetch_max(lateness.to_bits(), Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Ticks named by a number, fired as a list.
    impl Pile for Vec<(DateTime<Utc>, u32)> {
        type Item = (DateTime<Utc>, u32);
        fn due(item: &Self::Item) -> DateTime<Utc> {
            item.0
        }
        fn push(&mut self, item: Self::Item) {
            Vec::push(self, item);
        }
        fn append(&mut self, other: Self) {
            self.extend(other);
        }
    }

    type Ticks = Vec<(DateTime<Utc>, u32)>;
    /// When a pile was fired, and the pile.
    type Fired = (DateTime<Utc>, Ticks);

    fn thread() -> (FiringThread<Ticks>, mpsc::Receiver<Fired>) {
        let (tx, rx) = mpsc::channel();
        let thread = FiringThread::spawn(move |pile| {
            let _ = tx.send((Utc::now(), pile));
        })
        .unwrap();
        (thread, rx)
    }

    fn ms(n: i64) -> chrono::Duration {
        chrono::Duration::milliseconds(n)
    }

    #[test]
    fn ticks_fire_at_their_time_and_not_before() {
        let (thread, fired) = thread();
        let now = Utc::now();
        thread.arm(vec![
            (now + ms(300), 2),
            (now + ms(100), 1),
            (now + ms(100), 3),
        ]);
        let (at, pile) = fired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(pile, vec![(now + ms(100), 1), (now + ms(100), 3)]);
        assert!(at >= now + ms(100), "fired {} early", now + ms(100) - at);
        let (at, pile) = fired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(pile, vec![(now + ms(300), 2)]);
        assert!(at >= now + ms(300), "fired {} early", now + ms(300) - at);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // A plain thread: let the firing thread fall asleep.
    fn an_earlier_tick_wakes_a_thread_waiting_for_a_later_one() {
        let (thread, fired) = thread();
        let now = Utc::now();
        thread.arm(vec![(now + chrono::Duration::hours(1), 1)]);
        std::thread::sleep(Duration::from_millis(50));
        thread.arm(vec![(now + ms(100), 2)]);
        let (_, pile) = fired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(pile, vec![(now + ms(100), 2)]);
    }

    #[test]
    fn ticks_already_due_fire_together_in_due_order() {
        let (thread, fired) = thread();
        let now = Utc::now();
        thread.arm(vec![
            (now - ms(20), 2),
            (now - ms(30), 1),
            (now - ms(20), 3),
        ]);
        let (_, pile) = fired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            pile,
            vec![(now - ms(30), 1), (now - ms(20), 2), (now - ms(20), 3)]
        );
    }

    #[test]
    fn dropping_the_handle_stops_the_thread_and_fires_nothing_more() {
        let (thread, fired) = thread();
        thread.arm(vec![(Utc::now() + ms(200), 1)]);
        drop(thread);
        // The thread dropped its closure, and with it the sender, without firing.
        assert_eq!(
            fired.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
