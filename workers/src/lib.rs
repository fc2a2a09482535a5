//! Media worker pools: audio and video jobs triggered by object-storage events, with FFmpeg
//! decoding (`ffmpeg-next`) and ONNX inference (`ort`) on the pools' own OS threads.
//!
//! An object-created event (OSS, S3-style, or an explicit `dev.triggerfish.media.requested`)
//! names an object; a [`WorkerPool`] fetches it from its object store (a local directory or
//! an S3-compatible endpoint), runs its pipeline — `probe`, `audio` (Silero VAD speech
//! segments) or `video` (sampled frames, thumbnails, sprite sheet, PP-OCRv4 text, and VAD on
//! the sound track) — writes the artifacts back under `<outputPrefix>/<key>/`, and answers
//! with one reply event: `dev.triggerfish.media.completed` or `dev.triggerfish.media.failed`
//! with a reason code (see [`jobs`]).
//!
//! # API for the router
//!
//! ```no_run
//! # async fn f(spec: &triggerfish_core::config::WorkerPoolSpec, event: triggerfish_core::event::EventRef) {
//! use triggerfish_workers::{MediaMetrics, WorkerPool};
//!
//! // Once per process: the metric families every pool reports into.
//! let metrics = MediaMetrics::new();
//! // metrics.register(&mut registry);
//!
//! // Per `WorkerPool` resource. Blocks while ONNX Runtime and the models load (run it on a
//! // blocking thread); fails with a message that names what is missing and the command that
//! // installs it (`scripts/dev setup`).
//! let pool = WorkerPool::start("media/transcode", spec, &metrics).expect("pool");
//!
//! // Per delivered event: never blocks.
//! match pool.submit(event) {
//!     // Await without blocking; the output's reply goes back into the broker.
//!     Ok(handle) => {
//!         let output = handle.await;
//!         if let Some(reply) = output.into_reply() { /* publish it */ }
//!     }
//!     // The queue is full: answer "unavailable" (retryable), so backpressure applies.
//!     Err(full) => { /* 503 */ }
//! }
//! # }
//! ```
//!
//! - [`WorkerPool::start`] / [`WorkerPool::start_with`] → [`WorkerPool`] or [`BuildError`].
//! - [`WorkerPool::submit`] (an [`EventRef`](triggerfish_core::event::EventRef)) or
//!   [`WorkerPool::submit_view`] → [`JobHandle`] or [`Full`].
//! - [`JobHandle`] is a `Future<Output = JobOutput>`; [`JobOutput::into_reply`] gives the
//!   reply [`EventBatch`](triggerfish_core::event::EventBatch) (absent only for objects under
//!   the pool's own output prefix, which are ignored so artifacts never trigger jobs).
//! - [`MediaMetrics`]: jobs by outcome, queue depth, running jobs, seconds of media
//!   processed, job duration; [`MediaMetrics::register`] adds them to a
//!   `prometheus-client` registry.
//! - [`run_file`] runs a pipeline on a local file with a progress callback, writing
//!   artifacts into a directory: for `triggerfish media run`.
//! - Dropping a pool stops it without blocking; [`WorkerPool::shutdown`] also joins its
//!   threads.
//!
//! # Modules
//!
//! - [`native`]: finding the ONNX Runtime library and the models (explicit path, then
//!   environment, then the cache `scripts/dev setup` fills).
//! - [`decode`]: FFmpeg: open, probe, one pass of 16 kHz mono audio and sampled BGR frames.
//! - [`infer`]: the ONNX Runtime environment, per-thread sessions, Silero VAD and PP-OCRv4.
//! - [`pipelines`]: `probe`, `audio`, `video` as synchronous functions of a local file.
//! - [`jobs`]: events to requests, errors to reason codes, results to reply events.
//! - [`store`]: reading inputs and writing artifacts (local directory or S3-compatible).
//! - [`pool`]: the bounded queue, the threads, panic containment and metrics.
//! - [`limits`], [`raster`]: job limits and deadlines; BGR images and JPEG.
//!
//! What this crate does not do: listen on the network, retry, or route events — the router
//! does. It never runs FFmpeg or ONNX Runtime on an async runtime's threads.

pub mod decode;
pub mod infer;
pub mod jobs;
pub mod limits;
pub mod native;
pub mod pipelines;
pub mod pool;
pub mod raster;
pub mod store;

use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

pub use jobs::{FailureReason, JobError};
pub use pipelines::{Options, Pipeline, Summary};
pub use pool::{
    BuildError, Full, JobHandle, JobOutput, MediaMetrics, Outcome, PoolSettings, WorkerPool,
};

use crate::infer::{ExecutionProvider, ModelRegistry};
use crate::limits::Deadline;
use crate::native::Locator;
use crate::pipelines::{DirArtifacts, Models};

/// How [`run_file`] runs.
#[derive(Clone, Debug)]
pub struct FileRun {
    /// Pipeline options: limits, frame interval, …
    pub options: Options,
    /// Where ONNX Runtime and the models are.
    pub locator: Locator,
    /// CPU or CUDA.
    pub provider: ExecutionProvider,
    /// Where the artifacts go (`probe.json`, `thumbs/0000.jpg`, …).
    pub output_dir: PathBuf,
}

impl FileRun {
    /// Defaults, with artifacts in `output_dir` and the native pieces looked up in the
    /// process environment and the cache.
    pub fn new(output_dir: impl Into<PathBuf>) -> FileRun {
        FileRun {
            options: Options::default(),
            locator: Locator::from_env(None, None),
            provider: ExecutionProvider::Cpu,
            output_dir: output_dir.into(),
        }
    }
}

/// Runs `pipeline` on the local file `path` on the calling thread, writing artifacts into
/// `run.output_dir`. `progress` gets the fraction of the media timeline decoded (0 to 1).
///
/// Errors are the jobs' errors, with the same reason codes; a panic inside is caught and
/// reported as `internal_error`.
pub fn run_file(
    pipeline: Pipeline,
    path: &Path,
    run: &FileRun,
    mut progress: impl FnMut(f64),
) -> Result<Summary, JobError> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let registry = ModelRegistry::load(&run.locator, pipeline.needs(), run.provider, cores)
        .map_err(|e| JobError::new(FailureReason::InternalError, e.to_string()))?;
    let mut models = Models::load(&registry, pipeline)
        .map_err(|e| JobError::new(FailureReason::InternalError, e.to_string()))?;
    let deadline = Deadline::unbounded_after(run.options.limits.max_wall_time);
    let mut artifacts = DirArtifacts::new(&run.output_dir);
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        pipelines::run(
            pipeline,
            path,
            &run.options,
            &mut models,
            &mut artifacts,
            &deadline,
            &mut progress,
        )
    }))
    .map_err(|_| JobError::new(FailureReason::InternalError, "the pipeline panicked"))?
    .map_err(JobError::from)
}
