//! The Knative YAML the router reads: a stream of documents, of which it uses `Broker` and
//! `Trigger` (`spec.broker`, `spec.filter.attributes`, `spec.filters`, `spec.subscriber.uri`)
//! and the listen address of Triggerfish's `Server` document. Other kinds and fields are
//! ignored, as a hand-written tool would.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The brokers and triggers of the file.
#[derive(Debug, Default)]
pub struct Config {
    /// `(namespace, name)` of every broker.
    pub brokers: Vec<(String, String)>,
    /// Every trigger, in file order.
    pub triggers: Vec<TriggerConfig>,
    /// `Server.spec.listen.http`, if the file has one.
    pub listen: Option<SocketAddr>,
}

/// One trigger.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    pub name: String,
    pub namespace: String,
    pub broker: String,
    /// `spec.filter.attributes`.
    pub attributes: BTreeMap<String, String>,
    /// `spec.filters` (when present, `filter.attributes` is ignored, as in Knative).
    pub filters: Vec<FilterConfig>,
    pub subscriber: String,
}

/// One SubscriptionsAPI filter, with its one dialect.
#[derive(Debug, Clone)]
pub enum FilterConfig {
    Exact(BTreeMap<String, String>),
    Prefix(BTreeMap<String, String>),
    Suffix(BTreeMap<String, String>),
    All(Vec<FilterConfig>),
    Any(Vec<FilterConfig>),
    Not(Box<FilterConfig>),
    /// Refused when the config is read: the baseline has no CESQL engine.
    Cesql,
}

/// A filter as written: Knative's `SubscriptionsAPIFilter`, one optional field per dialect.
/// (An externally tagged enum would be neater, but serde_norway reads those only from YAML
/// tags once a document has become a `Value`.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    exact: Option<BTreeMap<String, String>>,
    prefix: Option<BTreeMap<String, String>>,
    suffix: Option<BTreeMap<String, String>>,
    all: Option<Vec<FilterSpec>>,
    any: Option<Vec<FilterSpec>>,
    not: Option<Box<FilterSpec>>,
    cesql: Option<String>,
}

impl FilterSpec {
    fn build(self) -> anyhow::Result<FilterConfig> {
        let list = |v: Vec<FilterSpec>| -> anyhow::Result<Vec<FilterConfig>> {
            v.into_iter().map(FilterSpec::build).collect()
        };
        let mut dialects = Vec::new();
        if let Some(m) = self.exact {
            dialects.push(FilterConfig::Exact(m));
        }
        if let Some(m) = self.prefix {
            dialects.push(FilterConfig::Prefix(m));
        }
        if let Some(m) = self.suffix {
            dialects.push(FilterConfig::Suffix(m));
        }
        if let Some(v) = self.all {
            dialects.push(FilterConfig::All(list(v)?));
        }
        if let Some(v) = self.any {
            dialects.push(FilterConfig::Any(list(v)?));
        }
        if let Some(f) = self.not {
            dialects.push(FilterConfig::Not(Box::new(f.build()?)));
        }
        if self.cesql.is_some() {
            dialects.push(FilterConfig::Cesql);
        }
        match dialects.len() {
            1 => Ok(dialects.remove(0)),
            0 => bail!("a filter needs one dialect (exact, prefix, suffix, all, any, not, cesql)"),
            _ => bail!("a filter has exactly one dialect"),
        }
    }
}

#[derive(Deserialize)]
struct Document {
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: serde_norway::Value,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct TriggerSpec {
    broker: String,
    #[serde(default)]
    filter: Option<AttributesFilter>,
    #[serde(default)]
    filters: Vec<FilterSpec>,
    subscriber: Subscriber,
}

#[derive(Deserialize)]
struct AttributesFilter {
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Subscriber {
    uri: Option<String>,
}

#[derive(Default, Deserialize)]
struct ServerSpec {
    #[serde(default)]
    listen: Listen,
}

#[derive(Default, Deserialize)]
struct Listen {
    http: Option<SocketAddr>,
}

impl Config {
    /// Parses the YAML stream.
    pub fn parse(yaml: &str) -> anyhow::Result<Config> {
        let mut config = Config::default();
        for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
            let doc = Document::deserialize(doc).with_context(|| format!("document {}", i + 1))?;
            let namespace = doc
                .metadata
                .namespace
                .unwrap_or_else(|| "default".to_owned());
            let name = doc.metadata.name;
            match doc.kind.as_deref() {
                Some("Broker") => config.brokers.push((namespace, name)),
                Some("Trigger") => {
                    let spec: TriggerSpec = serde_norway::from_value(doc.spec)
                        .with_context(|| format!("trigger {namespace}/{name}"))?;
                    let filters = spec
                        .filters
                        .into_iter()
                        .map(FilterSpec::build)
                        .collect::<anyhow::Result<Vec<_>>>()
                        .with_context(|| format!("trigger {namespace}/{name}: spec.filters"))?;
                    if filters.iter().any(FilterConfig::has_cesql) {
                        bail!("trigger {namespace}/{name}: CESQL filters are not supported");
                    }
                    let Some(subscriber) = spec.subscriber.uri else {
                        bail!("trigger {namespace}/{name}: only subscriber.uri is supported");
                    };
                    config.triggers.push(TriggerConfig {
                        name,
                        namespace,
                        broker: spec.broker,
                        attributes: spec.filter.map(|f| f.attributes).unwrap_or_default(),
                        filters,
                        subscriber,
                    });
                }
                Some("Server") => {
                    let spec: ServerSpec =
                        serde_norway::from_value(doc.spec).context("Server document")?;
                    config.listen = spec.listen.http;
                }
                _ => {}
            }
        }
        for t in &config.triggers {
            if !config
                .brokers
                .iter()
                .any(|(ns, b)| *ns == t.namespace && *b == t.broker)
            {
                bail!(
                    "trigger {}/{}: broker {:?} is not in the file",
                    t.namespace,
                    t.name,
                    t.broker
                );
            }
        }
        Ok(config)
    }
}

impl FilterConfig {
    fn has_cesql(&self) -> bool {
        match self {
            FilterConfig::Cesql => true,
            FilterConfig::All(v) | FilterConfig::Any(v) => v.iter().any(FilterConfig::has_cesql),
            FilterConfig::Not(f) => f.has_cesql(),
            FilterConfig::Exact(_) | FilterConfig::Prefix(_) | FilterConfig::Suffix(_) => false,
        }
    }
}
