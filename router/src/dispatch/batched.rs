//! Batch-at-a-time delivery, for unordered triggers whose subscriber takes batches: HTTP
//! subscribers with `spec.batch`, and QUIC subscribers.
//!
//! The dispatcher gathers queued jobs into batches itself ([`batch::gather`]: up to
//! `maxEvents`, 1 MiB and `linger`, with a bounded number of batches in flight) and runs one
//! task per batch. The task encodes the batch once and delivers it with Knative's semantics,
//! per event but in step:
//!
//! - every event of the batch is in the same attempt, so they share the attempt count,
//!   timeout, backoff and rate-limit tokens (one token per event);
//! - each event gets its own decision from its outcome (a QUIC ack can refuse some events
//!   and accept the rest): the successful ones are done, the ones to retry wait for the
//!   longest of their backoffs and go again together (re-encoded only if the set changed),
//!   and the ones to give up on are dead-lettered one by one, concurrently;
//! - a reply to a batch re-enters the broker once, with the lowest ttl of the batch's events
//!   and, when they share one, their trace context.
//!
//! What it saves over one task per event is the per-event machinery: a task, a timer, a
//! oneshot, a channel hop and a delivery slot. Ordered triggers keep one task per event
//! (`run_ordered`), so that two events of a key never share a batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::future::{Either, join_all};
use tokio::sync::mpsc;
use triggerfish_core::delivery::{Decision, TransportError};
use triggerfish_core::event::trace::{TraceContext, TraceHeaders};
use triggerfish_core::event::{EncodeOptions, encode_batched};

use super::{InFlight, Job, TriggerContext};
use crate::sinks::batch::{self, BatchSpec, Gathered};
use crate::sinks::{Attempt, BatchAttempt, BatchSink};
use crate::store::TTL_EXTENSION;

impl Gathered for Job {
    fn bytes(&self) -> usize {
        self.event.view().wire_size() + 1
    }
}

/// The dispatcher of an unordered trigger whose subscriber takes batches: gathers jobs until
/// the queue closes, and delivers each batch in a task of its own.
pub(super) async fn run(
    rx: mpsc::Receiver<Job>,
    ctx: Arc<TriggerContext>,
    sink: BatchSink,
    spec: BatchSpec,
) {
    let sink = Arc::new(sink);
    let tracker = ctx.tracker.clone();
    batch::gather(rx, spec, tracker, move |jobs| {
        let (ctx, sink) = (Arc::clone(&ctx), Arc::clone(&sink));
        async move { deliver(&ctx, &sink, jobs).await }
    })
    .await;
}

/// Delivers a batch of jobs: attempts until each is done, then dead-letters or drops the
/// ones given up on, and feeds back the reply.
async fn deliver(ctx: &TriggerContext, sink: &BatchSink, mut jobs: Vec<Job>) {
    ctx.in_flight.fetch_add(jobs.len(), Ordering::AcqRel);
    let _in_flight = InFlight(&ctx.in_flight, jobs.len());
    // Counted in flight first, so that none is ever counted nowhere (see `Router::undelivered`).
    for job in &mut jobs {
        drop(job.queued.take());
    }
    ctx.backlog.relieve();
    let opts = EncodeOptions {
        skip: &[TTL_EXTENSION],
        add: &[],
    };
    let mut number = 1;
    // The body and the trace context its events share, kept while the same events retry.
    let mut body: Option<(bytes::Bytes, Option<TraceHeaders>)> = None;
    while !jobs.is_empty() {
        let (payload, trace) = body.get_or_insert_with(|| {
            let views = || jobs.iter().map(|j| j.event.view());
            let trace = TraceContext::shared(views()).map(|c| c.to_headers());
            (encode_batched(views(), &opts), trace)
        });
        let (payload, trace) = (payload.clone(), trace.clone());
        ctx.wait_for_rate(jobs.len()).await;
        let ttl = jobs.iter().map(|j| j.ttl).min().unwrap_or(0);
        let attempt = sink
            .send(payload, jobs.len(), trace.as_ref(), &ctx.request(ttl))
            .await;
        let sent = jobs.len();
        let Some(again) = settle(ctx, number, jobs, attempt, ttl).await else {
            return;
        };
        tracing::debug!(trigger = %ctx.label.trigger, destination = %ctx.sink.describe(),
            events = again.jobs.len(), attempt = number, retry_in = ?again.after,
            "batch delivery attempt failed; retrying");
        if again.jobs.len() != sent {
            // Some events are done: the next attempt carries only the others.
            body = None;
        }
        tokio::time::sleep(again.after).await;
        number = again.number;
        jobs = again.jobs;
    }
}

/// The events of a batch to attempt again.
struct Again {
    jobs: Vec<Job>,
    /// The longest of their backoffs.
    after: Duration,
    /// The attempt's number.
    number: u32,
}

/// Decides each job's fate from its outcome in attempt `number` (of a batch whose lowest ttl
/// is `ttl`): finishes the delivered ones, dead-letters or drops the ones given up on, and
/// returns the ones to retry.
async fn settle(
    ctx: &TriggerContext,
    number: u32,
    jobs: Vec<Job>,
    attempt: BatchAttempt,
    ttl: u8,
) -> Option<Again> {
    let n = jobs.len();
    let (each, reply) = match attempt {
        BatchAttempt::Each(each) if each.len() == n => (each, None),
        BatchAttempt::Each(_) => {
            // A sink bug; never a success.
            let a = Attempt::Transport(TransportError::Protocol);
            ((0..n).map(|_| a.duplicate()).collect(), None)
        }
        BatchAttempt::All(a) => {
            let (a, reply) = ctx.take_reply(a);
            ((0..n).map(|_| a.duplicate()).collect::<Vec<_>>(), reply)
        }
    };
    // One draw for the batch: events with the same outcome get the same decision.
    let (now, at, draw) = (Instant::now(), SystemTime::now(), fastrand::u64(..));
    let mut again = Again {
        jobs: Vec::new(),
        after: Duration::ZERO,
        number: number + 1,
    };
    let mut delivered = Vec::new();
    let mut dead = Vec::new();
    for (job, attempt) in jobs.into_iter().zip(each) {
        match ctx
            .policy
            .next_attempt(number, &attempt.outcome(), at, draw)
        {
            Decision::Succeeded => {
                ctx.counters.success.inc();
                let latency = now.saturating_duration_since(job.accepted_at);
                ctx.counters.latency.observe(latency.as_secs_f64());
                delivered.push(job);
            }
            Decision::Retry {
                after,
                next_attempt,
                failure,
            } => {
                ctx.counters.failed(&failure);
                ctx.counters.retries.inc();
                again.after = again.after.max(after);
                again.number = next_attempt;
                again.jobs.push(job);
            }
            Decision::DeadLetter(dl) => {
                ctx.counters.failed(&dl.failure);
                dead.push((job, attempt, dl));
            }
        }
    }
    // The delivered jobs finish after their reply is in: a refused reply dead-letters them.
    let refused = match reply {
        Some(reply) if !delivered.is_empty() => {
            let answered = delivered.iter().map(|job| &job.event);
            let reply = super::continue_trace(*reply, answered, &ctx.reply_limits);
            ctx.reply(reply, ttl).await.err()
        }
        _ => None,
    };
    let answered = refused.iter().flat_map(|refused| {
        delivered
            .iter()
            .map(move |job| Either::Left(ctx.reply_refused(&job.event, refused, job.ttl)))
    });
    let failed = dead.iter().map(|(job, attempt, dl)| {
        Either::Right(ctx.dead_letter(&job.event, attempt, *dl, job.ttl))
    });
    join_all(answered.chain(failed)).await;
    for job in delivered
        .into_iter()
        .chain(dead.into_iter().map(|(job, ..)| job))
    {
        job.completion.finish();
    }
    ctx.backlog.relieve();
    (!again.jobs.is_empty()).then_some(again)
}
