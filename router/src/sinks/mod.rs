//! Destinations of deliveries: HTTP(S) subscribers, QUIC subscribers (another Triggerfish),
//! the built-in display and file sinks, Kafka and RocketMQ topics, and other brokers of the same
//! process.
//!
//! A sink makes one attempt and reports what happened as an [`Attempt`]. Retries, timeouts'
//! policy, dead-lettering and replies are the dispatcher's business ([`crate::dispatch`]), so
//! every sink gets Knative's semantics the same way.

pub mod batch;
pub mod display;
pub mod exec;
pub mod file;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod quic;
pub mod rocketmq;
pub mod scheduler;

use std::sync::Arc;

use ::http::StatusCode;
use bytes::Bytes;
use triggerfish_core::config::DeliveryFormat;
use triggerfish_core::delivery::{InternalError, Outcome, TransportError};
use triggerfish_core::event::trace::TraceHeaders;
use triggerfish_core::event::{EncodeOptions, EventBatch, EventRef};

use crate::republish::{Refused, Republisher};
use crate::store::{BrokerKey, arrival_now};

/// Where a trigger (or a dead-letter sink) delivers.
#[derive(Clone)]
pub enum Sink {
    /// An HTTP or HTTPS endpoint.
    Http(Box<http::HttpSink>),
    /// Another Triggerfish's QUIC ingress, in batches ([`batch`]).
    Quic(quic::QuicSink),
    /// Prints events to standard output.
    Display(Arc<display::DisplaySink>),
    /// Appends events to a JSON Lines file.
    File(Arc<file::FileSink>),
    /// Runs a program per event.
    Exec(Arc<exec::ExecSink>),
    /// Delays events and manages run-time schedules.
    Scheduler(crate::scheduler::SchedulerHandle),
    /// Runs a media job per event on a worker pool of this process.
    #[cfg(feature = "media")]
    WorkerPool(Arc<crate::media::WorkerPoolSink>),
    /// Produces events to a Kafka topic.
    Kafka(Arc<kafka::KafkaSink>),
    /// Produces events to a RocketMQ topic.
    RocketMq(Arc<rocketmq::RocketMqSink>),
    /// Publishes events to a broker of this process.
    Broker {
        /// The broker.
        key: BrokerKey,
        /// Publishes, waiting for room up to the attempt's timeout ([`crate::republish`]).
        publisher: Republisher,
        /// The trigger (`namespace/name`) whose deliveries publish here, if any: events it
        /// matches itself are refused at once while its queue is full.
        trigger: Option<Arc<str>>,
    },
}

/// A sink that takes whole batches: what [`Sink::batched`] returns.
#[derive(Clone)]
pub enum BatchSink {
    /// An HTTP subscriber in batched content mode.
    Http(Box<http::HttpSink>),
    /// A QUIC subscriber.
    Quic(quic::QuicSink),
}

impl BatchSink {
    /// Makes one attempt at `body`, a JSON array of `events` structured events that share the
    /// trace context `trace` (HTTP sends it as the W3C headers).
    pub async fn send(
        &self,
        body: Bytes,
        events: usize,
        trace: Option<&TraceHeaders>,
        req: &Request,
    ) -> BatchAttempt {
        match self {
            BatchSink::Http(h) => BatchAttempt::All(h.send_batch(body, trace, req).await),
            BatchSink::Quic(q) => q.send_batch(body, events, req).await,
        }
    }
}

impl Sink {
    /// The sink, as one that `trigger` (`namespace/name`) delivers to. Only a broker sink
    /// keeps it: a forward or dead letter that the trigger matches again cannot wait for room
    /// in its full queue, since only the trigger's own deliveries make room there.
    pub fn delivered_by(self, trigger: &str) -> Sink {
        match self {
            Sink::Broker { key, publisher, .. } => Sink::Broker {
                key,
                publisher,
                trigger: Some(Arc::from(trigger)),
            },
            sink => sink,
        }
    }

    /// The sink as one that takes whole batches, and how it gathers them: QUIC subscribers,
    /// and HTTP subscribers with `spec.batch`. `None` for the others.
    pub fn batched(&self) -> Option<(BatchSink, batch::BatchSpec)> {
        match self {
            Sink::Http(h) => {
                let spec = h.batches()?.clone();
                Some((BatchSink::Http(h.clone()), spec))
            }
            Sink::Quic(q) => Some((BatchSink::Quic(q.clone()), q.batches().clone())),
            _ => None,
        }
    }

    /// A short description for logs and the `knativeerrordest` extension.
    pub fn describe(&self) -> String {
        match self {
            Sink::Http(h) => h.url().to_string(),
            Sink::Quic(q) => q.url().to_owned(),
            Sink::Display(_) => "display:".to_owned(),
            Sink::File(f) => format!("file://{}", f.path().display()),
            Sink::Exec(e) => format!("exec:{}", e.name()),
            Sink::Scheduler(_) => "scheduler:default".to_owned(),
            #[cfg(feature = "media")]
            Sink::WorkerPool(w) => format!("workerpool:{}", w.name()),
            Sink::Kafka(k) => k.describe(),
            Sink::RocketMq(r) => r.describe(),
            Sink::Broker { key, .. } => format!("broker:{key}"),
        }
    }

    /// Makes one delivery attempt of `event`, with the extension changes in `opts`.
    ///
    /// Every delivery task carries this future, so rarely used sinks whose futures are
    /// large (exec, scheduler, RocketMQ, a broker) are boxed: the task stays the size of an HTTP attempt, and
    /// spawning it copies less.
    pub async fn send(&self, event: &EventRef, opts: &EncodeOptions<'_>, req: &Request) -> Attempt {
        let view = &event.view();
        match self {
            Sink::Http(h) => h.send(view, opts, req).await,
            Sink::Quic(q) => q.send(view, opts, req).await,
            Sink::Display(d) => d.send(view, opts).await,
            Sink::File(f) => f.send(view, opts).await,
            Sink::Exec(e) => Box::pin(e.send(view, opts)).await,
            Sink::Scheduler(h) => Box::pin(scheduler::send(h, view, req)).await,
            #[cfg(feature = "media")]
            Sink::WorkerPool(w) => w.send(view).await,
            Sink::Kafka(k) => k.send(view, opts, req.timeout).await,
            Sink::RocketMq(r) => Box::pin(r.send(view, opts, req.timeout)).await,
            Sink::Broker {
                key,
                publisher,
                trigger,
            } => {
                let Some(ttl) = req.ttl.checked_sub(1).filter(|t| *t > 0) else {
                    return Attempt::TtlExhausted;
                };
                let trigger = trigger.as_deref();
                // The other broker's ingress stamps the arrival, as Knative's would.
                let published = if opts.add.is_empty() {
                    // The event as it is (its buffers shared): the TTL travels beside it, not
                    // in it.
                    let event = [event.stamped(arrival_now())];
                    Box::pin(publisher.publish(key, &event, ttl, req.timeout, trigger)).await
                } else {
                    // Extensions to add (a dead letter): a new event.
                    let body = triggerfish_core::event::encode_structured(view, opts);
                    match triggerfish_core::event::decode_structured(body, &req.reply_limits) {
                        Ok(mut batch) => {
                            batch.stamp_arrival(arrival_now());
                            let events: Vec<EventRef> = Arc::new(batch).into_refs().collect();
                            Box::pin(publisher.publish(key, &events, ttl, req.timeout, trigger))
                                .await
                        }
                        Err(_) => return Attempt::Internal(InternalError::Encode),
                    }
                };
                match published {
                    Ok(()) => Attempt::accepted(),
                    Err(refused) => Attempt::refused(&refused),
                }
            }
        }
    }
}

/// Parameters of one attempt.
pub struct Request {
    /// Binary or structured mode, for HTTP.
    pub format: DeliveryFormat,
    /// Per-attempt timeout.
    pub timeout: std::time::Duration,
    /// Limits for decoding a reply.
    pub reply_limits: triggerfish_core::event::DecodeLimits,
    /// The event's remaining TTL.
    pub ttl: u8,
    /// Whether a reply is read: HTTP requests say `Prefer: reply` only then (a trigger's
    /// deliveries; not a source's, whose replies go nowhere, nor a dead letter's).
    pub wants_reply: bool,
    /// The broker the event came through (where replies and delayed events go).
    pub broker: BrokerKey,
}

/// The response of an HTTP subscriber (or its in-process equivalent).
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// Reply events, for a 2xx response whose body is a CloudEvent. Boxed: most responses
    /// carry none, and every attempt's outcome moves this struct around.
    pub reply: Option<Box<Result<EventBatch, String>>>,
    /// The start of the body of an error response, for `knativeerrordata`.
    pub body_excerpt: Bytes,
}

/// What one attempt at a batch came to (a batched request, or a QUIC frame).
pub enum BatchAttempt {
    /// One outcome for every event: an HTTP response, a frame refused whole, no answer.
    All(Attempt),
    /// An outcome per event, in the batch's order: a QUIC ack that names some events.
    Each(Vec<Attempt>),
}

/// What one attempt came to.
pub enum Attempt {
    /// The destination answered.
    Response(Response),
    /// No complete answer.
    Transport(TransportError),
    /// Our side failed.
    Internal(InternalError),
    /// A forward to another broker found the TTL used up.
    TtlExhausted,
}

impl Attempt {
    /// A successful in-process delivery.
    pub fn accepted() -> Attempt {
        Attempt::Response(Response {
            status: StatusCode::ACCEPTED,
            retry_after: None,
            reply: None,
            body_excerpt: Bytes::new(),
        })
    }

    /// What a broker's ingress would have answered a producer for `refused`: 429 (or 503) with
    /// the reason as the body, for `knativeerrordata`.
    pub fn refused(refused: &Refused) -> Attempt {
        Attempt::Response(Response {
            status: refused.status(),
            retry_after: None,
            reply: None,
            body_excerpt: Bytes::from(refused.to_string()),
        })
    }

    /// A 2xx response whose reply claimed to be a CloudEvent and is not one (`why`), as
    /// Knative's broker answers it: the attempt failed with 502 Bad Gateway, and the reason
    /// is the body, for `knativeerrordata`. The delivery policy retries it like any 5xx.
    pub fn invalid_reply(why: &str) -> Attempt {
        Attempt::Response(Response {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
            reply: None,
            body_excerpt: Bytes::from(format!("invalid reply: {why}")),
        })
    }

    /// The attempt without its reply events, and the reply.
    pub fn take_reply(mut self) -> (Attempt, Option<Box<Result<EventBatch, String>>>) {
        let reply = match &mut self {
            Attempt::Response(r) => r.reply.take(),
            _ => None,
        };
        (self, reply)
    }

    /// The same outcome, without reply events (which belong to one attempt only).
    pub fn duplicate(&self) -> Attempt {
        match self {
            Attempt::Response(r) => Attempt::Response(Response {
                status: r.status,
                retry_after: r.retry_after.clone(),
                reply: None,
                body_excerpt: r.body_excerpt.clone(),
            }),
            Attempt::Transport(t) => Attempt::Transport(*t),
            Attempt::Internal(i) => Attempt::Internal(*i),
            Attempt::TtlExhausted => Attempt::TtlExhausted,
        }
    }

    /// The outcome for the delivery policy.
    pub fn outcome(&self) -> Outcome<'_> {
        match self {
            Attempt::Response(r) => Outcome::Response {
                status: r.status,
                retry_after: r.retry_after.as_deref(),
            },
            Attempt::Transport(t) => Outcome::Transport(*t),
            Attempt::Internal(i) => Outcome::Internal(*i),
            // Not retryable: the loop will not end by retrying.
            Attempt::TtlExhausted => Outcome::Internal(InternalError::Encode),
        }
    }
}
