//! Specs of the event sources of kind `triggerfish.dev/v1alpha1`: `OssSource`, `S3Source`,
//! `GitHubSource`, `RegistrySource` and `BucketWatch`.
//!
//! Every source has a `sink` (a `uri`, or a `ref` to a Broker or a sink) and an optional
//! `delivery` (retries and a dead-letter sink toward that sink), resolved by the loader like a
//! trigger's. The webhook sources (`S3Source`, `GitHubSource`, `RegistrySource`, and
//! `OssSource` in push mode) share one listener, `Server.spec.listen.webhooks`, each on its own
//! `path`; the default path is `/{namespace}/{kind in lowercase}s/{name}`, for example
//! `/default/githubsources/build`.
//!
//! Secrets (tokens, access keys) are never written in the config: a [`SecretRef`] names an
//! environment variable or a file. The runtime reads them when it builds the source, and never
//! logs them.
//!
//! What this module does not do: check fields against each other or read secrets. The router
//! does that when it builds each source, and reports through [`crate::config::Config::error_at`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::delivery::DeliverySpec;
use crate::config::destination::DestinationSpec;
use crate::config::duration::IsoDuration;

/// Where a secret is read from: exactly one of `env` and `file`.
///
/// ```yaml
/// secretToken: {env: GITHUB_WEBHOOK_SECRET}
/// token: {file: /run/secrets/minio-webhook-token}
/// ```
///
/// A file's content is used with one trailing newline removed, so `echo secret > file` works.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for SecretRef {
    /// Names where the secret is, which is not secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRef")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

/// `spec` of an `OssSource`: Alibaba Cloud OSS event notifications, as MNS (Message Service)
/// delivers them, in one of two modes: `queue` (long-poll an MNS queue) or `push` (an HTTP
/// endpoint for an MNS topic subscription). Exactly one of the two is set.
///
/// Each record of a notification (`{"events": [...]}`) becomes one event of type
/// `oss:<eventName>` (for example `oss:ObjectCreated:PutObject`) from `acs.oss`, with subject
/// `acs:oss:<region>:<account>:<bucket>/<key>` (see `docs/sources.md`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OssSourceSpec {
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// Queue polling: receive from an MNS queue, publish, then delete each message.
    #[serde(default)]
    pub queue: Option<MnsQueueSpec>,
    /// HTTP push: an endpoint for an MNS topic's HTTP subscription.
    #[serde(default)]
    pub push: Option<MnsPushSpec>,
}

/// `spec.queue` of an `OssSource`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MnsQueueSpec {
    /// The MNS endpoint, `https://{accountId}.mns.{region}.aliyuncs.com` (the internal
    /// `-internal` endpoint works too).
    pub endpoint: String,
    /// The queue's name.
    pub queue: String,
    /// The AccessKey ID.
    pub access_key_id: SecretRef,
    /// The AccessKey secret.
    pub access_key_secret: SecretRef,
    /// Long-polling wait of each `ReceiveMessage`, in seconds, 1 to 30. Defaults to 30.
    #[serde(default)]
    pub wait_seconds: Option<u8>,
    /// Whether message bodies are base64-encoded (OSS publishes them so). Defaults to true.
    #[serde(default)]
    pub base64: Option<bool>,
}

/// `spec.push` of an `OssSource`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MnsPushSpec {
    /// The endpoint's path on the webhook listener. Defaults to
    /// `/{namespace}/osssources/{name}`.
    #[serde(default)]
    pub path: Option<String>,
    /// A PEM file holding MNS's signing certificate. When set, it is the only certificate
    /// accepted and `x-mns-signing-cert-url` is not fetched.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Hosts the signing certificate may be fetched from: exact names, or `*.suffix`.
    /// Defaults to `["*.aliyuncs.com"]`. Certificates are fetched over HTTPS only (plain HTTP
    /// is allowed for loopback addresses, for tests) and cached.
    #[serde(default)]
    pub certificate_hosts: Option<Vec<String>>,
    /// Whether the message inside each notification is base64-encoded (OSS publishes it so).
    /// Defaults to true.
    #[serde(default)]
    pub base64: Option<bool>,
}

/// `spec` of an `S3Source`: an HTTP endpoint for AWS S3-style event notifications
/// (`{"Records": [...]}`), as MinIO's webhook target sends them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3SourceSpec {
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// The endpoint's path. Defaults to `/{namespace}/s3sources/{name}`.
    #[serde(default)]
    pub path: Option<String>,
    /// A shared secret: requests must carry `Authorization: Bearer <token>` (MinIO's
    /// `auth_token`). Without it, any request is accepted.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// `spec` of a `GitHubSource`: a GitHub webhook endpoint, with Knative eventing-github's event
/// shape (`dev.knative.source.github.<event>`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitHubSourceSpec {
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// The endpoint's path. Defaults to `/{namespace}/githubsources/{name}`.
    #[serde(default)]
    pub path: Option<String>,
    /// The webhook's secret: every request must carry a valid `X-Hub-Signature-256`.
    pub secret_token: SecretRef,
    /// The GitHub events accepted (`push`, `pull_request`, ...). Others are answered 400.
    /// Empty or unset: every event.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `owner/repository`: when set, events about other repositories are answered 400.
    #[serde(default)]
    pub owner_and_repository: Option<String>,
    /// How long a delivery id (`X-GitHub-Delivery`) is remembered, so that a replayed or
    /// redelivered request is not published twice. Defaults to `PT1H`.
    #[serde(default)]
    pub dedupe_window: Option<IsoDuration>,
}

/// `spec` of a `RegistrySource`: container-registry webhooks, from a Docker Distribution
/// registry (`registry:2` notifications) or Alibaba Container Registry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrySourceSpec {
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// The endpoint's path. Defaults to `/{namespace}/registrysources/{name}`.
    #[serde(default)]
    pub path: Option<String>,
    /// A shared secret: requests must carry `Authorization: Bearer <token>` (set it in the
    /// registry's notification endpoint `headers`).
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Which payloads are accepted. Defaults to `auto`: told apart by content type and shape.
    #[serde(default)]
    pub format: Option<RegistryFormat>,
}

/// `spec.format` of a `RegistrySource`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistryFormat {
    /// Either, told apart by content type and shape.
    #[default]
    Auto,
    /// Docker Distribution notification envelopes only.
    Distribution,
    /// Alibaba Container Registry webhooks only.
    Acr,
}

/// `spec` of a `BucketWatch`: a local directory treated as a bucket. A file that is fully
/// written (closed after writing, moved in, or unchanged in size for `stableFor`) becomes the
/// same OSS-shaped event an `OssSource` sends, with region `local`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BucketWatchSpec {
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// The directory. Created if missing. Relative paths are relative to the working
    /// directory.
    pub directory: PathBuf,
    /// The bucket name in events. Defaults to the resource's name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// A file whose size has not changed for this long counts as written even if no close
    /// was seen (network file systems, writers that keep files open). Defaults to `PT2S`.
    #[serde(default)]
    pub stable_for: Option<IsoDuration>,
    /// Whether subdirectories are watched too. Defaults to true.
    #[serde(default)]
    pub recursive: Option<bool>,
}
