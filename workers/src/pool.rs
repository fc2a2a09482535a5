//! A worker pool: a bounded queue in front of N OS threads, each with its own model
//! sessions, running one job at a time.
//!
//! [`WorkerPool::submit`] never blocks: it parses the event, and either answers at once (an
//! event that is not a job gets its `.failed` reply; an object under the output prefix is
//! ignored, so that artifacts never trigger jobs), or queues the job, or returns [`Full`]
//! when `queueLimit` jobs are already waiting — the router maps that to a retryable
//! "unavailable", so the trigger's retries and the broker's backpressure apply. The
//! [`JobHandle`] it returns is a future (a `tokio` oneshot underneath) that resolves to the
//! job's [`JobOutput`] when a thread has run it; awaiting it never blocks the runtime.
//!
//! Each job runs inside `catch_unwind` on its thread: a panic (a bug, or a library failing
//! on hostile input) becomes an `internal_error` reply, the thread rebuilds its sessions and
//! goes on. No thread is lost and the process does not crash.
//!
//! Dropping the pool stops it: queued jobs are answered `internal_error` ("shut down"),
//! running ones stop at their next deadline check. [`WorkerPool::shutdown`] does the same and
//! waits for the threads (call it from a blocking context).

use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use triggerfish_core::config::{
    ExecutionProviderKind, MediaPipeline, ObjectStoreSpec, WorkerPoolSpec,
};
use triggerfish_core::event::{EventBatch, EventRef, EventView};

use crate::infer::{ExecutionProvider, InferError, ModelRegistry};
use crate::jobs::{FailureReason, InputEvent, Job, JobError, parse_request};
use crate::limits::{Deadline, Limits};
use crate::native::Locator;
use crate::pipelines::{self, ArtifactError, Artifacts, Models, Options, Pipeline, Summary};
use crate::store::{Location, Store, StoreError};

/// The output prefix when the config sets none.
pub const DEFAULT_OUTPUT_PREFIX: &str = "triggerfish-media";

/// A pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// ONNX Runtime or a model could not be found or loaded.
    #[error("worker pool {pool}: {source}")]
    Infer {
        /// The pool.
        pool: String,
        /// Why.
        source: InferError,
    },
    /// The object store cannot work as configured.
    #[error("worker pool {pool}: {source}")]
    Store {
        /// The pool.
        pool: String,
        /// Why.
        source: StoreError,
    },
    /// A setting is out of range.
    #[error("worker pool {pool}: {message}")]
    Config {
        /// The pool.
        pool: String,
        /// What is wrong.
        message: String,
    },
    /// A thread could not be started.
    #[error("worker pool {pool}: cannot start a thread: {source}")]
    Thread {
        /// The pool.
        pool: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The queue is full: the job was not accepted. Retry later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("worker pool {pool} is full: {queued} jobs are waiting")]
pub struct Full {
    /// The pool.
    pub pool: String,
    /// Jobs waiting.
    pub queued: usize,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It completed; the reply is `dev.triggerfish.media.completed`.
    Completed,
    /// It failed; the reply is `dev.triggerfish.media.failed` with this reason.
    Failed(FailureReason),
    /// The object is one of this pool's artifacts (under its output prefix): no job, no reply.
    Ignored,
}

/// What a [`JobHandle`] resolves to.
#[derive(Debug)]
pub struct JobOutput {
    /// The job id (`mediajobid` of the reply).
    pub job_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The reply event; `None` only for [`Outcome::Ignored`].
    pub reply: Option<EventBatch>,
}

impl JobOutput {
    /// The reply event, if any.
    pub fn into_reply(self) -> Option<EventBatch> {
        self.reply
    }
}

/// A job's result, to await. Dropping it does not cancel the job.
#[derive(Debug)]
pub struct JobHandle {
    job_id: String,
    state: HandleState,
}

#[derive(Debug)]
enum HandleState {
    Ready(Option<JobOutput>),
    Waiting(oneshot::Receiver<JobOutput>),
}

impl JobHandle {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    fn ready(output: JobOutput) -> JobHandle {
        JobHandle {
            job_id: output.job_id.clone(),
            state: HandleState::Ready(Some(output)),
        }
    }
}

impl Future for JobHandle {
    type Output = JobOutput;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<JobOutput> {
        let job_id = self.job_id.clone();
        match &mut self.state {
            HandleState::Ready(output) => match output.take() {
                Some(output) => Poll::Ready(output),
                // Polled after completion: answer again rather than panic.
                None => Poll::Ready(lost(&job_id)),
            },
            HandleState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(output)) => Poll::Ready(output),
                // The thread dropped the sender without answering: only when the pool is
                // gone.
                Poll::Ready(Err(_)) => Poll::Ready(lost(&job_id)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

fn lost(job_id: &str) -> JobOutput {
    JobOutput {
        job_id: job_id.to_owned(),
        outcome: Outcome::Failed(FailureReason::InternalError),
        reply: None,
    }
}

/// Everything a pool is built from, in this crate's terms (see [`PoolSettings::from_spec`]).
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Worker threads.
    pub threads: NonZeroUsize,
    /// Jobs that may wait.
    pub queue_limit: NonZeroUsize,
    /// Pipeline options (limits, frame interval, …).
    pub options: Options,
    /// Where ONNX Runtime and the models are.
    pub locator: Locator,
    /// CPU or CUDA.
    pub provider: ExecutionProvider,
    /// The object store.
    pub object_store: ObjectStoreSpec,
    /// Artifacts go under `<output_prefix>/<key>/`.
    pub output_prefix: String,
}

impl PoolSettings {
    /// Settings from a `WorkerPool` spec, defaults filled in.
    pub fn from_spec(spec: &WorkerPoolSpec) -> PoolSettings {
        let threads = spec
            .threads
            .and_then(|t| NonZeroUsize::new(t.get() as usize))
            .unwrap_or(NonZeroUsize::MIN);
        let queue_limit = spec
            .queue_limit
            .and_then(|q| NonZeroUsize::new(q.get() as usize))
            .or_else(|| threads.checked_mul(NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN)))
            .unwrap_or(NonZeroUsize::MIN);
        let defaults = Limits::default();
        let l = &spec.limits;
        let limits = Limits {
            max_input_bytes: l
                .max_input_bytes
                .map_or(defaults.max_input_bytes, |b| b.bytes()),
            max_duration: l.max_duration.map_or(defaults.max_duration, |d| d.get()),
            max_pixels: l.max_pixels.map_or(defaults.max_pixels, |p| p.get()),
            max_wall_time: l.max_wall_time.map_or(defaults.max_wall_time, |d| d.get()),
        };
        let mut options = Options {
            limits,
            ..Options::default()
        };
        if let Some(interval) = spec.frame_interval {
            options.frame_interval = interval.get();
        }
        PoolSettings {
            pipeline: match spec.pipeline {
                MediaPipeline::Probe => Pipeline::Probe,
                MediaPipeline::Audio => Pipeline::Audio,
                MediaPipeline::Video => Pipeline::Video,
            },
            threads,
            queue_limit,
            options,
            locator: Locator::from_env(spec.models.onnxruntime.clone(), spec.models.dir.clone()),
            provider: match spec.execution_provider {
                ExecutionProviderKind::Cpu => ExecutionProvider::Cpu,
                ExecutionProviderKind::Cuda => ExecutionProvider::Cuda,
            },
            object_store: spec.object_store.clone(),
            output_prefix: spec
                .output_prefix
                .clone()
                .map(|p| p.trim_matches('/').to_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_OUTPUT_PREFIX.to_owned()),
        }
    }
}

/// A running pool.
pub struct WorkerPool {
    name: String,
    shared: Arc<Shared>,
    sender: Option<Sender<Task>>,
    receiver: Receiver<Task>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("name", &self.name)
            .field("pipeline", &self.shared.settings.pipeline)
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// What the threads share.
struct Shared {
    /// Runs one job; [`execute`], or a fault-injecting one in tests.
    executor: Executor,
    name: String,
    source: String,
    settings: PoolSettings,
    store: Store,
    registry: ModelRegistry,
    cancel: Arc<AtomicBool>,
    metrics: PoolHandles,
}

type ExecResult = Result<(Summary, Option<String>), (JobError, Option<String>)>;
type Executor = fn(&Shared, &Job, &mut Models) -> ExecResult;

struct Task {
    job: Job,
    reply: oneshot::Sender<JobOutput>,
}

impl WorkerPool {
    /// Starts the pool `name` (`namespace/name`) described by a `WorkerPool` spec: finds and
    /// loads ONNX Runtime and the models, builds the object store, starts the threads, and
    /// returns once every thread has built its sessions (so a broken model fails here).
    pub fn start(
        name: &str,
        spec: &WorkerPoolSpec,
        metrics: &MediaMetrics,
    ) -> Result<WorkerPool, BuildError> {
        WorkerPool::start_with(name, PoolSettings::from_spec(spec), metrics)
    }

    /// Starts a pool from explicit settings.
    pub fn start_with(
        name: &str,
        settings: PoolSettings,
        metrics: &MediaMetrics,
    ) -> Result<WorkerPool, BuildError> {
        WorkerPool::start_with_executor(name, settings, metrics, execute)
    }

    fn start_with_executor(
        name: &str,
        settings: PoolSettings,
        metrics: &MediaMetrics,
        executor: Executor,
    ) -> Result<WorkerPool, BuildError> {
        crate::decode::init();
        let pool = name.to_owned();
        let store = Store::new(&settings.object_store).map_err(|source| BuildError::Store {
            pool: pool.clone(),
            source,
        })?;
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let intra = (cores / settings.threads.get()).max(1);
        let registry = ModelRegistry::load(
            &settings.locator,
            settings.pipeline.needs(),
            settings.provider,
            intra,
        )
        .map_err(|source| BuildError::Infer {
            pool: pool.clone(),
            source,
        })?;
        let (sender, receiver) = channel::bounded::<Task>(settings.queue_limit.get());
        let shared = Arc::new(Shared {
            executor,
            name: pool.clone(),
            source: format!("/triggerfish/workerpools/{name}"),
            store,
            registry,
            cancel: Arc::new(AtomicBool::new(false)),
            metrics: metrics.handles(name, settings.pipeline),
            settings,
        });
        let (ready_tx, ready_rx) = channel::unbounded::<Result<(), InferError>>();
        let mut threads = Vec::new();
        for i in 0..shared.settings.threads.get() {
            let shared = Arc::clone(&shared);
            let receiver = receiver.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tf-media-{i}"))
                .spawn(move || worker(shared, receiver, ready))
                .map_err(|source| BuildError::Thread {
                    pool: pool.clone(),
                    source,
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut pool_value = WorkerPool {
            name: pool.clone(),
            shared,
            sender: Some(sender),
            receiver,
            threads,
        };
        for _ in 0..pool_value.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    pool_value.stop();
                    return Err(BuildError::Infer { pool, source });
                }
                Err(_) => {
                    pool_value.stop();
                    return Err(BuildError::Config {
                        pool,
                        message: "a worker thread exited while starting".into(),
                    });
                }
            }
        }
        tracing::info!(
            pool = %pool_value.name,
            pipeline = %pool_value.shared.settings.pipeline,
            threads = pool_value.threads.len(),
            queue_limit = pool_value.shared.settings.queue_limit.get(),
            "worker pool started"
        );
        Ok(pool_value)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.shared.settings
    }

    /// Jobs waiting for a thread.
    pub fn queue_depth(&self) -> usize {
        self.receiver.len()
    }

    /// Queues a job for `event` (an owned handle into a received batch); see the module docs.
    pub fn submit(&self, event: EventRef) -> Result<JobHandle, Full> {
        self.submit_view(&event.view())
    }

    /// Queues a job for a borrowed event (what it needs is copied out).
    pub fn submit_view(&self, view: &EventView<'_>) -> Result<JobHandle, Full> {
        let shared = &self.shared;
        let mut job = Job {
            id: Job::new_id(),
            source: shared.source.clone(),
            pipeline: shared.settings.pipeline,
            input: InputEvent::from_view(view),
            request: None,
        };
        let request = match parse_request(view) {
            Ok(request) => request,
            Err(e) => {
                let error = JobError::from(e);
                shared
                    .metrics
                    .finished(Outcome::Failed(error.reason), None, 0.0);
                let reply = job.failed(&error, None);
                return Ok(JobHandle::ready(JobOutput {
                    job_id: job.id,
                    outcome: Outcome::Failed(error.reason),
                    reply: Some(reply),
                }));
            }
        };
        if let Location::Object { key, .. } = &request.location {
            let prefix = &shared.settings.output_prefix;
            if key.starts_with(prefix.as_str()) && key[prefix.len()..].starts_with('/') {
                shared.metrics.finished(Outcome::Ignored, None, 0.0);
                return Ok(JobHandle::ready(JobOutput {
                    job_id: job.id,
                    outcome: Outcome::Ignored,
                    reply: None,
                }));
            }
        }
        job.request = Some(request);
        let job_id = job.id.clone();
        let (tx, rx) = oneshot::channel();
        let Some(sender) = &self.sender else {
            return Err(Full {
                pool: self.name.clone(),
                queued: 0,
            });
        };
        match sender.try_send(Task { job, reply: tx }) {
            Ok(()) => {
                shared.metrics.queue_depth.set(self.receiver.len() as i64);
                Ok(JobHandle {
                    job_id,
                    state: HandleState::Waiting(rx),
                })
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                shared.metrics.rejected.inc();
                Err(Full {
                    pool: self.name.clone(),
                    queued: self.receiver.len(),
                })
            }
        }
    }

    /// Stops the pool and waits for its threads. Blocks: call it from a blocking context.
    pub fn shutdown(mut self) {
        self.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn stop(&mut self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.sender = None;
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Not joined here: drop may run on an async runtime. The threads see the closed
        // queue and the cancel flag and exit on their own.
        self.stop();
    }
}

fn worker(shared: Arc<Shared>, receiver: Receiver<Task>, ready: Sender<Result<(), InferError>>) {
    let mut models = match Models::load(&shared.registry, shared.settings.pipeline) {
        Ok(models) => {
            let _ = ready.send(Ok(()));
            Some(models)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    while let Ok(task) = receiver.recv() {
        shared.metrics.queue_depth.set(receiver.len() as i64);
        let Task { job, reply } = task;
        if shared.cancel.load(Ordering::Relaxed) {
            let error = JobError::new(FailureReason::InternalError, "the worker pool shut down");
            let _ = reply.send(JobOutput {
                job_id: job.id.clone(),
                outcome: Outcome::Failed(error.reason),
                reply: Some(job.failed(&error, None)),
            });
            continue;
        }
        shared.metrics.running.inc();
        let started = Instant::now();
        let result = match models.as_mut() {
            Some(m) => std::panic::catch_unwind(AssertUnwindSafe(|| (shared.executor)(&shared, &job, m)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    tracing::error!(pool = %shared.name, job = %job.id, panic = %what, "job panicked; rebuilding sessions");
                    // Sessions may be mid-run: start afresh.
                    models = None;
                    Err((JobError::new(FailureReason::InternalError, format!("the job panicked: {what}")), None))
                }),
            None => Err((JobError::new(FailureReason::InternalError, "model sessions are unavailable"), None)),
        };
        if models.is_none() {
            models = match Models::load(&shared.registry, shared.settings.pipeline) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(pool = %shared.name, error = %e, "cannot rebuild model sessions");
                    None
                }
            };
        }
        let elapsed = started.elapsed();
        shared.metrics.running.dec();
        let output = match result {
            Ok((summary, uri)) => {
                shared
                    .metrics
                    .finished(Outcome::Completed, Some(elapsed), summary.media_seconds);
                tracing::info!(pool = %shared.name, job = %job.id, seconds = elapsed.as_secs_f64(), media_seconds = summary.media_seconds, "job completed");
                JobOutput {
                    job_id: job.id.clone(),
                    outcome: Outcome::Completed,
                    reply: Some(job.completed(&summary, uri)),
                }
            }
            Err((error, uri)) => {
                shared
                    .metrics
                    .finished(Outcome::Failed(error.reason), Some(elapsed), 0.0);
                tracing::info!(pool = %shared.name, job = %job.id, reason = %error.reason, error = %error.message, "job failed");
                JobOutput {
                    job_id: job.id.clone(),
                    outcome: Outcome::Failed(error.reason),
                    reply: Some(job.failed(&error, uri)),
                }
            }
        };
        // The submitter may have gone away (the router timed out); that is fine.
        let _ = reply.send(output);
    }
}

/// Runs one job: fetch, pipeline, artifacts. Returns the summary and the input's URI, or the
/// error and (when known) the input's URI.
fn execute(shared: &Shared, job: &Job, models: &mut Models) -> ExecResult {
    let limits = &shared.settings.options.limits;
    let deadline = Deadline::after(limits.max_wall_time, Arc::clone(&shared.cancel));
    let Some(request) = &job.request else {
        return Err((
            JobError::new(FailureReason::InvalidRequest, "no request"),
            None,
        ));
    };
    let (bucket, key) = match shared.store.resolve(&request.location) {
        Ok(found) => found,
        Err(e) => return Err((e.into(), None)),
    };
    let uri = Some(shared.store.uri(&bucket, &key));
    let fail = |e: JobError| {
        // Whatever broke, a job past its wall time is a timeout.
        let e = if deadline.check() == Err(crate::limits::Stop::Deadline) {
            JobError::new(
                FailureReason::Timeout,
                format!("the job ran past limits.maxWallTime ({e})"),
            )
        } else {
            e
        };
        (e, uri.clone())
    };
    if let Some(size) = request.size
        && size > limits.max_input_bytes
    {
        return Err(fail(JobError {
            reason: FailureReason::LimitExceeded,
            limit: Some(crate::limits::Limit::MaxInputBytes),
            message: format!(
                "the notification says {size} bytes, over {}",
                limits.max_input_bytes
            ),
        }));
    }
    let location = Location::Object {
        bucket: bucket.clone(),
        key: key.clone(),
    };
    let input = shared
        .store
        .fetch(&location, limits.max_input_bytes, &deadline)
        .map_err(|e| fail(e.into()))?;
    let mut artifacts = StoreArtifacts {
        store: &shared.store,
        bucket: &bucket,
        prefix: format!("{}/{key}", shared.settings.output_prefix),
        deadline: &deadline,
    };
    let summary = pipelines::run(
        shared.settings.pipeline,
        input.path(),
        &shared.settings.options,
        models,
        &mut artifacts,
        &deadline,
        &mut |_| {},
    )
    .map_err(|e| fail(e.into()))?;
    Ok((summary, uri))
}

/// Artifacts written to the pool's store under `<prefix>/`.
struct StoreArtifacts<'a> {
    store: &'a Store,
    bucket: &'a str,
    prefix: String,
    deadline: &'a Deadline,
}

impl Artifacts for StoreArtifacts<'_> {
    fn put(
        &mut self,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ArtifactError> {
        let key = format!("{}/{name}", self.prefix);
        self.store
            .put(self.bucket, &key, content_type, bytes, self.deadline)
            .map_err(|e| ArtifactError {
                name: name.to_owned(),
                message: e.to_string(),
            })
    }
}

/// The media metrics of every pool of a process, registered once with the router's registry
/// (see [`MediaMetrics::register`]):
///
/// | metric | type | labels |
/// |---|---|---|
/// | `triggerfish_media_jobs_total` | counter | `pool`, `pipeline`, `outcome` (`completed`, a failure reason, `ignored`) |
/// | `triggerfish_media_jobs_rejected_total` | counter | `pool`, `pipeline` (queue full) |
/// | `triggerfish_media_queue_depth` | gauge | `pool`, `pipeline` (jobs waiting) |
/// | `triggerfish_media_jobs_running` | gauge | `pool`, `pipeline` |
/// | `triggerfish_media_processed_seconds_total` | counter | `pool`, `pipeline` (seconds of media in completed jobs) |
/// | `triggerfish_media_job_duration_seconds` | histogram | `pool`, `pipeline` (wall time of finished jobs) |
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    jobs: Family<OutcomeLabels, Counter>,
    rejected: Family<PoolLabels, Counter>,
    queue_depth: Family<PoolLabels, Gauge>,
    running: Family<PoolLabels, Gauge>,
    processed: Family<PoolLabels, Counter<f64, AtomicU64>>,
    duration: Family<PoolLabels, Histogram, fn() -> Histogram>,
}

impl Default for MediaMetrics {
    fn default() -> Self {
        MediaMetrics {
            jobs: Family::default(),
            rejected: Family::default(),
            queue_depth: Family::default(),
            running: Family::default(),
            processed: Family::default(),
            // 50 ms to about 27 minutes.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 16))
            }),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    pipeline: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    pool: String,
    pipeline: &'static str,
    outcome: OutcomeLabel,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct OutcomeLabel(Outcome);

impl EncodeLabelValue for OutcomeLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self.0 {
            Outcome::Completed => "completed",
            Outcome::Ignored => "ignored",
            Outcome::Failed(reason) => reason.code(),
        })
    }
}

impl MediaMetrics {
    /// Empty metrics.
    pub fn new() -> MediaMetrics {
        MediaMetrics::default()
    }

    /// Registers the metrics with `registry`, under the sub-prefix `media`: in a registry
    /// whose prefix is `triggerfish` (the router's), the names are those of the type's docs.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("media");
        registry.register("jobs", "Media jobs by outcome", self.jobs.clone());
        registry.register(
            "jobs_rejected",
            "Media jobs refused because the pool's queue was full",
            self.rejected.clone(),
        );
        registry.register(
            "queue_depth",
            "Media jobs waiting for a worker thread",
            self.queue_depth.clone(),
        );
        registry.register("jobs_running", "Media jobs running", self.running.clone());
        registry.register(
            "processed_seconds",
            "Seconds of media processed by completed jobs",
            self.processed.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Wall-clock time of finished media jobs",
            self.duration.clone(),
        );
    }

    /// Jobs of `pool` that ended with `outcome` so far.
    pub fn jobs(&self, pool: &str, pipeline: Pipeline, outcome: Outcome) -> u64 {
        self.jobs
            .get_or_create(&OutcomeLabels {
                pool: pool.to_owned(),
                pipeline: pipeline.name(),
                outcome: OutcomeLabel(outcome),
            })
            .get()
    }

    /// Seconds of media `pool` processed so far.
    pub fn processed_seconds(&self, pool: &str, pipeline: Pipeline) -> f64 {
        self.processed
            .get_or_create(&PoolLabels {
                pool: pool.to_owned(),
                pipeline: pipeline.name(),
            })
            .get()
    }

    fn handles(&self, pool: &str, pipeline: Pipeline) -> PoolHandles {
        let labels = PoolLabels {
            pool: pool.to_owned(),
            pipeline: pipeline.name(),
        };
        PoolHandles {
            metrics: self.clone(),
            labels: labels.clone(),
            rejected: self.rejected.get_or_create_owned(&labels),
            queue_depth: self.queue_depth.get_or_create_owned(&labels),
            running: self.running.get_or_create_owned(&labels),
            processed: self.processed.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
        }
    }
}

/// One pool's metric handles.
struct PoolHandles {
    metrics: MediaMetrics,
    labels: PoolLabels,
    rejected: Counter,
    queue_depth: Gauge,
    running: Gauge,
    processed: Counter<f64, AtomicU64>,
    duration: Histogram,
}

impl PoolHandles {
    fn finished(&self, outcome: Outcome, elapsed: Option<Duration>, media_seconds: f64) {
        self.metrics
            .jobs
            .get_or_create(&OutcomeLabels {
                pool: self.labels.pool.clone(),
                pipeline: self.labels.pipeline,
                outcome: OutcomeLabel(outcome),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.duration.observe(elapsed.as_secs_f64());
        }
        if media_seconds > 0.0 {
            self.processed.inc_by(media_seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use triggerfish_core::config::LocalStoreSpec;
    use triggerfish_core::event::{DecodeLimits, decode_structured};

    use super::*;

    /// Panics on objects whose key contains "panic", runs the real job otherwise.
    fn faulty(shared: &Shared, job: &Job, models: &mut Models) -> ExecResult {
        if let Some(Request {
            location: Location::Object { key, .. },
            ..
        }) = &job.request
            && key.contains("panic")
        {
            panic!("injected fault for {key}");
        }
        execute(shared, job, models)
    }

    use crate::jobs::Request;

    #[test]
    fn a_panicking_job_is_answered_and_the_thread_lives_on() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("b")).unwrap();
        let settings = PoolSettings {
            pipeline: Pipeline::Probe,
            threads: NonZeroUsize::MIN,
            queue_limit: NonZeroUsize::new(4).unwrap(),
            options: Options::default(),
            locator: Locator::from_env(None, None),
            provider: ExecutionProvider::Cpu,
            object_store: ObjectStoreSpec::Local(LocalStoreSpec {
                root: root.path().to_path_buf(),
            }),
            output_prefix: DEFAULT_OUTPUT_PREFIX.into(),
        };
        let metrics = MediaMetrics::new();
        let pool = WorkerPool::start_with_executor("t/panic", settings, &metrics, faulty).unwrap();
        let event = |key: &str| {
            let json = format!(
                r#"{{"specversion":"1.0","id":"1","source":"x","type":"dev.triggerfish.media.requested","data":{{"uri":"s3://b/{key}"}}}}"#
            );
            decode_structured(Bytes::from(json), &DecodeLimits::default()).unwrap()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for key in ["panic-1.mp4", "panic-2.mp4", "missing.mp4"] {
            let batch = event(key);
            let output = rt.block_on(pool.submit_view(&batch.get(0).unwrap()).unwrap());
            let expected = if key.contains("panic") {
                FailureReason::InternalError
            } else {
                // The one thread survived both panics and ran this job for real.
                FailureReason::FetchFailed
            };
            assert_eq!(output.outcome, Outcome::Failed(expected), "{key}");
            assert!(output.reply.is_some());
        }
        assert_eq!(
            metrics.jobs(
                "t/panic",
                Pipeline::Probe,
                Outcome::Failed(FailureReason::InternalError)
            ),
            2
        );
        pool.shutdown();
    }
}
