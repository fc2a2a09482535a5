//! The resource model: Knative's YAML documents, parsed and validated.
//!
//! A config file is a stream of YAML documents. [`Config::load`] reads each by `apiVersion`
//! and `kind`, deserializes it into typed structs whose doc comments are the user
//! documentation, checks every rule, resolves destinations, and returns a [`Config`] that
//! cannot be invalid, or [`ConfigErrors`] listing every problem found with its file, line and
//! column, resource and field path:
//!
//! ```text
//! quickstart.yaml:23:7: Trigger "resize" in namespace "media": spec.filters[1]: each filter must use exactly one dialect, found "exact" and "prefix"
//! ```
//!
//! Kinds read: `eventing.knative.dev/v1` [`Broker`](BrokerSpec) and [`Trigger`](TriggerSpec),
//! `triggerfish.dev/v1alpha1` [`Server`](ServerSpec), and the custom kinds of
//! [`CustomSpec`]: sinks (`Exec`, `Scheduler`) and sources (`PingSource`, [`OssSourceSpec`],
//! [`S3SourceSpec`], [`GitHubSourceSpec`], [`RegistrySourceSpec`], [`BucketWatchSpec`],
//! [`KafkaSourceSpec`], [`RocketMQSourceSpec`]) and the Kafka and RocketMQ sinks ([`KafkaSinkSpec`],
//! [`RocketMQSinkSpec`]). Knative's rules are enforced as
//! Knative's webhook does (attribute names `^[a-z][a-z0-9]*$`, one dialect per `filters`
//! element, one attribute per `exact`/`prefix`/`suffix`, a required `spec.broker`, URIs
//! absolute unless relative to a `ref`), and duplicates and triggers whose broker is not in
//! the file are rejected.
//!
//! Where Triggerfish is stricter than Knative, on purpose, because Knative lets these match
//! every event silently:
//! - empty values in `exact`, `prefix` and `suffix` are rejected;
//! - a `filters` element with no dialect, `exact: {}`, `all: []`, `any: []` and `cesql: ""`
//!   are rejected.
//!
//! Where Triggerfish adds to Knative: `spec.maxInFlight` on a Trigger; `backoffMax`,
//! `jitter`, `retryAfterMax`, `format` and `pipelining` in `delivery`; the built-in `display:` and `file:` sinks, in-process refs
//! (`triggerfish.dev/v1alpha1` `Display`, `File`, `WorkerPool`, `Scheduler`, `Exec`), and the
//! `Server` document.
//!
//! Choices where Knative leaves room, or where we differ:
//! - **Errors.** Every document is checked, and every problem reported, in file order. Within
//!   one document, a value of the wrong type or an unknown field stops that document's
//!   deserialization, so it reports one such error; rule checks (filters, names,
//!   destinations, delivery) and cross-document checks report all they find.
//! - **Durations** are ISO-8601 everywhere ([`IsoDuration`]), in our `Server` kind too, so
//!   there is one syntax in a file. Years and months are rejected as ambiguous.
//! - **Destinations** ([`DestinationSpec`]): a `Service` ref resolves to
//!   `http://{name}.{namespace}.svc.cluster.local` plus the relative `uri`, as Knative does; a
//!   `Broker` ref must name a broker of this config; `display:` and `file:///path.jsonl` are
//!   our built-in sinks, also reachable as refs (a `File` ref writes
//!   `{dataDir}/sinks/{namespace}/{name}.jsonl`); refs to `WorkerPool`, `Scheduler` and `Exec`
//!   resolve in-process and are checked for existence once those kinds are loaded.
//! - **Delivery.** A trigger's `delivery` replaces its broker's as a whole; a `delivery: {}`
//!   with no field set counts as absent ([`Config::delivery_for`]).
//! - **YAML.** Merge keys (`<<: *anchor`) are resolved; a document holding only comments is
//!   skipped; `status` and server-set `metadata` fields, as `kubectl get -o yaml` writes them,
//!   are accepted and ignored, and the `v1` `List` it writes for several resources counts as
//!   its items, each a document of its own.
//!
//! What this module does not do: read files (the caller passes the text and a name for
//! messages), compile CESQL (filters keep expressions as written, with their field path;
//! the compile step reports errors through [`Config::error_at`]), or decide retries (that is
//! [`crate::delivery`]).

#[macro_use]
mod keyword;

mod broker;
mod custom;
mod delivery;
mod destination;
mod duration;
mod error;
mod load;
mod messaging;
mod meta;
mod path;
mod rocketmq;
mod server;
mod size;
mod source_map;
mod sources;
mod trigger;

use std::collections::HashMap;
use std::error::Error as StdError;

use sha2::{Digest, Sha256};

pub use broker::{Broker, BrokerSpec, IgnoredConfig};
pub use custom::{
    CatchUpSpec, CeOverrides, CustomResource, CustomSpec, EventPolicySpec, ExecSpec,
    ExecutionProviderKind, LocalStoreSpec, MediaPipeline, ModelPaths, ObjectStoreSpec,
    PingSourceSpec, PolicyRef, PolicySelector, PolicySenderSpec, PolicyTargetSpec, S3Credentials,
    S3StoreSpec, SchedulerSpec, WorkerLimits, WorkerPoolSpec,
};
pub use delivery::{BackoffPolicy, Delivery, DeliveryFormat, DeliverySpec, Jitter, MAX_PIPELINING};
pub use destination::{
    Batching, CaCerts, DEFAULT_QUIC_PORT, Destination, DestinationError, DestinationSpec,
    KReference, QuicDestination,
};
pub use duration::{DurationError, IsoDuration};
pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use messaging::{
    ContentModeSpec, InitialOffset, InvalidRecords, KafkaNetSpec, KafkaSaslSpec, KafkaSinkSpec,
    KafkaSourceSpec, KafkaTlsSpec,
};
pub use meta::{
    DEFAULT_NAMESPACE, KNATIVE_EVENTING_V1, KNATIVE_SOURCES_V1BETA1, Kind, ObjectMeta, ResourceId,
    TRIGGERFISH_V1ALPHA1,
};
pub(crate) use meta::{check_name, check_namespace};
pub use path::{FieldPath, FieldPathError, Segment};
pub use rocketmq::{RocketMQSinkSpec, RocketMQSourceSpec};
pub use server::{
    AuthSpec, ClientAuth, DefaultPolicy, LimitsSpec, ListenSpec, OidcSpec, OutboundSpec,
    QueueLimits, QueuesSpec, QuicClientSpec, QuicListen, QuicSpec, RateLimitsSpec, RateSpec,
    SecretSource, ServerSpec, StaticTokenSpec, StoreKind, StoreSpec, TlsFiles, TlsListener,
    TlsSpec,
};
pub use size::{ByteSize, ByteSizeError};
pub use source_map::{Location, NodeLocation};
pub use sources::{
    BucketWatchSpec, GitHubSourceSpec, MnsPushSpec, MnsQueueSpec, OssSourceSpec, RegistryFormat,
    RegistrySourceSpec, S3SourceSpec, SecretRef,
};
pub use trigger::{
    AttributesFilterSpec, BatchSpec, DEFAULT_MAX_IN_FLIGHT, DELIVERY_ORDER_ANNOTATION,
    DeliveryOrder, Filter, FilterExpr, FilterSpec, MAX_BATCH_EVENTS, MAX_LINGER, Trigger,
    TriggerSpec, is_valid_filter_attribute,
};

use source_map::SourceMap;

/// The config used when none is given: broker `default` in namespace `default`, no triggers,
/// and the default [`ServerSpec`] (HTTP on `127.0.0.1:8080`, admin on `127.0.0.1:9090`).
pub const EMBEDDED_DEFAULT: &str = "\
# The embedded default: one broker, default/default, and no triggers.
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: default
";

/// The file name of [`Config::embedded_default`] in messages.
pub const EMBEDDED_FILE_NAME: &str = "<embedded>";

/// A validated config: every resource of one file, checked against each other.
#[derive(Clone, Debug)]
pub struct Config {
    file_name: String,
    version: String,
    server: ServerSpec,
    server_id: Option<ResourceId>,
    brokers: Vec<Broker>,
    triggers: Vec<Trigger>,
    custom: Vec<CustomResource>,
    order: Vec<ResourceIndex>,
    documents: HashMap<ResourceId, usize>,
    sources: SourceMap,
}

/// Where a resource is kept, for document order.
#[derive(Clone, Copy, Debug)]
enum ResourceIndex {
    Broker(usize),
    Trigger(usize),
    Server,
    Custom(usize),
}

/// One resource of a [`Config`], borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// A broker.
    Broker(&'a Broker),
    /// A trigger.
    Trigger(&'a Trigger),
    /// The `Server` document.
    Server(&'a ServerSpec),
    /// A resource of a custom kind.
    Custom(&'a CustomResource),
}

impl Config {
    /// Parses and validates `source`, a stream of YAML documents. `file_name` names it in
    /// errors; the caller reads the file.
    pub fn load(source: &str, file_name: &str) -> Result<Config, ConfigErrors> {
        load::load(source, file_name)
    }

    /// The config used when none is given: [`EMBEDDED_DEFAULT`].
    pub fn embedded_default() -> Config {
        let broker = Broker {
            id: ResourceId::namespaced(Kind::Broker, DEFAULT_NAMESPACE, "default"),
            meta: ObjectMeta::new("default", DEFAULT_NAMESPACE),
            delivery: None,
            document: 0,
        };
        Config::assemble(
            EMBEDDED_FILE_NAME.to_owned(),
            EMBEDDED_DEFAULT,
            SourceMap::build(EMBEDDED_DEFAULT),
            ServerSpec::default(),
            None,
            vec![broker],
            Vec::new(),
            Vec::new(),
            vec![(0, ResourceIndex::Broker(0))],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        file_name: String,
        source: &str,
        sources: SourceMap,
        server: ServerSpec,
        server_source: Option<(ResourceId, usize)>,
        brokers: Vec<Broker>,
        triggers: Vec<Trigger>,
        custom: Vec<CustomResource>,
        order: Vec<(usize, ResourceIndex)>,
    ) -> Config {
        let mut documents: HashMap<ResourceId, usize> = brokers
            .iter()
            .map(|b| (b.id.clone(), b.document))
            .chain(triggers.iter().map(|t| (t.id.clone(), t.document)))
            .chain(custom.iter().map(|c| (c.id.clone(), c.document)))
            .collect();
        let server_id = server_source.map(|(id, document)| {
            documents.insert(id.clone(), document);
            id
        });
        Config {
            file_name,
            version: version_of(source),
            server,
            server_id,
            brokers,
            triggers,
            custom,
            order: order.into_iter().map(|(_, index)| index).collect(),
            documents,
            sources,
        }
    }

    /// The file name given to [`Config::load`].
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The version of this config: the SHA-256 of the source text, in lowercase hex, so that
    /// `sha256sum` on the file gives the same string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `Server` document's spec, or the defaults when there is none.
    pub fn server(&self) -> &ServerSpec {
        &self.server
    }

    /// The id of the `Server` document, if the file has one, for [`Config::locate`] and
    /// [`Config::error_at`].
    pub fn server_id(&self) -> Option<&ResourceId> {
        self.server_id.as_ref()
    }

    /// The brokers, in file order.
    pub fn brokers(&self) -> &[Broker] {
        &self.brokers
    }

    /// The triggers, in file order.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Every resource, in file order.
    pub fn resources(&self) -> impl Iterator<Item = Resource<'_>> + '_ {
        self.order.iter().map(|index| match *index {
            ResourceIndex::Broker(i) => Resource::Broker(&self.brokers[i]),
            ResourceIndex::Trigger(i) => Resource::Trigger(&self.triggers[i]),
            ResourceIndex::Server => Resource::Server(&self.server),
            ResourceIndex::Custom(i) => Resource::Custom(&self.custom[i]),
        })
    }

    /// Resolves a destination given at run time (by a schedule created through a control
    /// event, say) as if it were written in namespace `namespace` of this config.
    pub fn resolve_destination(
        &self,
        namespace: &str,
        spec: &DestinationSpec,
    ) -> Result<Destination, String> {
        let brokers: std::collections::BTreeSet<(String, String)> = self
            .brokers
            .iter()
            .map(|b| (b.meta.namespace.clone(), b.meta.name.clone()))
            .collect();
        let resolver = destination::Resolver {
            namespace,
            brokers: &brokers,
            data_dir: &self.server.data_dir,
        };
        resolver
            .resolve(spec, &FieldPath::root().key("sink"))
            .map_err(|(path, kind)| format!("{path}: {kind}"))
    }

    /// Resources of custom kinds (sinks, sources, workers), in file order.
    pub fn custom(&self) -> &[CustomResource] {
        &self.custom
    }

    /// The custom resource `kind` `namespace/name`.
    pub fn custom_resource(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<&CustomResource> {
        self.custom
            .iter()
            .find(|c| c.id.kind == kind && c.meta.namespace == namespace && c.meta.name == name)
    }

    /// The broker `namespace/name`.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<&Broker> {
        self.brokers
            .iter()
            .find(|b| b.namespace() == namespace && b.name() == name)
    }

    /// The triggers of broker `namespace/name`, in file order.
    pub fn triggers_of<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Trigger> + 'a {
        self.triggers
            .iter()
            .filter(move |t| t.namespace() == namespace && t.broker == name)
    }

    /// The delivery that applies to `trigger`: its own if it has one, else its broker's, as
    /// in Knative (see [`crate::delivery::effective`]). `None` means one attempt and no
    /// dead-letter sink.
    pub fn delivery_for<'a>(&'a self, trigger: &'a Trigger) -> Option<&'a Delivery> {
        let broker = self
            .broker(trigger.namespace(), &trigger.broker)
            .and_then(|b| b.delivery.as_ref());
        crate::delivery::effective(trigger.delivery.as_ref(), broker)
    }

    /// Where `path` of `resource` is in the file: the line and column of the field's key (or
    /// its value, for sequence items), or of its nearest ancestor present in the text.
    pub fn locate(&self, resource: &ResourceId, path: &FieldPath) -> Option<Location> {
        let document = *self.documents.get(resource)?;
        self.sources.document(document)?.locate(path)
    }

    /// The position of the value at `path` of `resource`, and of its key; for example the
    /// opening quote of a CESQL string, to report an error at a column inside it.
    pub fn node(&self, resource: &ResourceId, path: &FieldPath) -> Option<NodeLocation> {
        let document = *self.documents.get(resource)?;
        self.sources.document(document)?.node(path)
    }

    /// An error about `path` of `resource`, found by a later build step, in the same shape as
    /// the loader's: file, line and column, resource, field path.
    ///
    /// ```
    /// # use triggerfish_core::config::{Config, FilterExpr};
    /// let config = Config::load(r#"
    /// apiVersion: eventing.knative.dev/v1
    /// kind: Broker
    /// metadata: {name: default}
    /// ---
    /// apiVersion: eventing.knative.dev/v1
    /// kind: Trigger
    /// metadata: {name: t}
    /// spec:
    ///   broker: default
    ///   filters:
    ///     - cesql: "type = "
    ///   subscriber: {uri: "display:"}
    /// "#, "c.yaml").unwrap();
    /// let trigger = &config.triggers()[0];
    /// let filter = &trigger.filters[0];
    /// assert!(matches!(filter.expr, FilterExpr::Cesql(_)));
    /// let error = config.error_at(&trigger.id, filter.path.key("cesql"), "unexpected end of input");
    /// assert_eq!(
    ///     error.to_string(),
    ///     r#"c.yaml:12:7: Trigger "t" in namespace "default": spec.filters[0].cesql: unexpected end of input"#
    /// );
    /// ```
    pub fn error_at(
        &self,
        resource: &ResourceId,
        path: FieldPath,
        error: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> ConfigError {
        ConfigError::new(
            self.file_name.clone(),
            self.locate(resource, &path),
            self.documents.get(resource).copied(),
            Some(resource.clone()),
            path,
            ErrorKind::Build(error.into()),
        )
    }
}

/// The version string of a config text: its SHA-256 in hex, as [`Config::version`] reports
/// it. Lets a watcher skip a reload when the text did not change.
pub fn version_of(source: &str) -> String {
    format!("{:x}", Sha256::digest(source.as_bytes()))
}

#[cfg(test)]
mod tests;
