//! Resources of Triggerfish's own kinds whose meaning lives outside this module: sinks,
//! sources, workers. The loader parses their specs (typed, unknown fields rejected, errors
//! located like every other); the component that runs them checks the rest when it builds
//! them, reporting through [`crate::config::Config::error_at`].

use serde::Deserialize;

use crate::config::duration::IsoDuration;
use crate::config::meta::{ObjectMeta, ResourceId};
use crate::config::size::ByteSize;

/// One resource of a custom kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomResource {
    /// Kind, namespace and name.
    pub id: ResourceId,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: CustomSpec,
    /// The YAML document it came from, from 0.
    pub document: usize,
}

/// The spec of a custom resource, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CustomSpec {
    /// `Exec`: a sink that runs a program per event.
    Exec(ExecSpec),
    /// `WorkerPool`: media pipelines on OS threads.
    WorkerPool(Box<WorkerPoolSpec>),
}

/// `spec` of an `Exec` sink (`triggerfish.dev/v1alpha1`): runs a program for each event it
/// receives, the local counterpart of Knative's JobSink.
///
/// The program runs from `command` as an argument vector, never through a shell. The event
/// arrives on standard input as structured JSON, and its attributes in environment variables
/// (`CE_ID`, `CE_TYPE`, `CE_SOURCE`, `CE_SUBJECT`, `CE_TIME`, `CE_DATACONTENTTYPE`, and
/// `CE_<EXTENSION>` upper-cased). Exit status 0 is success; anything else is a failure the
/// trigger's delivery spec may retry. A CloudEvent printed on standard output (structured JSON)
/// is a reply.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecSpec {
    /// The program and its arguments. `{{name}}` in an argument is replaced by the event's
    /// attribute `name` (a missing attribute fails the delivery without running anything);
    /// `{{{{` is a literal `{{`. The substitution is plain text: it can never split or add
    /// arguments.
    pub command: Vec<String>,
    /// Extra environment variables. The program sees only these, `PATH`, `HOME`, `LANG` and
    /// the `CE_*` variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory; defaults to the router's.
    #[serde(default)]
    pub working_dir: Option<std::path::PathBuf>,
    /// How many runs at once, over every trigger using this sink. Defaults to 1.
    #[serde(default)]
    pub concurrency: Option<std::num::NonZeroU32>,
    /// Longest run; the program is killed after it and the attempt counts as a timeout.
    /// Defaults to 5 minutes.
    #[serde(default)]
    pub timeout: Option<IsoDuration>,
}

/// `spec` of a `WorkerPool` (`triggerfish.dev/v1alpha1`): a pool of OS threads that runs a
/// media pipeline on objects named by the events it receives, and replies with a
/// `dev.triggerfish.media.completed` or `dev.triggerfish.media.failed` event.
///
/// A trigger delivers to it with `subscriber.ref: {apiVersion: triggerfish.dev/v1alpha1,
/// kind: WorkerPool, name: ...}`. It accepts OSS object-created events (`oss:ObjectCreated:*`
/// from `acs.oss`), S3-style notifications (`Records[].s3`), and
/// `dev.triggerfish.media.requested` events whose data is `{"uri": "..."}`. The object is read
/// from `objectStore`; artifacts (`probe.json`, `speech.json`, `text.json`, `thumbs/*.jpg`,
/// `sprite.jpg`) are written back under `<outputPrefix>/<key>/`. When the queue is full the
/// delivery is refused as unavailable, so the trigger's retries and the broker's backpressure
/// apply.
///
/// ```yaml
/// apiVersion: triggerfish.dev/v1alpha1
/// kind: WorkerPool
/// metadata: {name: transcode}
/// spec:
///   pipeline: video
///   threads: 2
///   queueLimit: 8
///   limits: {maxInputBytes: 2GiB, maxDuration: PT2H, maxPixels: 8294400, maxWallTime: PT30M}
///   objectStore:
///     s3:
///       bucket: media
///       region: oss-cn-hangzhou
///       endpoint: https://oss-cn-hangzhou.aliyuncs.com
///       credentials: {accessKeyIdEnv: OSS_ACCESS_KEY_ID, secretAccessKeyEnv: OSS_ACCESS_KEY_SECRET}
///   outputPrefix: results
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// What runs on each object: `probe` (container, duration, streams, codecs → `probe.json`),
    /// `audio` (Silero VAD speech segments → `speech.json`), or `video` (sampled frames,
    /// thumbnails, a sprite sheet and PP-OCRv4 text → `thumbs/`, `sprite.jpg`, `text.json`,
    /// plus `speech.json` for the sound track).
    pub pipeline: MediaPipeline,
    /// OS threads, each running one job at a time with its own model sessions. Defaults to 1.
    #[serde(default)]
    pub threads: Option<std::num::NonZeroU32>,
    /// Jobs that may wait for a thread. A delivery beyond running plus waiting jobs is refused
    /// as unavailable (and retried by the trigger's delivery policy). Defaults to 2 × threads.
    #[serde(default)]
    pub queue_limit: Option<std::num::NonZeroU32>,
    /// What one job may cost.
    #[serde(default)]
    pub limits: WorkerLimits,
    /// Where the ONNX Runtime library and the models are; by default they are looked up in
    /// `TRIGGERFISH_ORT_LIB`/`ORT_DYLIB_PATH` and `TRIGGERFISH_MODELS`, then in the cache that
    /// `scripts/dev setup` fills (`$TRIGGERFISH_CACHE`, default `~/.cache/triggerfish`).
    #[serde(default)]
    pub models: ModelPaths,
    /// Where inference runs: `cpu` (default) or `cuda`. With `cuda`, sessions fall back to the
    /// CPU, with a warning, when the ONNX Runtime library or the machine has no CUDA.
    #[serde(default)]
    pub execution_provider: ExecutionProviderKind,
    /// Where objects are read from and artifacts are written to.
    pub object_store: ObjectStoreSpec,
    /// Key prefix of the artifacts: an object `a/b.mp4` gets `<outputPrefix>/a/b.mp4/...`.
    /// Objects under this prefix are never processed (so that artifacts do not trigger jobs).
    /// Defaults to `triggerfish-media`.
    #[serde(default)]
    pub output_prefix: Option<String>,
    /// Video: time between sampled frames; the first frame is always sampled. Defaults to
    /// `PT1S`.
    #[serde(default)]
    pub frame_interval: Option<IsoDuration>,
}

/// A `WorkerPool`'s pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaPipeline {
    /// Container, duration, streams, codecs.
    Probe,
    /// Speech segments.
    Audio,
    /// Frames, thumbnails, sprite sheet, text, and speech.
    Video,
}

/// `spec.limits` of a `WorkerPool`. A job over a limit fails with reason `limit_exceeded`
/// and names the limit; decoding never allocates past them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerLimits {
    /// Largest object, checked before it is read. Defaults to `2GiB`.
    #[serde(default)]
    pub max_input_bytes: Option<ByteSize>,
    /// Longest media, checked against the header and while decoding. Defaults to `PT4H`.
    #[serde(default)]
    pub max_duration: Option<IsoDuration>,
    /// Largest video frame in pixels (width × height), checked against the header and every
    /// decoded frame. Defaults to 67108864 (8192 × 8192).
    #[serde(default)]
    pub max_pixels: Option<std::num::NonZeroU64>,
    /// Longest time one job may take, fetch and upload included; a job over it fails with
    /// reason `timeout`. Defaults to `PT1H`.
    #[serde(default)]
    pub max_wall_time: Option<IsoDuration>,
}

/// `spec.models` of a `WorkerPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelPaths {
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.31.1`).
    #[serde(default)]
    pub onnxruntime: Option<std::path::PathBuf>,
    /// A directory holding `silero_vad.onnx`, `ch_PP-OCRv4_det_infer.onnx` and
    /// `ch_PP-OCRv4_rec_infer.onnx`.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
}

/// `spec.executionProvider` of a `WorkerPool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    /// The CPU.
    #[default]
    Cpu,
    /// NVIDIA CUDA, with a CPU fallback.
    Cuda,
}

/// `spec.objectStore` of a `WorkerPool`: exactly one of `local` or `s3`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ObjectStoreFields")]
pub enum ObjectStoreSpec {
    /// A local directory whose subdirectories are buckets: object `key` of bucket `b` is the
    /// file `<root>/b/key`. `file://` URIs must point inside `root`.
    Local(LocalStoreSpec),
    /// An S3-compatible endpoint: AWS S3, Alibaba Cloud OSS (through its S3-compatible API),
    /// MinIO and the like.
    S3(S3StoreSpec),
}

/// The YAML form of [`ObjectStoreSpec`], before the one-of check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectStoreFields {
    #[serde(default)]
    local: Option<LocalStoreSpec>,
    #[serde(default)]
    s3: Option<S3StoreSpec>,
}

impl TryFrom<ObjectStoreFields> for ObjectStoreSpec {
    type Error = &'static str;
    fn try_from(f: ObjectStoreFields) -> Result<Self, Self::Error> {
        match (f.local, f.s3) {
            (Some(local), None) => Ok(ObjectStoreSpec::Local(local)),
            (None, Some(s3)) => Ok(ObjectStoreSpec::S3(s3)),
            _ => Err("set exactly one of `local` or `s3`"),
        }
    }
}

/// `spec.objectStore.local`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalStoreSpec {
    /// The directory that holds the buckets.
    pub root: std::path::PathBuf,
}

/// `spec.objectStore.s3`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3StoreSpec {
    /// The bucket to read and write. When set, events naming another bucket fail with
    /// `fetch_failed`; when absent, each event's bucket is used.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The region, e.g. `us-east-1` or `oss-cn-hangzhou`. Defaults to `AWS_REGION` or
    /// `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// The endpoint URL, e.g. `https://oss-cn-hangzhou.aliyuncs.com` or
    /// `http://127.0.0.1:9000`; defaults to AWS's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address buckets as `https://bucket.endpoint/key` (OSS requires this) rather than
    /// `https://endpoint/bucket/key`. Defaults to false.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Allow `http://` endpoints. Defaults to false.
    #[serde(default)]
    pub allow_http: bool,
    /// Where the credentials come from; by default the standard `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables.
    #[serde(default)]
    pub credentials: S3Credentials,
}

/// `spec.objectStore.s3.credentials`: each value from an environment variable or a file (a
/// mounted Kubernetes secret). A file wins over a variable; surrounding whitespace is
/// trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Credentials {
    /// Variable holding the access key id.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// File holding the access key id.
    #[serde(default)]
    pub access_key_id_file: Option<std::path::PathBuf>,
    /// Variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// File holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Variable holding a session token (STS).
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// File holding a session token.
    #[serde(default)]
    pub session_token_file: Option<std::path::PathBuf>,
}
