//! Loading: YAML text to a validated [`Config`], or every error found on the way.
//!
//! 1. Split the text into documents and parse each into a YAML value (`serde_norway`). A
//!    syntax error stops here: what follows it cannot be trusted. A `v1` `List`, which
//!    `kubectl get -o yaml` writes for several resources, becomes one document per item.
//! 2. Dispatch each document on `apiVersion` and `kind`, and deserialize it into its typed
//!    spec with `serde_path_to_error`, which names the field of any error. One error per
//!    document at most, since serde stops at the first; the other documents go on.
//! 3. Check each resource (names, filters, destinations, delivery) and the resources against
//!    each other (duplicates, one `Server`, triggers' brokers), collecting every error.
//!
//! Line and column come from the [`SourceMap`], looked up by field path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU16;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_norway::Value;

use crate::config::broker::{Broker, BrokerSpec};
use crate::config::custom::WorkerPoolSpec;
use crate::config::custom::{
    CustomResource, CustomSpec, EventPolicySpec, ExecSpec, PingSourceSpec, SchedulerSpec,
};
use crate::config::delivery::{Delivery, DeliverySpec, MAX_PIPELINING};
use crate::config::destination::{Batching, Destination, DestinationSpec, Resolver};
use crate::config::error::{ConfigError, ConfigErrors, ErrorKind, suggest};
use crate::config::meta::{
    DEFAULT_NAMESPACE, Kind, ObjectMeta, ResourceId, check_name, check_namespace,
};
use crate::config::path::{FieldPath, Segment};
use crate::config::server::ServerSpec;
use crate::config::source_map::{Location, SourceMap};
use crate::config::trigger::{
    DELIVERY_ORDER_ANNOTATION, DeliveryOrder, Filter, FilterExpr, FilterSpec, MAX_BATCH_EVENTS,
    MAX_LINGER, Trigger, TriggerSpec, default_max_in_flight, is_valid_filter_attribute,
};
use crate::config::{Config, ResourceIndex};
use crate::delivery::DeliveryPolicy;

/// Loads `source`; `file` names it in errors.
pub(crate) fn load(source: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut loader = Loader {
        file,
        yaml: SourceMap::build(source),
        map: SourceMap::default(),
        yaml_of: Vec::new(),
        errors: Vec::new(),
    };
    let documents = loader.parse_documents(source);
    let config = loader.build(documents, source);
    let mut errors = loader.errors;
    // File order: by document, then by position. Errors of one field keep their order.
    errors.sort_by_key(|e| {
        (
            e.document().unwrap_or(usize::MAX),
            e.location().is_none(),
            e.location(),
        )
    });
    match ConfigErrors::from_vec(errors) {
        Some(errors) => Err(errors),
        None => Ok(config),
    }
}

/// The name of a `Server` document without metadata.
const SERVER_NAME: &str = "default";

/// The typed form of one document, before cross-resource checks.
struct Parsed<S> {
    document: usize,
    id: ResourceId,
    meta: ObjectMeta,
    spec: S,
}

#[allow(
    clippy::large_enum_variant,
    reason = "documents live only while a config loads, one at a time"
)]
enum Document {
    Broker(Parsed<BrokerSpec>),
    Trigger(Parsed<TriggerSpec>),
    Server(Parsed<ServerSpec>),
    Custom(Parsed<CustomSpec>),
}

impl Document {
    fn id(&self) -> &ResourceId {
        match self {
            Document::Broker(p) => &p.id,
            Document::Trigger(p) => &p.id,
            Document::Server(p) => &p.id,
            Document::Custom(p) => &p.id,
        }
    }

    fn document(&self) -> usize {
        match self {
            Document::Broker(p) => p.document,
            Document::Trigger(p) => p.document,
            Document::Server(p) => p.document,
            Document::Custom(p) => p.document,
        }
    }
}

/// The envelope every kind shares. `apiVersion` and `kind` were read before; `status`, which
/// `kubectl get -o yaml` writes, is ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    metadata: Option<ObjectMeta>,
    spec: Option<S>,
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

/// Documents are numbered as read, each item of a `List` counting as one ("logical"
/// documents, in file order); errors name the YAML document.
struct Loader<'a> {
    file: &'a str,
    /// The text's YAML documents.
    yaml: SourceMap,
    /// The logical documents: each a YAML document or one item of a `List`.
    map: SourceMap,
    /// The YAML document of each logical one.
    yaml_of: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl Loader<'_> {
    /// Records an error about `path` of `document`, located through the source map.
    fn error(
        &mut self,
        document: usize,
        resource: Option<&ResourceId>,
        path: FieldPath,
        kind: ErrorKind,
    ) {
        let location = self.locate(document, &path);
        self.error_at(document, location, resource, path, kind);
    }

    fn error_at(
        &mut self,
        document: usize,
        location: Option<Location>,
        resource: Option<&ResourceId>,
        path: FieldPath,
        kind: ErrorKind,
    ) {
        self.errors.push(ConfigError::new(
            self.file,
            location,
            Some(self.yaml_of.get(document).copied().unwrap_or(document)),
            resource.cloned(),
            path,
            kind,
        ));
    }

    /// Numbers a logical document: YAML document `index`, or item `item` of the `List` it
    /// holds, located in the text as such. A whole document's map moves (each is numbered
    /// once); an item's is copied out of its list's.
    fn logical(&mut self, index: usize, item: Option<usize>) -> usize {
        let map = match item {
            Some(i) => self
                .yaml
                .document(index)
                .map(|d| d.subtree(&FieldPath::root().key("items").index(i))),
            None => self.yaml.take(index),
        };
        self.yaml_of.push(index);
        self.map.push(map.unwrap_or_default())
    }

    /// The items of a `v1` `List`, each read as a document of its own; `None` for any other
    /// document.
    fn list_items(&mut self, index: usize, value: &Value) -> Option<Vec<Document>> {
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        if field("apiVersion") != Some("v1") || field("kind") != Some("List") {
            return None;
        }
        let Some(Value::Sequence(items)) = value.get("items") else {
            let list = self.logical(index, None);
            let kind = ErrorKind::Invalid("a List's items must be a sequence of resources".into());
            self.error(list, None, FieldPath::root().key("items"), kind);
            return Some(Vec::new());
        };
        let mut documents = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let logical = self.logical(index, Some(i));
            documents.extend(self.parse_document(logical, item.clone()));
        }
        Some(documents)
    }

    fn locate(&self, document: usize, path: &FieldPath) -> Option<Location> {
        self.map.document(document)?.locate(path)
    }

    fn parse_documents(&mut self, source: &str) -> Vec<Document> {
        let mut documents = Vec::new();
        for (index, deserializer) in serde_norway::Deserializer::from_str(source).enumerate() {
            match Value::deserialize(deserializer) {
                // An empty document, or one holding only comments.
                Ok(Value::Null) => {}
                Ok(value) => match self.list_items(index, &value) {
                    Some(items) => documents.extend(items),
                    None => {
                        let logical = self.logical(index, None);
                        documents.extend(self.parse_document(logical, value));
                    }
                },
                Err(error) => {
                    let location = error.location().map(|l| Location {
                        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
                        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
                    });
                    let mut message = error.to_string();
                    if let Some(l) = location {
                        // The position is printed in front already.
                        message = message.replacen(
                            &format!(" at line {} column {}", l.line, l.column),
                            "",
                            1,
                        );
                    }
                    let location = location.map(|l| within(l, source));
                    let logical = self.logical(index, None);
                    self.error_at(
                        logical,
                        location,
                        None,
                        FieldPath::root(),
                        ErrorKind::Syntax(message),
                    );
                    // The parser cannot resynchronise after a syntax error.
                    break;
                }
            }
        }
        documents
    }

    fn parse_document(&mut self, document: usize, mut value: Value) -> Option<Document> {
        let root = FieldPath::root();
        // YAML merge keys (`<<: *defaults`) are resolved before anything reads the document.
        if let Err(error) = value.apply_merge() {
            self.error(document, None, root, ErrorKind::Invalid(error.to_string()));
            return None;
        }
        let Value::Mapping(mapping) = &value else {
            self.error(
                document,
                None,
                root,
                ErrorKind::NotAMapping {
                    found: describe(&value),
                },
            );
            return None;
        };
        let api_version = self.type_field(document, mapping, "apiVersion")?;
        let kind_name = self.type_field(document, mapping, "kind")?;
        let kind = match Kind::ALL.iter().find(|k| k.name() == kind_name) {
            Some(&kind) if kind.api_version() == api_version => kind,
            Some(&kind) => {
                self.error(
                    document,
                    None,
                    root.key("apiVersion"),
                    ErrorKind::WrongApiVersion {
                        kind,
                        found: api_version,
                    },
                );
                return None;
            }
            None => {
                let suggestion = suggest(&kind_name, Kind::ALL.iter().map(|k| k.name()));
                self.error(
                    document,
                    None,
                    root.key("kind"),
                    ErrorKind::UnknownKind {
                        api_version,
                        kind: kind_name,
                        suggestion,
                    },
                );
                return None;
            }
        };
        // The id as far as it can be read now, so that errors in the typed pass can name the
        // resource.
        let id = provisional_id(kind, mapping);
        match kind {
            Kind::Broker => {
                let envelope = self.typed::<Envelope<BrokerSpec>>(document, id.as_ref(), value)?;
                let meta = self.required_meta(document, id.as_ref(), envelope.metadata)?;
                let parsed =
                    self.parsed(document, kind, meta, envelope.spec.unwrap_or_default())?;
                Some(Document::Broker(parsed))
            }
            Kind::Trigger => {
                let envelope = self.typed::<Envelope<TriggerSpec>>(document, id.as_ref(), value)?;
                let meta = self.required_meta(document, id.as_ref(), envelope.metadata)?;
                let Some(spec) = envelope.spec else {
                    self.error(
                        document,
                        id.as_ref(),
                        root,
                        ErrorKind::MissingField {
                            field: "spec".into(),
                        },
                    );
                    return None;
                };
                let parsed = self.parsed(document, kind, meta, spec)?;
                Some(Document::Trigger(parsed))
            }
            Kind::Exec => {
                self.custom::<ExecSpec>(document, kind, id.as_ref(), value, CustomSpec::Exec)
            }
            Kind::PingSource => {
                self.custom::<PingSourceSpec>(document, kind, id.as_ref(), value, |spec| {
                    CustomSpec::PingSource(Box::new(spec))
                })
            }
            Kind::EventPolicy => self.custom::<EventPolicySpec>(
                document,
                kind,
                id.as_ref(),
                value,
                CustomSpec::EventPolicy,
            ),
            Kind::Scheduler => self.custom::<SchedulerSpec>(
                document,
                kind,
                id.as_ref(),
                value,
                CustomSpec::Scheduler,
            ),
            Kind::OssSource => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::OssSource(Box::new(s))
            }),
            Kind::S3Source => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::S3Source(Box::new(s))
            }),
            Kind::GitHubSource => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::GitHubSource(Box::new(s))
            }),
            Kind::RegistrySource => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::RegistrySource(Box::new(s))
            }),
            Kind::BucketWatch => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::BucketWatch(Box::new(s))
            }),
            Kind::WorkerPool => {
                self.custom::<WorkerPoolSpec>(document, kind, id.as_ref(), value, |spec| {
                    CustomSpec::WorkerPool(Box::new(spec))
                })
            }
            Kind::KafkaSource => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::KafkaSource(Box::new(s))
            }),
            Kind::KafkaSink => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::KafkaSink(Box::new(s))
            }),
            Kind::RocketMQSource => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::RocketMQSource(Box::new(s))
            }),
            Kind::RocketMQSink => self.custom(document, kind, id.as_ref(), value, |s| {
                CustomSpec::RocketMQSink(Box::new(s))
            }),
            Kind::Server => {
                let envelope = self.typed::<Envelope<ServerSpec>>(document, id.as_ref(), value)?;
                // A Server needs no metadata; its name only appears in messages.
                let meta = envelope
                    .metadata
                    .unwrap_or_else(|| ObjectMeta::new(SERVER_NAME, DEFAULT_NAMESPACE));
                let parsed =
                    self.parsed(document, kind, meta, envelope.spec.unwrap_or_default())?;
                Some(Document::Server(parsed))
            }
        }
    }

    /// Parses a custom kind's document: metadata and spec are required.
    fn custom<S: DeserializeOwned>(
        &mut self,
        document: usize,
        kind: Kind,
        id: Option<&ResourceId>,
        value: Value,
        wrap: fn(S) -> CustomSpec,
    ) -> Option<Document> {
        let envelope = self.typed::<Envelope<S>>(document, id, value)?;
        let meta = self.required_meta(document, id, envelope.metadata)?;
        let Some(spec) = envelope.spec else {
            self.error(
                document,
                id,
                FieldPath::root(),
                ErrorKind::MissingField {
                    field: "spec".into(),
                },
            );
            return None;
        };
        let parsed = self.parsed(document, kind, meta, wrap(spec))?;
        Some(Document::Custom(parsed))
    }

    /// Reads `apiVersion` or `kind`, which must be strings.
    fn type_field(
        &mut self,
        document: usize,
        mapping: &serde_norway::Mapping,
        field: &str,
    ) -> Option<String> {
        match mapping.get(field) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                self.error(
                    document,
                    None,
                    FieldPath::root().key(field),
                    ErrorKind::Invalid(format!(
                        "{field} must be a string, found {}",
                        describe(other)
                    )),
                );
                None
            }
            None => {
                self.error(
                    document,
                    None,
                    FieldPath::root(),
                    ErrorKind::MissingField {
                        field: field.to_owned(),
                    },
                );
                None
            }
        }
    }

    fn required_meta(
        &mut self,
        document: usize,
        id: Option<&ResourceId>,
        meta: Option<ObjectMeta>,
    ) -> Option<ObjectMeta> {
        if meta.is_none() {
            self.error(
                document,
                id,
                FieldPath::root(),
                ErrorKind::MissingField {
                    field: "metadata".into(),
                },
            );
        }
        meta
    }

    /// Checks name and namespace, and builds the id.
    fn parsed<S>(
        &mut self,
        document: usize,
        kind: Kind,
        meta: ObjectMeta,
        spec: S,
    ) -> Option<Parsed<S>> {
        let id = ResourceId {
            kind,
            namespace: kind.is_namespaced().then(|| meta.namespace.clone()),
            name: meta.name.clone(),
        };
        let metadata = FieldPath::root().key("metadata");
        let mut ok = true;
        if let Err(reason) = check_name(&meta.name) {
            self.error(
                document,
                Some(&id),
                metadata.key("name"),
                ErrorKind::InvalidName {
                    what: "name",
                    value: meta.name.clone(),
                    reason,
                },
            );
            ok = false;
        }
        if kind.is_namespaced()
            && let Err(reason) = check_namespace(&meta.namespace)
        {
            self.error(
                document,
                Some(&id),
                metadata.key("namespace"),
                ErrorKind::InvalidName {
                    what: "namespace",
                    value: meta.namespace.clone(),
                    reason,
                },
            );
            ok = false;
        }
        ok.then_some(Parsed {
            document,
            id,
            meta,
            spec,
        })
    }

    /// Deserializes `value` into `T`, turning a failure into an error at the field it is
    /// about.
    fn typed<T: DeserializeOwned>(
        &mut self,
        document: usize,
        id: Option<&ResourceId>,
        value: Value,
    ) -> Option<T> {
        let error = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(typed) => return Some(typed),
            Err(error) => error,
        };
        let mut path = FieldPath::root();
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => path.push(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => path.push(Segment::Index(*index)),
                serde_path_to_error::Segment::Enum { variant } => {
                    path.push(Segment::Key(variant.clone()));
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let message = error.inner().to_string();
        let (report_path, kind) = interpret(path.clone(), &message);
        // Point at the offending key itself when there is one (an unknown field), else at
        // the field reported.
        let location = self.locate(document, &path);
        self.error_at(document, location, id, report_path, kind);
        None
    }

    /// Cross-resource checks and validation of each resource.
    fn build(&mut self, documents: Vec<Document>, source: &str) -> Config {
        // Duplicates and the single Server.
        let mut first_seen: HashMap<ResourceId, usize> = HashMap::new();
        let mut server: Option<Parsed<ServerSpec>> = None;
        let mut brokers = Vec::new();
        let mut triggers = Vec::new();
        let mut custom = Vec::new();
        for document in documents {
            let index = document.document();
            let name_path = FieldPath::root().key("metadata").key("name");
            if let Some(&first) = first_seen.get(document.id()) {
                let first = self.locate(first, &name_path);
                let id = document.id().clone();
                self.error(index, Some(&id), name_path, ErrorKind::Duplicate { first });
                continue;
            }
            first_seen.insert(document.id().clone(), index);
            match document {
                Document::Server(parsed) => match &server {
                    Some(first) => {
                        let first = self.locate(first.document, &FieldPath::root().key("kind"));
                        self.error(
                            index,
                            Some(&parsed.id),
                            FieldPath::root().key("kind"),
                            ErrorKind::SecondServer { first },
                        );
                    }
                    None => server = Some(parsed),
                },
                Document::Broker(parsed) => brokers.push(parsed),
                Document::Trigger(parsed) => triggers.push(parsed),
                Document::Custom(parsed) => custom.push(parsed),
            }
        }

        let (server_spec, server_source) = match server {
            Some(parsed) => {
                self.check_server(&parsed);
                (parsed.spec, Some((parsed.id, parsed.document)))
            }
            None => (ServerSpec::default(), None),
        };
        let broker_names: BTreeSet<(String, String)> = brokers
            .iter()
            .map(|b| (b.meta.namespace.clone(), b.meta.name.clone()))
            .collect();

        let brokers: Vec<Broker> = brokers
            .into_iter()
            .filter_map(|parsed| self.build_broker(parsed, &broker_names, &server_spec))
            .collect();
        let triggers: Vec<Trigger> = triggers
            .into_iter()
            .filter_map(|parsed| self.build_trigger(parsed, &broker_names, &server_spec))
            .collect();
        let custom: Vec<CustomResource> = custom
            .into_iter()
            .filter_map(|parsed| self.build_custom(parsed, &broker_names, &server_spec))
            .collect();

        let mut order: Vec<(usize, ResourceIndex)> = brokers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.document, ResourceIndex::Broker(i)))
            .chain(
                triggers
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.document, ResourceIndex::Trigger(i))),
            )
            .chain(
                server_source
                    .as_ref()
                    .map(|&(_, d)| (d, ResourceIndex::Server)),
            )
            .chain(
                custom
                    .iter()
                    .enumerate()
                    .map(|(i, c): (usize, &CustomResource)| (c.document, ResourceIndex::Custom(i))),
            )
            .collect();
        order.sort_by_key(|&(document, _)| document);

        Config::assemble(
            self.file.to_owned(),
            source,
            std::mem::take(&mut self.map),
            server_spec,
            server_source,
            brokers,
            triggers,
            custom,
            order,
        )
    }

    fn check_server(&mut self, parsed: &Parsed<ServerSpec>) {
        let spec = &parsed.spec;
        let max_event_bytes = spec.limits.max_event_bytes;
        let root = FieldPath::root().key("spec");
        let limits = [
            (
                root.key("limits").key("maxRequestBytes"),
                spec.limits.max_request_bytes,
            ),
            (
                root.key("queues").key("shard").key("bytes"),
                spec.queues.shard.bytes,
            ),
            (
                root.key("queues").key("trigger").key("bytes"),
                spec.queues.trigger.bytes,
            ),
        ];
        for (path, value) in limits {
            if value < max_event_bytes {
                self.error(
                    parsed.document,
                    Some(&parsed.id),
                    path,
                    ErrorKind::LimitBelowEventSize {
                        value,
                        max_event_bytes,
                    },
                );
            }
        }
        // A request is queued whole or not at all, and its events that share a partition key
        // go to one shard: a shard queue smaller than the largest request could never take
        // such a request, and 429 would tell its producer to retry it forever.
        let shard = root.key("queues").key("shard");
        let (queue, limits) = (spec.queues.shard, spec.limits);
        if queue.events < limits.max_batch_events {
            self.error(
                parsed.document,
                Some(&parsed.id),
                shard.key("events"),
                ErrorKind::ShardBelowRequest {
                    value: queue.events.to_string(),
                    limit: "maxBatchEvents",
                    limit_value: limits.max_batch_events.to_string(),
                },
            );
        }
        // Below maxEventBytes is reported above already.
        if queue.bytes >= max_event_bytes && queue.bytes < limits.max_request_bytes {
            self.error(
                parsed.document,
                Some(&parsed.id),
                shard.key("bytes"),
                ErrorKind::ShardBelowRequest {
                    value: queue.bytes.to_string(),
                    limit: "maxRequestBytes",
                    limit_value: limits.max_request_bytes.to_string(),
                },
            );
        }
        // Zero is a valid duration, and a disastrous wait here.
        let store = root.key("store");
        for (field, value, why) in [
            (
                "ackWait",
                spec.store.ack_wait,
                "JetStream would hand every event to another replica at once",
            ),
            (
                "publishTimeout",
                spec.store.publish_timeout,
                "every publish would time out",
            ),
        ] {
            if value.get().is_zero() {
                self.error(
                    parsed.document,
                    Some(&parsed.id),
                    store.key(field),
                    ErrorKind::Invalid(format!("must be more than zero: {why}")),
                );
            }
        }
        // HTTP: a request body is buffered whole before it is decoded.
        if limits.max_buffered_bytes < limits.max_request_bytes {
            self.error(
                parsed.document,
                Some(&parsed.id),
                root.key("limits").key("maxBufferedBytes"),
                ErrorKind::Invalid(format!(
                    "{} is below limits.maxRequestBytes ({}): a request of that size could never be read",
                    limits.max_buffered_bytes, limits.max_request_bytes
                )),
            );
        }
        // QUIC: a frame body is buffered whole before it is decoded.
        let quic = root.key("quic");
        if spec.quic.max_buffered_bytes < limits.max_request_bytes {
            self.error(
                parsed.document,
                Some(&parsed.id),
                quic.key("maxBufferedBytes"),
                ErrorKind::Invalid(format!(
                    "{} is below limits.maxRequestBytes ({}): a frame of that size could never be read",
                    spec.quic.max_buffered_bytes, limits.max_request_bytes
                )),
            );
        }
        for (i, pin) in spec.quic.client.pinned_sha256.iter().enumerate() {
            if let Err(reason) = crate::quic::parse_fingerprint(pin) {
                self.error(
                    parsed.document,
                    Some(&parsed.id),
                    quic.key("client").key("pinnedSha256").index(i),
                    ErrorKind::Invalid(format!("{pin:?} is not a SHA-256 fingerprint: {reason}")),
                );
            }
        }
    }

    /// Resolves a custom resource's `sink` and `delivery`, the parts every source shares.
    fn build_custom(
        &mut self,
        parsed: Parsed<CustomSpec>,
        brokers: &BTreeSet<(String, String)>,
        server: &ServerSpec,
    ) -> Option<CustomResource> {
        let resolver = Resolver {
            namespace: &parsed.meta.namespace,
            brokers,
            data_dir: &server.data_dir,
        };
        let spec_path = FieldPath::root().key("spec");
        let mut check = Check::new(self, parsed.document, &parsed.id);
        let sink = match parsed.spec.sink_spec() {
            Some(sink) => Some(check.resolve(&resolver, sink, &spec_path.key("sink"))?),
            None => None,
        };
        let delivery = match parsed.spec.delivery_spec().filter(|d| d.is_set()) {
            Some(spec) => Some(check.delivery(spec, &spec_path.key("delivery"), &resolver)?),
            None => None,
        };
        let filters_path = spec_path.key("filters");
        let filters: Vec<Option<Filter>> = parsed
            .spec
            .filter_specs()
            .iter()
            .enumerate()
            .map(|(i, f)| check.filter(f, filters_path.index(i)))
            .collect();
        if let CustomSpec::EventPolicy(policy) = &parsed.spec {
            if policy.from.is_empty() {
                check.error(
                    spec_path.clone(),
                    ErrorKind::MissingField {
                        field: "from".into(),
                    },
                );
            }
            for (i, sender) in policy.from.iter().enumerate() {
                let path = spec_path.key("from").index(i);
                match (&sender.sub, &sender.reference) {
                    // `strip_suffix`, not `sub[..len - 1]`: the last character may take more
                    // than one byte (a `config_load` fuzz finding, see docs/fuzzing.md).
                    (Some(sub), None)
                        if !sub.is_empty() && !sub.strip_suffix('*').unwrap_or(sub).contains('*') => {}
                    (Some(_), None) => check.error(
                        path.key("sub"),
                        ErrorKind::Invalid("a sender is an identity, with at most one `*`, at its end".into()),
                    ),
                    (_, Some(_)) => check.error(
                        path.key("ref"),
                        ErrorKind::Invalid(
                            "from.ref is not supported: sources run in-process and never pass ingress; use sub".into(),
                        ),
                    ),
                    (None, None) => check.error(path, ErrorKind::MissingField { field: "sub".into() }),
                }
            }
            for (i, target) in policy.to.iter().enumerate() {
                let path = spec_path.key("to").index(i);
                let (api, kind) = match (&target.reference, &target.selector) {
                    (Some(r), None) => (&r.api_version, &r.kind),
                    (None, Some(s)) => (&s.api_version, &s.kind),
                    _ => {
                        check.error(
                            path,
                            ErrorKind::Invalid(
                                "each `to` element has exactly one of ref and selector".into(),
                            ),
                        );
                        continue;
                    }
                };
                if api != crate::config::meta::KNATIVE_EVENTING_V1 || kind != "Broker" {
                    check.error(
                        path,
                        ErrorKind::Invalid(format!("policies apply to brokers (eventing.knative.dev/v1 Broker), not {api} {kind}")),
                    );
                }
            }
        }
        if check.failed {
            return None;
        }
        Some(CustomResource {
            id: parsed.id,
            meta: parsed.meta,
            spec: parsed.spec,
            document: parsed.document,
            sink,
            delivery,
            filters: filters.into_iter().flatten().collect(),
        })
    }

    fn build_broker(
        &mut self,
        parsed: Parsed<BrokerSpec>,
        brokers: &BTreeSet<(String, String)>,
        server: &ServerSpec,
    ) -> Option<Broker> {
        let resolver = Resolver {
            namespace: &parsed.meta.namespace,
            brokers,
            data_dir: &server.data_dir,
        };
        let mut check = Check::new(self, parsed.document, &parsed.id);
        let delivery = match parsed.spec.delivery.as_ref().filter(|d| d.is_set()) {
            Some(spec) => Some(check.delivery(
                spec,
                &FieldPath::root().key("spec").key("delivery"),
                &resolver,
            )?),
            None => None,
        };
        Some(Broker {
            id: parsed.id,
            meta: parsed.meta,
            delivery,
            document: parsed.document,
        })
    }

    fn build_trigger(
        &mut self,
        parsed: Parsed<TriggerSpec>,
        brokers: &BTreeSet<(String, String)>,
        server: &ServerSpec,
    ) -> Option<Trigger> {
        let namespace = parsed.meta.namespace.clone();
        let resolver = Resolver {
            namespace: &namespace,
            brokers,
            data_dir: &server.data_dir,
        };
        let spec_path = FieldPath::root().key("spec");
        let spec = &parsed.spec;
        let mut check = Check::new(self, parsed.document, &parsed.id);

        // The broker, in the trigger's namespace.
        if spec.broker.is_empty() {
            check.error(
                spec_path.clone(),
                ErrorKind::MissingField {
                    field: "broker".into(),
                },
            );
        } else if !brokers.contains(&(namespace.clone(), spec.broker.clone())) {
            let suggestion = suggest(
                &spec.broker,
                brokers
                    .iter()
                    .filter(|(ns, _)| *ns == namespace)
                    .map(|(_, n)| n.as_str()),
            );
            check.error(
                spec_path.key("broker"),
                ErrorKind::UnknownBroker {
                    namespace: namespace.clone(),
                    name: spec.broker.clone(),
                    suggestion,
                },
            );
        }

        // Knative's attribute filter.
        let attributes = spec
            .filter
            .as_ref()
            .map(|f| f.attributes.clone())
            .unwrap_or_default();
        let attributes_path = spec_path.key("filter").key("attributes");
        for name in attributes.keys() {
            if !is_valid_filter_attribute(name) {
                check.error(
                    attributes_path.key(name.as_str()),
                    ErrorKind::InvalidAttributeName { name: name.clone() },
                );
            }
        }

        // SubscriptionsAPI filters.
        let filters_path = spec_path.key("filters");
        let filters: Vec<Option<Filter>> = spec
            .filters
            .iter()
            .enumerate()
            .map(|(i, filter)| check.filter(filter, filters_path.index(i)))
            .collect();

        let mut subscriber =
            check.resolve(&resolver, &spec.subscriber, &spec_path.key("subscriber"));
        let mut http_batch = None;
        if let Some(batch) = &spec.batch {
            let path = spec_path.key("batch");
            let batching = match subscriber.as_mut() {
                Some(Destination::Quic(q)) => Some(&mut q.batch),
                Some(d) if d.http_url().is_some() => Some(http_batch.insert(Batching::default())),
                Some(_) => {
                    check.error(
                        path.clone(),
                        ErrorKind::Invalid(
                            "batch applies only to quic:// and HTTP(S) subscribers".into(),
                        ),
                    );
                    None
                }
                None => None,
            };
            if let Some(batching) = batching {
                if let Some(n) = batch.max_events {
                    if n.get() > MAX_BATCH_EVENTS {
                        check.error(
                            path.key("maxEvents"),
                            ErrorKind::Invalid(format!(
                                "{n} is over the limit of {MAX_BATCH_EVENTS} events"
                            )),
                        );
                    }
                    batching.max_events = n;
                }
                if let Some(linger) = batch.linger {
                    if linger.get() > MAX_LINGER {
                        check.error(
                            path.key("linger"),
                            ErrorKind::Invalid(format!(
                                "{linger} is longer than the limit of PT1S"
                            )),
                        );
                    }
                    batching.linger = linger.get();
                }
            }
        }
        // `delivery: {}` sets nothing: the broker's applies.
        let delivery = spec
            .delivery
            .as_ref()
            .filter(|d| d.is_set())
            .map(|d| check.delivery(d, &spec_path.key("delivery"), &resolver));

        let delivery_order = match parsed.meta.annotations.get(DELIVERY_ORDER_ANNOTATION) {
            None => DeliveryOrder::default(),
            Some(value) => match DeliveryOrder::from_name(value) {
                Some(order) => order,
                None => {
                    check.error(
                        FieldPath::root()
                            .key("metadata")
                            .key("annotations")
                            .key(DELIVERY_ORDER_ANNOTATION),
                        unknown_value(value, DeliveryOrder::NAMES),
                    );
                    DeliveryOrder::default()
                }
            },
        };

        if check.failed {
            return None;
        }
        let max_in_flight = parsed
            .spec
            .max_in_flight
            .unwrap_or_else(|| default_max_in_flight(http_batch.as_ref()));
        Some(Trigger {
            id: parsed.id.clone(),
            broker: parsed.spec.broker.clone(),
            attributes,
            filters: filters.into_iter().flatten().collect(),
            subscriber: subscriber?,
            http_batch,
            delivery: delivery.flatten(),
            delivery_order,
            max_in_flight,
            rate_limit: parsed.spec.rate_limit,
            subscriber_audience: parsed.spec.subscriber.audience.clone(),
            subscriber_token: parsed.spec.subscriber.token.clone(),
            document: parsed.document,
            meta: parsed.meta,
        })
    }
}

/// Checks of one resource: remembers whether any failed.
struct Check<'l, 'a> {
    loader: &'l mut Loader<'a>,
    document: usize,
    id: &'l ResourceId,
    failed: bool,
}

impl<'l, 'a> Check<'l, 'a> {
    fn new(loader: &'l mut Loader<'a>, document: usize, id: &'l ResourceId) -> Self {
        Check {
            loader,
            document,
            id,
            failed: false,
        }
    }

    fn error(&mut self, path: FieldPath, kind: ErrorKind) {
        self.failed = true;
        self.loader.error(self.document, Some(self.id), path, kind);
    }

    fn resolve(
        &mut self,
        resolver: &Resolver<'_>,
        spec: &DestinationSpec,
        path: &FieldPath,
    ) -> Option<Destination> {
        match resolver.resolve(spec, path) {
            Ok(destination) => Some(destination),
            Err((path, kind)) => {
                self.error(path, kind);
                None
            }
        }
    }

    fn delivery(
        &mut self,
        spec: &DeliverySpec,
        path: &FieldPath,
        resolver: &Resolver<'_>,
    ) -> Option<Delivery> {
        let dead_letter_sink = match &spec.dead_letter_sink {
            Some(sink) => self
                .resolve(resolver, sink, &path.key("deadLetterSink"))
                .map(Some),
            None => Some(None),
        };
        let policy = match DeliveryPolicy::from_spec(spec) {
            Ok(policy) => Some(policy),
            Err(error) => {
                self.error(path.key(error.field()), error.into());
                None
            }
        };
        let pipelining = match spec.pipelining {
            None => Some(NonZeroU16::MIN),
            Some(depth) => match NonZeroU16::new(depth).filter(|d| d.get() <= MAX_PIPELINING) {
                Some(depth) => Some(depth),
                None => {
                    self.error(
                        path.key("pipelining"),
                        ErrorKind::Invalid(format!(
                            "{depth} requests per connection: expected 1 to {MAX_PIPELINING}"
                        )),
                    );
                    None
                }
            },
        };
        Some(
            Delivery::new(policy?, dead_letter_sink?, spec.format.unwrap_or_default())
                .with_pipelining(pipelining?),
        )
    }

    /// Validates one `filters` element at `path`.
    fn filter(&mut self, spec: &FilterSpec, path: FieldPath) -> Option<Filter> {
        let found: Vec<&'static str> = [
            ("exact", spec.exact.is_some()),
            ("prefix", spec.prefix.is_some()),
            ("suffix", spec.suffix.is_some()),
            ("all", spec.all.is_some()),
            ("any", spec.any.is_some()),
            ("not", spec.not.is_some()),
            ("cesql", spec.cesql.is_some()),
        ]
        .into_iter()
        .filter_map(|(dialect, set)| set.then_some(dialect))
        .collect();
        if found.len() != 1 {
            self.error(path, ErrorKind::FilterDialects { found });
            return None;
        }
        let expr = if let Some(map) = &spec.exact {
            let (attribute, value) = self.single_attribute("exact", map, &path)?;
            FilterExpr::Exact { attribute, value }
        } else if let Some(map) = &spec.prefix {
            let (attribute, value) = self.single_attribute("prefix", map, &path)?;
            FilterExpr::Prefix { attribute, value }
        } else if let Some(map) = &spec.suffix {
            let (attribute, value) = self.single_attribute("suffix", map, &path)?;
            FilterExpr::Suffix { attribute, value }
        } else if let Some(list) = &spec.all {
            FilterExpr::All(self.filter_list("all", list, &path)?)
        } else if let Some(list) = &spec.any {
            FilterExpr::Any(self.filter_list("any", list, &path)?)
        } else if let Some(inner) = &spec.not {
            FilterExpr::Not(Box::new(self.filter(inner, path.key("not"))?))
        } else if let Some(expression) = &spec.cesql {
            if expression.trim().is_empty() {
                self.error(path.key("cesql"), ErrorKind::EmptyCesql);
                return None;
            }
            FilterExpr::Cesql(expression.clone())
        } else {
            return None;
        };
        Some(Filter { expr, path })
    }

    /// `exact`, `prefix` and `suffix` take one attribute, with a valid name and a non-empty
    /// value.
    fn single_attribute(
        &mut self,
        dialect: &'static str,
        map: &BTreeMap<String, String>,
        path: &FieldPath,
    ) -> Option<(String, String)> {
        let path = path.key(dialect);
        let mut entries = map.iter();
        let (Some((attribute, value)), None) = (entries.next(), entries.next()) else {
            self.error(
                path,
                ErrorKind::FilterAttributeCount {
                    dialect,
                    count: map.len(),
                },
            );
            return None;
        };
        let mut ok = true;
        if !is_valid_filter_attribute(attribute) {
            self.error(
                path.key(attribute.as_str()),
                ErrorKind::InvalidAttributeName {
                    name: attribute.clone(),
                },
            );
            ok = false;
        }
        if value.is_empty() {
            self.error(
                path.key(attribute.as_str()),
                ErrorKind::EmptyFilterValue {
                    dialect,
                    attribute: attribute.clone(),
                },
            );
            ok = false;
        }
        ok.then(|| (attribute.clone(), value.clone()))
    }

    fn filter_list(
        &mut self,
        dialect: &'static str,
        list: &[FilterSpec],
        path: &FieldPath,
    ) -> Option<Vec<Filter>> {
        let path = path.key(dialect);
        if list.is_empty() {
            self.error(path, ErrorKind::EmptyFilterList { dialect });
            return None;
        }
        let filters: Vec<Option<Filter>> = list
            .iter()
            .enumerate()
            .map(|(i, spec)| self.filter(spec, path.index(i)))
            .collect();
        filters.into_iter().collect()
    }
}

/// The resource id read from a raw document, for messages; `None` without a string
/// `metadata.name`.
fn provisional_id(kind: Kind, mapping: &serde_norway::Mapping) -> Option<ResourceId> {
    let metadata = mapping.get("metadata");
    if metadata.is_none() && kind == Kind::Server {
        // A Server needs no metadata; see `parse_document`.
        return Some(ResourceId {
            kind,
            namespace: None,
            name: SERVER_NAME.to_owned(),
        });
    }
    let metadata = metadata?;
    let name = metadata.get("name")?.as_str()?.to_owned();
    let namespace = kind.is_namespaced().then(|| {
        metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned()
    });
    Some(ResourceId {
        kind,
        namespace,
        name,
    })
}

/// `location`, moved back into `source` when it points past its end: at the end of a text
/// without a final line break, the YAML scanner closes a virtual line and reports the error on
/// the line after the last one (found by the `config_load` fuzz target; see
/// `docs/fuzzing.md`). Lines are counted as YAML counts them: `\r\n`, `\r` and `\n` each end
/// one.
fn within(location: Location, source: &str) -> Location {
    let breaks = source.matches('\n').count() + source.matches('\r').count()
        - source.matches("\r\n").count();
    let last_line = breaks + 1;
    if location.line as usize <= last_line {
        return location;
    }
    let last = source.rsplit(['\n', '\r']).next().unwrap_or_default();
    Location {
        line: u32::try_from(last_line).unwrap_or(u32::MAX),
        column: u32::try_from(last.chars().count() + 1).unwrap_or(u32::MAX),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn unknown_value(value: &str, expected: &[&str]) -> ErrorKind {
    ErrorKind::UnknownValue {
        value: value.to_owned(),
        suggestion: suggest(value, expected.iter().copied()),
        expected: expected.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Turns a serde error message at `path` into the path to report and a typed error.
///
/// serde's messages for unknown fields, missing fields and unknown variants have had the same
/// shape for years (`` unknown field `x`, expected one of `a`, `b` ``); anything else is kept
/// as it is.
fn interpret(path: FieldPath, message: &str) -> (FieldPath, ErrorKind) {
    let quoted = backticked(message);
    if message.starts_with("unknown field `")
        && let Some((field, expected)) = quoted.split_first()
    {
        // serde_path_to_error's path ends with the unknown key; report its parent.
        let parent = path.parent().unwrap_or_default();
        let kind = ErrorKind::UnknownField {
            field: field.clone(),
            suggestion: suggest(field, expected.iter().map(String::as_str)),
            expected: expected.to_vec(),
        };
        return (parent, kind);
    }
    if message.starts_with("missing field `")
        && let Some(field) = quoted.first()
    {
        let kind = ErrorKind::MissingField {
            field: field.clone(),
        };
        return (path, kind);
    }
    if message.starts_with("unknown variant `")
        && let Some((value, expected)) = quoted.split_first()
    {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        return (path, unknown_value(value, &expected));
    }
    (path, ErrorKind::Invalid(message.to_owned()))
}

/// The `` `quoted` `` words of a serde message, in order.
fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interprets_serde_messages() {
        let path: FieldPath = "spec.brokr".parse().unwrap();
        let (at, kind) = interpret(
            path,
            "unknown field `brokr`, expected one of `broker`, `filter`",
        );
        assert_eq!(at.to_string(), "spec");
        assert_eq!(
            kind.to_string(),
            r#"unknown field "brokr", did you mean "broker"?"#
        );

        let (_, kind) = interpret(
            "x".parse().unwrap(),
            "unknown field `x`, there are no fields",
        );
        assert_eq!(
            kind.to_string(),
            r#"unknown field "x"; no fields are allowed here"#
        );

        let (at, kind) = interpret("spec".parse().unwrap(), "missing field `broker`");
        assert_eq!(at.to_string(), "spec");
        assert_eq!(kind.to_string(), r#"missing required field "broker""#);

        let (_, kind) = interpret(
            "spec.delivery.backoffPolicy".parse().unwrap(),
            "unknown variant `lineer`, expected `linear` or `exponential`",
        );
        assert_eq!(
            kind.to_string(),
            r#"unknown value "lineer", did you mean "linear"?"#
        );

        let (_, kind) = interpret(
            "a".parse().unwrap(),
            "invalid type: string \"x\", expected u32",
        );
        assert_eq!(kind.to_string(), "invalid type: string \"x\", expected u32");
    }
}
