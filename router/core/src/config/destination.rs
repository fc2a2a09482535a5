//! Destinations: where a trigger delivers (`subscriber`) and where failures go
//! (`deadLetterSink`). Knative's `Destination` duck type, resolved at load time.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::config::error::{ErrorKind, suggest};
use crate::config::meta::{
    KNATIVE_EVENTING_V1, KNATIVE_EVENTING_V1ALPHA1, TRIGGERFISH_V1ALPHA1, check_name,
    check_namespace,
};
use crate::config::path::FieldPath;

/// A destination as written: Knative's `Destination` (`uri` and/or `ref`).
///
/// - `uri` alone is used as given. It must be absolute: `http://host/path`, `https://...`,
///   `quic://host:port/{namespace}/{broker}` (another Triggerfish's QUIC ingress, see
///   `docs/quic-protocol.md`; the port defaults to 8443), or one of Triggerfish's built-in sinks, `display:` (print events to standard output) and
///   `file:///path/to/events.jsonl` (append events as JSON Lines).
/// - `ref` alone names an object; see [`KReference`] for the kinds understood.
/// - `CACerts` (Knative's): PEM CA certificates trusted for an `https://` destination,
///   besides the system's roots.
/// - Both: `uri` is a path relative to the `ref`'s URL, as in Knative
///   (`ref` to Service `resize` and `uri: /v1/events` gives
///   `http://resize.media.svc.cluster.local/v1/events`). Only `Service` refs take a `uri`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// An absolute URI, or with `ref`, a path relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A reference to an object that has an address.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// Knative's OIDC audience of the destination: when set, and `Server.spec.auth.outbound`
    /// is configured, requests carry a bearer token minted for this audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Triggerfish extension: a static bearer token sent to the destination, from a file or
    /// an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::config::SecretSource>,
    /// Knative's `CACerts`: PEM CA certificates trusted for this destination's `https://`
    /// connections, besides the system's roots. Checked at load: at least one certificate,
    /// all of them parsing.
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
}

impl DestinationSpec {
    /// A destination with only a `uri`.
    pub fn uri(uri: impl Into<String>) -> DestinationSpec {
        DestinationSpec {
            uri: Some(uri.into()),
            ..DestinationSpec::default()
        }
    }
}

/// A reference to an object (Knative's `KReference`).
///
/// Kinds understood:
///
/// | `apiVersion` | `kind` | resolves to |
/// |---|---|---|
/// | `v1` or `serving.knative.dev/v1` | `Service` | `http://{name}.{namespace}.svc.cluster.local`, as Knative resolves it |
/// | `eventing.knative.dev/v1` | `Broker` | that broker of this config, in-process (the event re-enters it) |
/// | `triggerfish.dev/v1alpha1` | `Display` | the built-in display sink (the name is only a label) |
/// | `triggerfish.dev/v1alpha1` | `File` | the built-in JSON Lines sink, writing `{dataDir}/sinks/{namespace}/{name}.jsonl` |
/// | `triggerfish.dev/v1alpha1` | `WorkerPool`, `Scheduler`, `Exec` | that in-process component |
/// | `eventing.knative.dev/v1alpha1` | `KafkaSink` | that in-process Kafka producer |
/// | `triggerfish.dev/v1alpha1` | `RocketMQSink` | that in-process RocketMQ producer |
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KReference {
    /// The referent's `apiVersion`.
    pub api_version: String,
    /// The referent's `kind`.
    pub kind: String,
    /// The referent's name.
    pub name: String,
    /// The referent's namespace; defaults to the namespace of the resource that refers to it,
    /// as in Knative.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A resolved destination: what the dispatcher sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// An `http` or `https` URL, used as given, and the CAs its `CACerts` adds.
    Uri(Url, Option<CaCerts>),
    /// A Kubernetes or Knative `Service`, resolved to its cluster-local URL (plus the relative
    /// `uri`, if one was given).
    Service {
        /// The Service's name.
        name: String,
        /// The Service's namespace.
        namespace: String,
        /// `http://{name}.{namespace}.svc.cluster.local/...`.
        url: Url,
        /// The CAs its `CACerts` adds.
        ca_certs: Option<CaCerts>,
    },
    /// A broker of this config: the event is published to it again, in-process.
    Broker {
        /// The broker's namespace.
        namespace: String,
        /// The broker's name.
        name: String,
    },
    /// Another Triggerfish's QUIC ingress (`quic://host:port/{namespace}/{broker}`): events
    /// go in batches over reused connections.
    Quic(QuicDestination),
    /// The built-in display sink: prints each event to standard output.
    Display,
    /// The built-in file sink: appends each event as one JSON line.
    File {
        /// The file written.
        path: PathBuf,
    },
    /// Another in-process component, by kind (`WorkerPool`, `Scheduler`, `Exec`). Whether it
    /// exists is checked when its kind is loaded.
    InProcess {
        /// The kind.
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
}

impl Destination {
    /// The HTTP URL to POST to, for destinations reached over HTTP.
    pub fn http_url(&self) -> Option<&Url> {
        match self {
            Destination::Uri(url, _) | Destination::Service { url, .. } => Some(url),
            _ => None,
        }
    }

    /// The CA certificates trusted for this destination besides the system's roots.
    pub fn ca_certs(&self) -> Option<&CaCerts> {
        match self {
            Destination::Uri(_, ca) | Destination::Service { ca_certs: ca, .. } => ca.as_ref(),
            _ => None,
        }
    }
}

/// A destination's `CACerts`: PEM text holding one or more CA certificates, checked at load.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaCerts(std::sync::Arc<str>);

impl CaCerts {
    /// Checks that `pem` holds at least one certificate and that each parses.
    pub fn parse(pem: &str) -> Result<CaCerts, DestinationError> {
        let invalid = |reason: String| DestinationError::CaCerts { reason };
        let mut count = 0;
        for cert in crate::pem::certificates(pem.as_bytes()) {
            cert.map_err(invalid)?;
            count += 1;
        }
        if count == 0 {
            return Err(invalid("no PEM certificate in it".to_owned()));
        }
        Ok(CaCerts(std::sync::Arc::from(pem)))
    }

    /// The PEM text.
    pub fn pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Uri(url, _) | Destination::Service { url, .. } => write!(f, "{url}"),
            Destination::Quic(q) => write!(f, "{}", q.url),
            Destination::Broker { namespace, name } => write!(f, "broker {namespace}/{name}"),
            Destination::Display => f.write_str("display:"),
            Destination::File { path } => write!(f, "file {}", path.display()),
            Destination::InProcess {
                kind,
                namespace,
                name,
            } => write!(f, "{kind} {namespace}/{name}"),
        }
    }
}

/// A `quic://host:port/{namespace}/{broker}` destination, and how events are batched to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicDestination {
    /// The URI as written (normalised by the URL parser).
    pub url: Url,
    /// The host: a name (checked against the certificate) or an IP address.
    pub host: String,
    /// The UDP port; 8443 when the URI has none.
    pub port: u16,
    /// The target broker on the other side, `namespace/broker`.
    pub target: String,
    /// How events are gathered into frames: the trigger's `spec.batch`, else the defaults.
    pub batch: Batching,
}

/// How a QUIC subscriber's events are gathered into frames (a trigger's `spec.batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// The most events in one frame.
    pub max_events: std::num::NonZeroU32,
    /// How long the first event of a frame may wait for others before the frame is sent.
    /// Zero sends at once whatever has gathered while earlier frames were in flight.
    pub linger: std::time::Duration,
}

impl Default for Batching {
    /// 100 events, no lingering.
    fn default() -> Batching {
        Batching {
            max_events: std::num::NonZeroU32::new(100).unwrap_or(std::num::NonZeroU32::MIN),
            linger: std::time::Duration::ZERO,
        }
    }
}

/// The UDP port of a `quic://` URI without one.
pub const DEFAULT_QUIC_PORT: u16 = 8443;

/// Why a destination does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Neither `uri` nor `ref`.
    #[error("a destination needs a uri, a ref, or both")]
    Empty,
    /// A `uri` that does not parse.
    #[error("{uri:?} is not a valid URI: {reason}")]
    InvalidUri {
        /// The URI as written.
        uri: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A relative `uri` without a `ref` to resolve it against.
    #[error("{uri:?} is relative; without a ref, uri must be absolute, e.g. http://host/path")]
    RelativeUri {
        /// The URI as written.
        uri: String,
    },
    /// An absolute `uri` next to a `ref`.
    #[error("{uri:?} is absolute; next to a ref, uri must be a path relative to it, e.g. /events")]
    AbsoluteUriWithRef {
        /// The URI as written.
        uri: String,
    },
    /// A `quic:` URI that is not `quic://host[:port]/{namespace}/{broker}`.
    #[error("{uri:?} is not a QUIC destination: {reason}; write quic://host:port/namespace/broker")]
    QuicUri {
        /// The URI as written.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme other than `http`, `https`, `quic`, `display` and `file`.
    #[error(
        "URI scheme {scheme:?} is not supported; use http, https, quic, display: or file:///path"
    )]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// `display:` followed by something.
    #[error("{uri:?}: the display sink takes nothing after \"display:\"")]
    DisplayUri {
        /// The URI as written.
        uri: String,
    },
    /// A `file:` URI that is not an absolute local path.
    #[error("{uri:?} is not a local file path; write file:///absolute/path.jsonl")]
    FileUri {
        /// The URI as written.
        uri: String,
    },
    /// `CACerts` that are not PEM certificates.
    #[error("CACerts must hold PEM CA certificates: {reason}")]
    CaCerts {
        /// Why they do not parse.
        reason: String,
    },
    /// `CACerts` on a destination that is not reached over `https://`.
    #[error("CACerts applies to https:// destinations, not to {destination}")]
    CaCertsNotHttps {
        /// The destination.
        destination: String,
    },
    /// A `ref` kind that is not understood.
    #[error("unsupported ref kind {kind:?}{}; supported: {}",
        suggestion.as_ref().map(|s| format!(", did you mean {s:?}?")).unwrap_or_default(),
        SupportedRefs)]
    UnknownRefKind {
        /// The kind as written.
        kind: String,
        /// A close match, if there is one.
        suggestion: Option<String>,
    },
    /// A known `ref` kind with another `apiVersion`.
    #[error(
        "ref kind {kind} needs apiVersion {}, found {found:?}",
        Quoted(expected)
    )]
    WrongRefApiVersion {
        /// The kind.
        kind: &'static str,
        /// The `apiVersion`s it is read with.
        expected: &'static [&'static str],
        /// The `apiVersion` as written.
        found: String,
    },
    /// A `uri` next to a `ref` that is not a `Service`.
    #[error("uri can be combined only with a ref to a Service, not to a {kind}")]
    UriWithRef {
        /// The ref's kind.
        kind: &'static str,
    },
}

/// What a ref kind resolves to.
#[derive(Clone, Copy)]
enum Target {
    Service,
    Broker,
    Display,
    File,
    InProcess,
}

struct RefKind {
    kind: &'static str,
    api_versions: &'static [&'static str],
    target: Target,
}

const REF_KINDS: &[RefKind] = &[
    RefKind {
        kind: "Service",
        api_versions: &["v1", "serving.knative.dev/v1"],
        target: Target::Service,
    },
    RefKind {
        kind: "Broker",
        api_versions: &[KNATIVE_EVENTING_V1],
        target: Target::Broker,
    },
    RefKind {
        kind: "Display",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::Display,
    },
    RefKind {
        kind: "File",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::File,
    },
    RefKind {
        kind: "WorkerPool",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::InProcess,
    },
    RefKind {
        kind: "Scheduler",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::InProcess,
    },
    RefKind {
        kind: "Exec",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::InProcess,
    },
    RefKind {
        kind: "KafkaSink",
        api_versions: &[KNATIVE_EVENTING_V1ALPHA1],
        target: Target::InProcess,
    },
    RefKind {
        kind: "RocketMQSink",
        api_versions: &[TRIGGERFISH_V1ALPHA1],
        target: Target::InProcess,
    },
];

struct SupportedRefs;

impl fmt::Display for SupportedRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in REF_KINDS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", kind.kind, kind.api_versions.join(" or "))?;
        }
        Ok(())
    }
}

struct Quoted<'a>(&'a [&'a str]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{item:?}")?;
        }
        Ok(())
    }
}

/// What resolving a destination needs from the rest of the config.
pub(crate) struct Resolver<'a> {
    /// The namespace of the resource that holds the destination.
    pub namespace: &'a str,
    /// Every broker of the config, as (namespace, name).
    pub brokers: &'a BTreeSet<(String, String)>,
    /// The server's data directory, for `File` refs.
    pub data_dir: &'a Path,
}

/// A resolution error and the field it is about.
pub(crate) type Located = (FieldPath, ErrorKind);

impl Resolver<'_> {
    /// Resolves `spec`, found at `path`.
    pub(crate) fn resolve(
        &self,
        spec: &DestinationSpec,
        path: &FieldPath,
    ) -> Result<Destination, Located> {
        let destination = self.resolve_address(spec, path)?;
        let Some(pem) = &spec.ca_certs else {
            return Ok(destination);
        };
        let ca_error = |error: DestinationError| (path.key("CACerts"), ErrorKind::from(error));
        let ca = CaCerts::parse(pem).map_err(ca_error)?;
        let https = destination
            .http_url()
            .is_some_and(|url| url.scheme() == "https");
        match destination {
            Destination::Uri(url, None) if https => Ok(Destination::Uri(url, Some(ca))),
            Destination::Service {
                name,
                namespace,
                url,
                ca_certs: None,
            } if https => Ok(Destination::Service {
                name,
                namespace,
                url,
                ca_certs: Some(ca),
            }),
            other => Err(ca_error(DestinationError::CaCertsNotHttps {
                destination: other.to_string(),
            })),
        }
    }

    /// Resolves `spec`'s `uri` and `ref` into an address.
    fn resolve_address(
        &self,
        spec: &DestinationSpec,
        path: &FieldPath,
    ) -> Result<Destination, Located> {
        let uri_path = path.key("uri");
        let uri_error = |error: DestinationError| (uri_path.clone(), ErrorKind::from(error));
        match (&spec.uri, &spec.reference) {
            (None, None) => Err((path.clone(), DestinationError::Empty.into())),
            (Some(uri), None) => resolve_uri(uri).map_err(uri_error),
            (uri, Some(reference)) => {
                let relative = match uri {
                    None => None,
                    Some(uri) => match Url::parse(uri) {
                        Ok(_) => {
                            return Err(uri_error(DestinationError::AbsoluteUriWithRef {
                                uri: uri.clone(),
                            }));
                        }
                        Err(url::ParseError::RelativeUrlWithoutBase) if !uri.starts_with("//") => {
                            Some(uri.as_str())
                        }
                        Err(url::ParseError::RelativeUrlWithoutBase) => {
                            return Err(uri_error(DestinationError::AbsoluteUriWithRef {
                                uri: uri.clone(),
                            }));
                        }
                        Err(reason) => {
                            return Err(uri_error(DestinationError::InvalidUri {
                                uri: uri.clone(),
                                reason: reason.to_string(),
                            }));
                        }
                    },
                };
                self.resolve_ref(reference, relative, &path.key("ref"), &uri_path)
            }
        }
    }

    fn resolve_ref(
        &self,
        reference: &KReference,
        relative: Option<&str>,
        path: &FieldPath,
        uri_path: &FieldPath,
    ) -> Result<Destination, Located> {
        let Some(kind) = REF_KINDS.iter().find(|k| k.kind == reference.kind) else {
            let suggestion = suggest(&reference.kind, REF_KINDS.iter().map(|k| k.kind));
            return Err((
                path.key("kind"),
                DestinationError::UnknownRefKind {
                    kind: reference.kind.clone(),
                    suggestion,
                }
                .into(),
            ));
        };
        if !kind.api_versions.contains(&reference.api_version.as_str()) {
            return Err((
                path.key("apiVersion"),
                DestinationError::WrongRefApiVersion {
                    kind: kind.kind,
                    expected: kind.api_versions,
                    found: reference.api_version.clone(),
                }
                .into(),
            ));
        }
        check_name(&reference.name).map_err(|reason| {
            (
                path.key("name"),
                ErrorKind::InvalidName {
                    what: "name",
                    value: reference.name.clone(),
                    reason,
                },
            )
        })?;
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.to_owned());
        check_namespace(&namespace).map_err(|reason| {
            (
                path.key("namespace"),
                ErrorKind::InvalidName {
                    what: "namespace",
                    value: namespace.clone(),
                    reason,
                },
            )
        })?;
        if relative.is_some() && !matches!(kind.target, Target::Service) {
            return Err((
                uri_path.clone(),
                DestinationError::UriWithRef { kind: kind.kind }.into(),
            ));
        }
        let name = reference.name.clone();
        Ok(match kind.target {
            Target::Service => {
                let base = service_url(&name, &namespace).map_err(|reason| {
                    (
                        path.clone(),
                        DestinationError::InvalidUri {
                            uri: format!("http://{name}.{namespace}.svc.cluster.local"),
                            reason: reason.to_string(),
                        }
                        .into(),
                    )
                })?;
                let url = match relative {
                    None => base,
                    Some(relative) => base.join(relative).map_err(|reason| {
                        (
                            uri_path.clone(),
                            DestinationError::InvalidUri {
                                uri: relative.to_owned(),
                                reason: reason.to_string(),
                            }
                            .into(),
                        )
                    })?,
                };
                Destination::Service {
                    name,
                    namespace,
                    url,
                    ca_certs: None,
                }
            }
            Target::Broker => {
                if !self.brokers.contains(&(namespace.clone(), name.clone())) {
                    let suggestion = suggest(
                        &name,
                        self.brokers
                            .iter()
                            .filter(|(ns, _)| *ns == namespace)
                            .map(|(_, n)| n.as_str()),
                    );
                    return Err((
                        path.key("name"),
                        ErrorKind::UnknownBroker {
                            namespace,
                            name,
                            suggestion,
                        },
                    ));
                }
                Destination::Broker { namespace, name }
            }
            Target::Display => Destination::Display,
            Target::File => Destination::File {
                path: self
                    .data_dir
                    .join("sinks")
                    .join(&namespace)
                    .join(format!("{name}.jsonl")),
            },
            Target::InProcess => Destination::InProcess {
                kind: kind.kind,
                namespace,
                name,
            },
        })
    }
}

fn service_url(name: &str, namespace: &str) -> Result<Url, url::ParseError> {
    Url::parse(&format!("http://{name}.{namespace}.svc.cluster.local"))
}

/// Resolves a `uri` given alone.
fn resolve_uri(uri: &str) -> Result<Destination, DestinationError> {
    let url = match Url::parse(uri) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return Err(DestinationError::RelativeUri {
                uri: uri.to_owned(),
            });
        }
        Err(reason) => {
            return Err(DestinationError::InvalidUri {
                uri: uri.to_owned(),
                reason: reason.to_string(),
            });
        }
    };
    match url.scheme() {
        // The url crate refuses http(s) URLs without a host, so a parsed one has one.
        "http" | "https" => Ok(Destination::Uri(url, None)),
        "quic" => quic_destination(uri, url).map(Destination::Quic),
        "display" => {
            if url.path().is_empty() && url.query().is_none() && url.fragment().is_none() {
                Ok(Destination::Display)
            } else {
                Err(DestinationError::DisplayUri {
                    uri: uri.to_owned(),
                })
            }
        }
        "file" => match url.to_file_path() {
            Ok(path) if url.query().is_none() && url.fragment().is_none() => {
                Ok(Destination::File { path })
            }
            _ => Err(DestinationError::FileUri {
                uri: uri.to_owned(),
            }),
        },
        scheme => Err(DestinationError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        }),
    }
}

fn quic_destination(uri: &str, url: Url) -> Result<QuicDestination, DestinationError> {
    let err = |reason: &str| DestinationError::QuicUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(err("no host")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("credentials are not allowed in the URI"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("a query or fragment is not allowed"));
    }
    let target = url.path().trim_start_matches('/').to_owned();
    crate::quic::Target::parse(target.as_bytes()).map_err(|e| match e {
        crate::quic::FrameError::TargetLength { len: 0 } => {
            err("the path must be /{namespace}/{broker}")
        }
        e => err(&e.to_string()),
    })?;
    Ok(QuicDestination {
        port: url.port().unwrap_or(DEFAULT_QUIC_PORT),
        host,
        target,
        batch: Batching::default(),
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> Result<Destination, String> {
        let spec: DestinationSpec = serde_norway::from_str(yaml).unwrap();
        let brokers = BTreeSet::from([
            ("media".to_owned(), "default".to_owned()),
            ("other".to_owned(), "audit".to_owned()),
        ]);
        let resolver = Resolver {
            namespace: "media",
            brokers: &brokers,
            data_dir: Path::new("/var/lib/tf"),
        };
        resolver
            .resolve(&spec, &"spec.subscriber".parse().unwrap())
            .map_err(|(path, kind)| format!("{path}: {kind}"))
    }

    #[test]
    fn absolute_uris_are_used_as_given() {
        assert_eq!(
            resolve("uri: https://example.com/hook?x=1").unwrap(),
            Destination::Uri(Url::parse("https://example.com/hook?x=1").unwrap(), None)
        );
    }

    #[test]
    fn ca_certs_go_with_https_destinations() {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/mns/signing-cert.pem"
        ))
        .unwrap();
        let with = |uri: &str, ca: &str| {
            let yaml = serde_json::json!({"uri": uri, "CACerts": ca}).to_string();
            resolve(&yaml)
        };
        let d = with("https://example.com/hook", &pem).unwrap();
        assert_eq!(d.ca_certs().map(CaCerts::pem), Some(pem.as_str()));
        assert_eq!(d.http_url().unwrap().as_str(), "https://example.com/hook");
        assert_eq!(
            resolve("uri: https://example.com/").unwrap().ca_certs(),
            None
        );
        let e = with("http://example.com/hook", &pem).unwrap_err();
        assert!(
            e.starts_with("spec.subscriber.CACerts: CACerts applies to https:// destinations"),
            "{e}"
        );
        let e = with("display:", &pem).unwrap_err();
        assert!(e.contains("not to display:"), "{e}");
        let second_truncated =
            format!("{pem}-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        for bad in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            // Base64 that ends inside a DER length: x509-cert's own PEM reader never returned.
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
            &second_truncated,
        ] {
            let e = with("https://example.com/", bad).unwrap_err();
            assert!(
                e.starts_with("spec.subscriber.CACerts: CACerts must hold PEM CA certificates"),
                "{bad:?}: {e}"
            );
        }
        let e = with("https://example.com/", &second_truncated).unwrap_err();
        assert!(e.contains("certificate 2: "), "{e}");
    }

    #[test]
    fn services_resolve_like_knative() {
        let ref_ = "ref: {apiVersion: v1, kind: Service, name: resize}";
        let Destination::Service {
            name,
            namespace,
            url,
            ..
        } = resolve(ref_).unwrap()
        else {
            panic!()
        };
        assert_eq!((name.as_str(), namespace.as_str()), ("resize", "media"));
        assert_eq!(url.as_str(), "http://resize.media.svc.cluster.local/");

        let with_uri = format!("{ref_}\nuri: /v1/events?x=1");
        assert_eq!(
            resolve(&with_uri).unwrap().http_url().unwrap().as_str(),
            "http://resize.media.svc.cluster.local/v1/events?x=1"
        );
        let knative_service = "ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s, namespace: n}\nuri: events";
        assert_eq!(
            resolve(knative_service)
                .unwrap()
                .http_url()
                .unwrap()
                .as_str(),
            "http://s.n.svc.cluster.local/events"
        );
    }

    #[test]
    fn built_in_sinks() {
        assert_eq!(resolve("uri: \"display:\"").unwrap(), Destination::Display);
        assert_eq!(
            resolve("ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: out}")
                .unwrap(),
            Destination::Display
        );
        assert_eq!(
            resolve("uri: file:///tmp/events.jsonl").unwrap(),
            Destination::File {
                path: "/tmp/events.jsonl".into()
            }
        );
        assert_eq!(
            resolve("ref: {apiVersion: triggerfish.dev/v1alpha1, kind: File, name: audit}")
                .unwrap(),
            Destination::File {
                path: "/var/lib/tf/sinks/media/audit.jsonl".into()
            }
        );
        assert_eq!(
            resolve("ref: {apiVersion: triggerfish.dev/v1alpha1, kind: WorkerPool, name: video}")
                .unwrap(),
            Destination::InProcess {
                kind: "WorkerPool",
                namespace: "media".into(),
                name: "video".into()
            }
        );
    }

    #[test]
    fn quic_destinations() {
        let Destination::Quic(q) = resolve("uri: quic://10.0.0.7:9443/media/default").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (q.host.as_str(), q.port, q.target.as_str()),
            ("10.0.0.7", 9443, "media/default")
        );
        assert_eq!(q.batch, Batching::default());
        let Destination::Quic(q) = resolve("uri: quic://edge.example/default/default").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (q.host.as_str(), q.port),
            ("edge.example", DEFAULT_QUIC_PORT)
        );
        let Destination::Quic(q) = resolve("uri: \"quic://[::1]:1/a/b\"").unwrap() else {
            panic!()
        };
        assert_eq!(q.host, "::1");
        for (bad, reason) in [
            ("quic://h:1/default", "invalid target"),
            ("quic://h:1/a/b/c", "invalid target"),
            ("quic://h:1/", "the path must be"),
            ("quic://h:1/a/b?x=1", "a query or fragment is not allowed"),
            ("quic://u:p@h:1/a/b", "credentials"),
            ("quic:/a/b", "no host"),
        ] {
            let err = resolve(&format!("uri: \"{bad}\"")).unwrap_err();
            assert!(
                err.contains(reason) && err.contains("quic://host:port/namespace/broker"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn broker_refs_must_exist() {
        assert_eq!(
            resolve("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}")
                .unwrap(),
            Destination::Broker {
                namespace: "media".into(),
                name: "default".into()
            }
        );
        assert_eq!(
            resolve("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: defualt}")
                .unwrap_err(),
            r#"spec.subscriber.ref.name: broker "defualt" is not defined in namespace "media", did you mean "default"?"#
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, expected) in [
            (
                "{}",
                "spec.subscriber: a destination needs a uri, a ref, or both",
            ),
            (
                "uri: /relative",
                r#"spec.subscriber.uri: "/relative" is relative; without a ref, uri must be absolute, e.g. http://host/path"#,
            ),
            (
                "uri: ftp://x/y",
                r#"spec.subscriber.uri: URI scheme "ftp" is not supported; use http, https, quic, display: or file:///path"#,
            ),
            (
                "uri: \"display:x\"",
                r#"spec.subscriber.uri: "display:x": the display sink takes nothing after "display:""#,
            ),
            (
                "uri: \"http://\"",
                r#"spec.subscriber.uri: "http://" is not a valid URI: empty host"#,
            ),
            (
                "ref: {apiVersion: v1, kind: Servce, name: x}",
                r#"spec.subscriber.ref.kind: unsupported ref kind "Servce", did you mean "Service"?; supported: Service (v1 or serving.knative.dev/v1), Broker (eventing.knative.dev/v1), Display (triggerfish.dev/v1alpha1), File (triggerfish.dev/v1alpha1), WorkerPool (triggerfish.dev/v1alpha1), Scheduler (triggerfish.dev/v1alpha1), Exec (triggerfish.dev/v1alpha1), KafkaSink (eventing.knative.dev/v1alpha1), RocketMQSink (triggerfish.dev/v1alpha1)"#,
            ),
            (
                "ref: {apiVersion: apps/v1, kind: Service, name: x}",
                r#"spec.subscriber.ref.apiVersion: ref kind Service needs apiVersion "v1" or "serving.knative.dev/v1", found "apps/v1""#,
            ),
            (
                "ref: {apiVersion: v1, kind: Service, name: x}\nuri: http://other/",
                r#"spec.subscriber.uri: "http://other/" is absolute; next to a ref, uri must be a path relative to it, e.g. /events"#,
            ),
            (
                "ref: {apiVersion: v1, kind: Service, name: x}\nuri: //other/path",
                r#"spec.subscriber.uri: "//other/path" is absolute; next to a ref, uri must be a path relative to it, e.g. /events"#,
            ),
            (
                "ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: x}\nuri: /a",
                "spec.subscriber.uri: uri can be combined only with a ref to a Service, not to a Display",
            ),
            (
                "ref: {apiVersion: v1, kind: Service, name: Bad_Name}",
                r#"spec.subscriber.ref.name: "Bad_Name" is not a valid name: it may contain only lowercase letters, digits, '-' and '.'"#,
            ),
        ] {
            assert_eq!(resolve(yaml).unwrap_err(), expected, "{yaml}");
        }
    }
}
