//! Resources of Triggerfish's own kinds whose meaning lives outside this module: sinks,
//! sources, workers. The loader parses their specs (typed, unknown fields rejected, errors
//! located like every other); the component that runs them checks the rest when it builds
//! them, reporting through [`crate::config::Config::error_at`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::delivery::{Delivery, DeliverySpec};
use crate::config::destination::{Destination, DestinationSpec};
use crate::config::duration::IsoDuration;
use crate::config::messaging::{KafkaSinkSpec, KafkaSourceSpec};
use crate::config::meta::{ObjectMeta, ResourceId};
use crate::config::rocketmq::{RocketMQSinkSpec, RocketMQSourceSpec};
use crate::config::size::ByteSize;
use crate::config::sources::{
    BucketWatchSpec, GitHubSourceSpec, OssSourceSpec, RegistrySourceSpec, S3SourceSpec,
};

/// One resource of a custom kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomResource {
    /// Kind, namespace and name.
    pub id: ResourceId,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: CustomSpec,
    /// The document it came from, from 0: the YAML documents in file order, empty ones left
    /// out, and each item of a `List` counting as one.
    pub document: usize,
    /// `spec.sink`, resolved, for kinds that have one (sources).
    pub sink: Option<Destination>,
    /// `spec.delivery`, resolved, for kinds that have one.
    pub delivery: Option<Delivery>,
    /// `spec.filters`, validated, for kinds that have them (`EventPolicy`).
    pub filters: Vec<crate::config::Filter>,
}

/// The spec of a custom resource, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CustomSpec {
    /// `Exec`: a sink that runs a program per event.
    Exec(ExecSpec),
    /// `PingSource`: events on a cron schedule (Knative's `sources.knative.dev/v1`).
    PingSource(Box<PingSourceSpec>),
    /// `Scheduler`: settings of the built-in scheduler sink.
    Scheduler(SchedulerSpec),
    /// `EventPolicy`: who may send what to which brokers (Knative's
    /// `eventing.knative.dev/v1alpha1`).
    EventPolicy(EventPolicySpec),
    /// `OssSource`: OSS event notifications through MNS.
    OssSource(Box<OssSourceSpec>),
    /// `S3Source`: S3-style (MinIO) event notifications.
    S3Source(Box<S3SourceSpec>),
    /// `GitHubSource`: GitHub webhooks.
    GitHubSource(Box<GitHubSourceSpec>),
    /// `RegistrySource`: container-registry webhooks.
    RegistrySource(Box<RegistrySourceSpec>),
    /// `BucketWatch`: a local directory treated as a bucket.
    BucketWatch(Box<BucketWatchSpec>),
    /// `WorkerPool`: media pipelines on OS threads.
    WorkerPool(Box<WorkerPoolSpec>),
    /// `KafkaSource`: Kafka topics as events (Knative's `sources.knative.dev/v1beta1`).
    KafkaSource(Box<KafkaSourceSpec>),
    /// `KafkaSink`: events produced to a Kafka topic (Knative's
    /// `eventing.knative.dev/v1alpha1`).
    KafkaSink(Box<KafkaSinkSpec>),
    /// `RocketMQSource`: a RocketMQ topic as events.
    RocketMQSource(Box<RocketMQSourceSpec>),
    /// `RocketMQSink`: events produced to a RocketMQ topic.
    RocketMQSink(Box<RocketMQSinkSpec>),
}

impl CustomSpec {
    /// The spec's `sink`, for kinds that send events somewhere.
    pub fn sink_spec(&self) -> Option<&DestinationSpec> {
        match self {
            CustomSpec::PingSource(p) => Some(&p.sink),
            CustomSpec::OssSource(s) => Some(&s.sink),
            CustomSpec::S3Source(s) => Some(&s.sink),
            CustomSpec::GitHubSource(s) => Some(&s.sink),
            CustomSpec::RegistrySource(s) => Some(&s.sink),
            CustomSpec::BucketWatch(s) => Some(&s.sink),
            CustomSpec::KafkaSource(s) => Some(&s.sink),
            CustomSpec::RocketMQSource(s) => Some(&s.sink),
            CustomSpec::Exec(_)
            | CustomSpec::Scheduler(_)
            | CustomSpec::EventPolicy(_)
            | CustomSpec::WorkerPool(_)
            | CustomSpec::KafkaSink(_)
            | CustomSpec::RocketMQSink(_) => None,
        }
    }

    /// The spec's `delivery`, for kinds that deliver.
    pub fn delivery_spec(&self) -> Option<&DeliverySpec> {
        match self {
            CustomSpec::PingSource(p) => p.delivery.as_ref(),
            CustomSpec::OssSource(s) => s.delivery.as_ref(),
            CustomSpec::S3Source(s) => s.delivery.as_ref(),
            CustomSpec::GitHubSource(s) => s.delivery.as_ref(),
            CustomSpec::RegistrySource(s) => s.delivery.as_ref(),
            CustomSpec::BucketWatch(s) => s.delivery.as_ref(),
            CustomSpec::KafkaSource(s) => s.delivery.as_ref(),
            CustomSpec::RocketMQSource(s) => s.delivery.as_ref(),
            CustomSpec::Exec(_)
            | CustomSpec::Scheduler(_)
            | CustomSpec::EventPolicy(_)
            | CustomSpec::WorkerPool(_)
            | CustomSpec::KafkaSink(_)
            | CustomSpec::RocketMQSink(_) => None,
        }
    }

    /// The spec's SubscriptionsAPI `filters`, for kinds that have them.
    pub fn filter_specs(&self) -> &[crate::config::FilterSpec] {
        match self {
            CustomSpec::EventPolicy(p) => &p.filters,
            _ => &[],
        }
    }
}

/// `spec` of a `PingSource` (`sources.knative.dev/v1`), Knative's cron source, plus two
/// Triggerfish extensions: `catchUp` and `delivery`.
///
/// Each tick sends an event of type `dev.knative.sources.ping` from
/// `/apis/v1/namespaces/<namespace>/pingsources/<name>`, with a fresh UUID `id` and `time` set
/// to the scheduled tick.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PingSourceSpec {
    /// As Knative takes it (robfig/cron): standard 5-field cron (`*/5 * * * *`), a 6-field
    /// form with seconds first, `?` for `*`, `@hourly`-style shortcuts, `@every <duration>`
    /// (at multiples of the interval since the Unix epoch), and a `CRON_TZ=<zone>` prefix.
    /// See [`crate::cron`].
    pub schedule: String,
    /// IANA time zone of the schedule (`Europe/Berlin`); UTC when unset. Daylight-saving
    /// changes are followed.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `datacontenttype` of the events. When it is JSON, `data` must be valid JSON.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The events' data, as text.
    #[serde(default)]
    pub data: Option<String>,
    /// The events' data, base64-encoded. Not together with `data`.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Where the events go: a `uri`, or a `ref` to a Broker, a Service or a built-in sink.
    pub sink: DestinationSpec,
    /// Extensions added to every event.
    #[serde(default)]
    pub ce_overrides: Option<CeOverrides>,
    /// Triggerfish extension: fire ticks missed while the process was down, up to this age,
    /// when it starts again; such events carry the extension `scheduledtime`. Without it,
    /// missed ticks are skipped, as in Knative.
    #[serde(default)]
    pub catch_up: Option<CatchUpSpec>,
    /// Triggerfish extension: retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
}

/// `ceOverrides`: extensions set on every event a source sends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeOverrides {
    /// Extension name to value.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

impl CeOverrides {
    /// Checks each extension with [`CeOverrides::extension_problem`]; returns `(name, what is
    /// wrong)` for each bad one. Every source with `ceOverrides` refuses these when the config
    /// loads.
    pub fn problems(&self) -> Vec<(String, String)> {
        self.extensions
            .iter()
            .filter_map(|(n, v)| Self::extension_problem(n, v).map(|p| (n.clone(), p)))
            .collect()
    }

    /// What is wrong with setting extension `name` to `value` on an event, if anything: the
    /// name must be a valid extension name (lower-case letters and digits, not a context
    /// attribute), the value one an event can carry.
    pub fn extension_problem(name: &str, value: &str) -> Option<String> {
        if !crate::event::is_valid_attribute_name(name.as_bytes())
            || crate::event::KnownAttr::from_name(name).is_some()
            || name == "data"
        {
            Some(format!(
                "{name:?} is not a valid extension name (lower-case letters and digits, not a context attribute)"
            ))
        } else {
            crate::event::check_chars(name, value)
                .err()
                .map(|e| e.to_string())
        }
    }
}

/// `catchUp` of a `PingSource`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatchUpSpec {
    /// The oldest missed tick still fired (ISO-8601, e.g. `PT1H`).
    pub max_age: IsoDuration,
}

/// `spec` of the `Scheduler` (`triggerfish.dev/v1alpha1`), the built-in sink for delayed
/// events and schedules created at run time. The scheduler named `default` exists without a
/// document; a document sets its limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SchedulerSpec {
    /// The longest `deliverafter`, or `deliverat` in the future, accepted. Default: 7 days.
    #[serde(default)]
    pub max_delay: Option<IsoDuration>,
    /// The most delayed events waiting at once. Default: 100,000.
    #[serde(default)]
    pub max_pending: Option<std::num::NonZeroU32>,
    /// The most schedules created at run time. Default: 10,000.
    #[serde(default)]
    pub max_schedules: Option<std::num::NonZeroU32>,
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

/// `spec` of an `EventPolicy` (`eventing.knative.dev/v1alpha1`), Knative's shape.
///
/// An event sent to a broker is allowed when any policy that targets the broker allows it:
/// its sender matches one of `from`, and it passes `filters`. A broker no policy targets
/// follows `Server.spec.auth.defaultPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPolicySpec {
    /// The brokers the policy applies to, in its namespace; empty means all of them.
    #[serde(default)]
    pub to: Vec<PolicyTargetSpec>,
    /// Who may send: sender identities (`sub`), with a trailing `*` as a wildcard.
    pub from: Vec<PolicySenderSpec>,
    /// What they may send: the same dialects as triggers (an implicit `all`).
    #[serde(default)]
    pub filters: Vec<crate::config::FilterSpec>,
}

/// One element of `to`: a broker by name, or brokers by label.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTargetSpec {
    /// A broker of the policy's namespace.
    #[serde(default, rename = "ref")]
    pub reference: Option<PolicyRef>,
    /// Brokers of the policy's namespace whose labels include `matchLabels`.
    #[serde(default)]
    pub selector: Option<PolicySelector>,
}

/// A reference in `to`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRef {
    /// `eventing.knative.dev/v1`.
    pub api_version: String,
    /// `Broker`.
    pub kind: String,
    /// The broker's name.
    pub name: String,
}

/// A label selector in `to`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySelector {
    /// `eventing.knative.dev/v1`.
    pub api_version: String,
    /// `Broker`.
    pub kind: String,
    /// Labels a broker must all have.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// One element of `from`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySenderSpec {
    /// A sender identity (`system:serviceaccount:shop:checkout`), or a prefix ending in `*`.
    #[serde(default)]
    pub sub: Option<String>,
    /// Knative's reference to a source object. Not supported: Triggerfish's sources run
    /// in-process and never pass through ingress.
    #[serde(default, rename = "ref")]
    pub reference: Option<crate::config::KReference>,
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
