//! Config errors: each names the file, the line and column, the resource and the field.

use std::error::Error as StdError;
use std::fmt;

use crate::config::destination::DestinationError;
use crate::config::meta::{Kind, ResourceId};
use crate::config::path::FieldPath;
use crate::config::size::ByteSize;
use crate::config::source_map::Location;
use crate::delivery::DeliveryPolicyError;

/// One problem in a config file.
///
/// It prints as `FILE:LINE:COLUMN: RESOURCE: FIELD: PROBLEM`, leaving out what is not known:
///
/// ```text
/// quickstart.yaml:23:7: Trigger "resize" in namespace "media": spec.filters[1]: each filter must use exactly one dialect, found "exact" and "prefix"
/// ```
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    location: Option<Location>,
    document: Option<usize>,
    resource: Option<ResourceId>,
    path: FieldPath,
    kind: ErrorKind,
}

impl ConfigError {
    /// An error with everything that locates it. `location` is usually found with
    /// [`Config::locate`](crate::config::Config::locate); `document` is the index of the YAML
    /// document, from 0.
    pub fn new(
        file: impl Into<String>,
        location: Option<Location>,
        document: Option<usize>,
        resource: Option<ResourceId>,
        path: FieldPath,
        kind: ErrorKind,
    ) -> ConfigError {
        ConfigError {
            file: file.into(),
            location,
            document,
            resource,
            path,
            kind,
        }
    }

    /// The file name given to the loader.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Line and column, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// The YAML document, from 0, when known.
    pub fn document(&self) -> Option<usize> {
        self.document
    }

    /// The resource, when known.
    pub fn resource(&self) -> Option<&ResourceId> {
        self.resource.as_ref()
    }

    /// The field, from the document root. The root itself for errors about a whole document.
    pub fn path(&self) -> &FieldPath {
        &self.path
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        f.write_str(": ")?;
        match (&self.resource, self.document) {
            (Some(resource), _) => write!(f, "{resource}: ")?,
            (None, Some(document)) if self.location.is_none() => {
                write!(f, "document {}: ", document + 1)?;
            }
            _ => {}
        }
        if !self.path.is_root() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.kind)
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.kind.source()
    }
}

/// Every problem found in a config file, in the order they appear in it. Never empty.
#[derive(Debug)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Wraps a list of errors; `None` if it is empty.
    pub fn from_vec(errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        if errors.is_empty() {
            None
        } else {
            Some(ConfigErrors { errors })
        }
    }

    /// The first error in the file.
    pub fn first(&self) -> &ConfigError {
        // Never empty, by construction.
        &self.errors[0]
    }

    /// The errors in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// How many errors there are (at least one).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always `false`: there is at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, as a vector.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.errors
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> ConfigErrors {
        ConfigErrors {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl StdError for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// What is wrong, without where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// A document is not a mapping.
    #[error("a document must be a mapping with apiVersion, kind, metadata and spec, found {found}")]
    NotAMapping {
        /// What it is instead ("a sequence", "a string"...).
        found: &'static str,
    },
    /// A required field is absent.
    #[error("missing required field {field:?}")]
    MissingField {
        /// The field's name.
        field: String,
    },
    /// A field the schema does not have.
    #[error("unknown field {field:?}{}", Hint { suggestion, expected, noun: "fields" })]
    UnknownField {
        /// The field as written.
        field: String,
        /// A close match among the expected fields, if there is one.
        suggestion: Option<String>,
        /// The fields allowed here.
        expected: Vec<String>,
    },
    /// A value that is not one of a fixed set.
    #[error("unknown value {value:?}{}", Hint { suggestion, expected, noun: "values" })]
    UnknownValue {
        /// The value as written.
        value: String,
        /// A close match among the expected values, if there is one.
        suggestion: Option<String>,
        /// The values allowed here.
        expected: Vec<String>,
    },
    /// A value of the wrong type or form; the message comes from the deserializer or from the
    /// parser of that value (a duration, a size, an address).
    #[error("{0}")]
    Invalid(String),
    /// A document whose `apiVersion` and `kind` Triggerfish does not read.
    #[error("unsupported kind {kind:?} in apiVersion {api_version:?}{}; supported kinds: {}",
        suggestion.as_ref().map(|s| format!(", did you mean {s:?}?")).unwrap_or_default(),
        SupportedKinds)]
    UnknownKind {
        /// `apiVersion` as written.
        api_version: String,
        /// `kind` as written.
        kind: String,
        /// A close match among the supported kinds, if there is one.
        suggestion: Option<String>,
    },
    /// A supported kind under another `apiVersion`.
    #[error("{kind} is read with apiVersion {:?}, found {found:?}", kind.api_version())]
    WrongApiVersion {
        /// The kind.
        kind: Kind,
        /// `apiVersion` as written.
        found: String,
    },
    /// `metadata.name` or `metadata.namespace` does not follow Kubernetes' rules.
    #[error("{value:?} is not a valid {what}: {reason}")]
    InvalidName {
        /// "name" or "namespace".
        what: &'static str,
        /// The value as written.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A second document with the same kind, namespace and name.
    #[error("defined twice{}", first.map(|l| format!("; the first definition is at line {}", l.line)).unwrap_or_default())]
    Duplicate {
        /// Where the first one is.
        first: Option<Location>,
    },
    /// More than one `Server` document.
    #[error("a config may hold only one Server{}", first.map(|l| format!("; the first is at line {}", l.line)).unwrap_or_default())]
    SecondServer {
        /// Where the first one is.
        first: Option<Location>,
    },
    /// A broker that the config does not define.
    #[error("broker {name:?} is not defined in namespace {namespace:?}{}",
        suggestion.as_ref().map(|s| format!(", did you mean {s:?}?")).unwrap_or_default())]
    UnknownBroker {
        /// The namespace looked in.
        namespace: String,
        /// The broker's name.
        name: String,
        /// A close match among the brokers of that namespace.
        suggestion: Option<String>,
    },
    /// A `filters` element that sets no dialect, or more than one.
    #[error("each filter must use exactly one dialect, found {}", Dialects(found))]
    FilterDialects {
        /// The dialects set, in schema order.
        found: Vec<&'static str>,
    },
    /// `exact`, `prefix` or `suffix` with other than one attribute (Knative's rule).
    #[error("{dialect:?} takes exactly one attribute, found {count}; combine several with \"all\"")]
    FilterAttributeCount {
        /// The dialect.
        dialect: &'static str,
        /// How many attributes it has.
        count: usize,
    },
    /// An attribute name that is not `^[a-z][a-z0-9]*$`.
    #[error(
        "attribute name {name:?} is invalid: it must start with a lowercase letter and contain only lowercase letters and digits"
    )]
    InvalidAttributeName {
        /// The name as written.
        name: String,
    },
    /// An empty value in `exact`, `prefix` or `suffix`. Knative accepts these and they match
    /// every event; Triggerfish rejects them.
    #[error(
        "empty value for attribute {attribute:?}: an empty {dialect:?} matches every event, so it is rejected (Knative would let it pass everything)"
    )]
    EmptyFilterValue {
        /// The dialect.
        dialect: &'static str,
        /// The attribute.
        attribute: String,
    },
    /// `all` or `any` with no filters in it.
    #[error("{dialect:?} needs at least one filter")]
    EmptyFilterList {
        /// The dialect.
        dialect: &'static str,
    },
    /// `cesql: ""`.
    #[error("empty CESQL expression")]
    EmptyCesql,
    /// A destination that does not resolve.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// A delivery spec the delivery policy refuses.
    #[error(transparent)]
    Delivery(#[from] DeliveryPolicyError),
    /// A `Server` byte limit below the largest event, so no event could pass it.
    #[error(
        "{value} is smaller than limits.maxEventBytes ({max_event_bytes}), so no event would fit"
    )]
    LimitBelowEventSize {
        /// The limit.
        value: ByteSize,
        /// `limits.maxEventBytes`.
        max_event_bytes: ByteSize,
    },
    /// A shard queue smaller than the largest request ingress accepts. A request is queued
    /// whole or not at all, and its events that share a partition key share a shard, so such
    /// a request could never be queued: ingress would answer it 429 forever.
    #[error(
        "{value} is smaller than limits.{limit} ({limit_value}): a request whose events share a partition key goes to one shard whole, so one that large could never be queued"
    )]
    ShardBelowRequest {
        /// The shard limit, as written.
        value: String,
        /// The request limit it must reach: `maxBatchEvents` or `maxRequestBytes`.
        limit: &'static str,
        /// That limit's value.
        limit_value: String,
    },
    /// A later build step (compiling CESQL, say) failed on a value this module stored as it
    /// was written. Made with [`Config::error_at`](crate::config::Config::error_at).
    #[error("{0}")]
    Build(Box<dyn StdError + Send + Sync>),
}

/// ", did you mean "x"?" or "; expected one of: a, b, c".
struct Hint<'a> {
    suggestion: &'a Option<String>,
    expected: &'a [String],
    noun: &'static str,
}

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(suggestion) = self.suggestion {
            write!(f, ", did you mean {suggestion:?}?")
        } else if self.expected.is_empty() {
            write!(f, "; no {} are allowed here", self.noun)
        } else {
            write!(f, "; expected one of: {}", self.expected.join(", "))
        }
    }
}

/// `"exact" and "prefix"`, `"exact", "prefix" and "not"`, or `none`.
struct Dialects<'a>(&'a [&'static str]);

impl fmt::Display for Dialects<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("none; use one of exact, prefix, suffix, all, any, not or cesql"),
            [one] => write!(f, "{one:?}"),
            [init @ .., last] => {
                for (i, dialect) in init.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{dialect:?}")?;
                }
                write!(f, " and {last:?}")
            }
        }
    }
}

struct SupportedKinds;

impl fmt::Display for SupportedKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{kind} ({})", kind.api_version())?;
        }
        Ok(())
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo: a different
/// case, or an edit distance of at most 2 (at most 1 for words of up to 4 characters).
pub(crate) fn suggest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_lowercase();
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .map(|candidate| {
            let distance = if candidate.to_lowercase() == lower {
                0
            } else {
                strsim::damerau_levenshtein(&lower, &candidate.to_lowercase())
            };
            (distance, candidate)
        })
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let fields = ["broker", "filter", "filters", "subscriber", "delivery"];
        assert_eq!(suggest("brokr", fields), Some("broker".into()));
        assert_eq!(suggest("Broker", fields), Some("broker".into()));
        assert_eq!(suggest("subscribr", fields), Some("subscriber".into()));
        assert_eq!(suggest("sink", fields), None);
        assert_eq!(suggest("filtres", fields), Some("filters".into()));
        assert_eq!(suggest("cesq", ["cesql", "all"]), Some("cesql".into()));
        assert_eq!(suggest("sql", ["cesql", "all"]), None);
    }

    #[test]
    fn displays_every_part() {
        let error = ConfigError::new(
            "quickstart.yaml",
            Some(Location {
                line: 23,
                column: 7,
            }),
            Some(2),
            Some(ResourceId::namespaced(Kind::Trigger, "media", "resize")),
            "spec.filters[1]".parse().unwrap(),
            ErrorKind::FilterDialects {
                found: vec!["exact", "prefix"],
            },
        );
        assert_eq!(
            error.to_string(),
            r#"quickstart.yaml:23:7: Trigger "resize" in namespace "media": spec.filters[1]: each filter must use exactly one dialect, found "exact" and "prefix""#
        );
    }

    #[test]
    fn displays_what_is_known() {
        let error = ConfigError::new(
            "c.yaml",
            None,
            Some(0),
            None,
            FieldPath::root(),
            ErrorKind::MissingField {
                field: "kind".into(),
            },
        );
        assert_eq!(
            error.to_string(),
            r#"c.yaml: document 1: missing required field "kind""#
        );
    }

    #[test]
    fn hints_list_or_suggest() {
        let kind = ErrorKind::UnknownField {
            field: "brokr".into(),
            suggestion: Some("broker".into()),
            expected: vec!["broker".into()],
        };
        assert_eq!(
            kind.to_string(),
            r#"unknown field "brokr", did you mean "broker"?"#
        );
        let kind = ErrorKind::UnknownField {
            field: "x".into(),
            suggestion: None,
            expected: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            kind.to_string(),
            r#"unknown field "x"; expected one of: a, b"#
        );
        let kind = ErrorKind::FilterDialects {
            found: vec!["exact", "prefix", "not"],
        };
        assert_eq!(
            kind.to_string(),
            r#"each filter must use exactly one dialect, found "exact", "prefix" and "not""#
        );
    }
}
