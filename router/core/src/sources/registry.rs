//! Container-registry webhooks: Docker Distribution (`registry:2`) notification envelopes and
//! Alibaba Container Registry (ACR) webhooks, both mapped to one event type.
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `dev.triggerfish.registry.image.pushed` |
//! | `source` | the repository as skopeo names it: `docker://<registry host>/<repository>` |
//! | `subject` | the tag, or the digest when the push had no tag |
//! | `time` | Distribution: the event's `timestamp`; ACR: not set (its `pushed_at` has no zone) |
//! | `id` | Distribution: the event's `id`; ACR: a digest of repository, tag, digest and time |
//! | `data` | `{"registry", "repository", "tag", "digest", "mediaType", "size", "format", ...}` |
//!
//! Distribution sends an event per blob and per manifest, for pulls too; only pushes of
//! manifests (image manifests, manifest lists, OCI indexes) are images, so everything else maps
//! to no event. ACR's registry host is `registry.<region>.aliyuncs.com`.

use serde::{Deserialize, Serialize};

use crate::sources::{SourceEvent, digest_id, raw, rfc3339};

/// The type of every registry event.
pub const TYPE: &str = "dev.triggerfish.registry.image.pushed";
/// The media type of Distribution's notification envelopes.
pub const DISTRIBUTION_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// A payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Distribution notification envelope.
    Distribution,
    /// An ACR webhook.
    Acr,
}

/// Why a registry payload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The body is not JSON of the expected shape.
    #[error("not a {format} payload: {reason}")]
    Malformed {
        /// The format expected.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A push event lacks its repository or digest.
    #[error("events[{index}]: the push has no {field}")]
    Missing {
        /// The event's index (0 for ACR).
        index: usize,
        /// The missing field.
        field: &'static str,
    },
}

/// Tells the format from the content type and the body: Distribution's media type, or a
/// `push_data` field for ACR, or an `events` field for Distribution.
pub fn detect(content_type: Option<&str>, body: &[u8]) -> Option<Format> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if essence.eq_ignore_ascii_case(DISTRIBUTION_MEDIA_TYPE) {
        return Some(Format::Distribution);
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        push_data: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        events: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    match (probe.push_data.is_some(), probe.events.is_some()) {
        (true, false) => Some(Format::Acr),
        (false, true) => Some(Format::Distribution),
        _ => None,
    }
}

/// Parses a payload of `format`.
pub fn parse(format: Format, body: &[u8]) -> Result<Vec<SourceEvent>, RegistryError> {
    match format {
        Format::Distribution => parse_distribution(body),
        Format::Acr => parse_acr(body).map(|e| vec![e]),
    }
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DistributionEvent {
    #[serde(default)]
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    request: Request,
    #[serde(default)]
    source: Origin,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Default, Deserialize)]
struct Request {
    #[serde(default)]
    host: String,
}

#[derive(Default, Deserialize)]
struct Origin {
    #[serde(default)]
    addr: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    format: &'static str,
    registry: &'a str,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pushed_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
}

/// Whether a Distribution target is an image (a manifest or an index), not a layer blob.
fn is_manifest(media_type: &str) -> bool {
    media_type.contains("manifest") || media_type.contains("image.index")
}

/// Parses a Distribution envelope; pushes of manifests map to events, the rest to nothing.
pub fn parse_distribution(body: &[u8]) -> Result<Vec<SourceEvent>, RegistryError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| RegistryError::Malformed {
            format: "Docker Distribution notification",
            reason: e.to_string(),
        })?;
    let mut events = Vec::new();
    for (index, event) in envelope.events.iter().enumerate() {
        if event.action != "push" || !is_manifest(&event.target.media_type) {
            continue;
        }
        let target = &event.target;
        if target.repository.is_empty() {
            return Err(RegistryError::Missing {
                index,
                field: "target.repository",
            });
        }
        if target.digest.is_empty() {
            return Err(RegistryError::Missing {
                index,
                field: "target.digest",
            });
        }
        let host = if event.request.host.is_empty() {
            &event.source.addr
        } else {
            &event.request.host
        };
        let tag = target.tag.as_deref().filter(|t| !t.is_empty());
        let data = Data {
            format: "distribution",
            registry: host,
            repository: &target.repository,
            tag,
            digest: Some(&target.digest),
            media_type: Some(&target.media_type),
            size: target.size,
            url: target.url.as_deref(),
            pushed_at: None,
            region: None,
        };
        let id = if event.id.is_empty() {
            digest_id(&[target.repository.as_bytes(), target.digest.as_bytes()])
        } else {
            event.id.clone()
        };
        events.push(SourceEvent {
            id,
            source: format!("docker://{host}/{}", target.repository),
            ty: TYPE.to_owned(),
            subject: Some(tag.unwrap_or(&target.digest).to_owned()),
            time: rfc3339(event.timestamp.as_deref()),
            extensions: Vec::new(),
            data: raw(serde_json::to_string(&data).unwrap_or_default()),
        });
    }
    Ok(events)
}

#[derive(Deserialize)]
struct AcrWebhook {
    push_data: PushData,
    repository: AcrRepository,
}

#[derive(Deserialize)]
struct PushData {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    pushed_at: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct AcrRepository {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    repo_full_name: Option<String>,
}

/// Parses an ACR webhook: one push, one event.
pub fn parse_acr(body: &[u8]) -> Result<SourceEvent, RegistryError> {
    let webhook: AcrWebhook =
        serde_json::from_slice(body).map_err(|e| RegistryError::Malformed {
            format: "Alibaba Container Registry webhook",
            reason: e.to_string(),
        })?;
    let repo = &webhook.repository;
    let full_name = match repo.repo_full_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None if !repo.name.is_empty() && !repo.namespace.is_empty() => {
            format!("{}/{}", repo.namespace, repo.name)
        }
        None => {
            return Err(RegistryError::Missing {
                index: 0,
                field: "repository.repo_full_name",
            });
        }
    };
    let push = &webhook.push_data;
    let tag = push.tag.as_deref().filter(|t| !t.is_empty());
    let digest = push.digest.as_deref().filter(|d| !d.is_empty());
    let Some(subject) = tag.or(digest) else {
        return Err(RegistryError::Missing {
            index: 0,
            field: "push_data.tag",
        });
    };
    let host = format!("registry.{}.aliyuncs.com", repo.region);
    let data = Data {
        format: "acr",
        registry: &host,
        repository: &full_name,
        tag,
        digest,
        media_type: None,
        size: None,
        url: None,
        pushed_at: push.pushed_at.as_deref(),
        region: Some(&repo.region),
    };
    Ok(SourceEvent {
        id: digest_id(&[
            full_name.as_bytes(),
            tag.unwrap_or("").as_bytes(),
            digest.unwrap_or("").as_bytes(),
            push.pushed_at.as_deref().unwrap_or("").as_bytes(),
        ]),
        source: format!("docker://{host}/{full_name}"),
        ty: TYPE.to_owned(),
        subject: Some(subject.to_owned()),
        time: None,
        extensions: Vec::new(),
        data: raw(serde_json::to_string(&data).unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example envelope of Distribution's `docs/notifications.md`, with a layer push added.
    const DISTRIBUTION: &str = r#"{"events": [{
        "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
        "timestamp": "2016-03-09T14:44:26.402973972-08:00",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 708,
            "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "length": 708,
            "repository": "hello-world",
            "url": "http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "tag": "latest"},
        "request": {"id": "6df24a34-0959-4923-81ca-14f09767db19", "addr": "192.168.64.11:42961",
                    "host": "192.168.100.227:5000", "method": "PUT", "useragent": "curl/7.38.0"},
        "actor": {},
        "source": {"addr": "xtal.local:5000", "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"}
    }, {
        "id": "asdf-asdf-asdf-asdf-1", "timestamp": "2016-03-09T14:44:26.402973972-08:00",
        "action": "push",
        "target": {"mediaType": "application/octet-stream", "size": 977, "repository": "hello-world",
                   "digest": "sha256:c04b14da8d1441880ed3fe6106fb2cc6fa1c9661846ac0266b8a5ec8edf37b7c"},
        "request": {"host": "192.168.100.227:5000"}
    }]}"#;

    /// The example of ACR's "Create a webhook" documentation.
    const ACR: &str = r#"{
        "push_data": {"digest": "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917",
                      "pushed_at": "2016-11-29 12:25:46", "tag": "latest"},
        "repository": {"date_created": "2016-10-28 21:31:42", "name": "repoTest", "namespace": "namespace",
                       "region": "cn-hangzhou", "repo_authentication_type": "NO_CERTIFIED",
                       "repo_full_name": "namespace/repoTest", "repo_origin_type": "NO_CERTIFIED",
                       "repo_type": "PUBLIC"}}"#;

    #[test]
    fn maps_distribution_manifest_pushes_only() {
        assert_eq!(
            detect(Some(DISTRIBUTION_MEDIA_TYPE), b"x"),
            Some(Format::Distribution)
        );
        assert_eq!(
            detect(Some("application/json"), DISTRIBUTION.as_bytes()),
            Some(Format::Distribution)
        );
        let events = parse_distribution(DISTRIBUTION.as_bytes()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id, "320678d8-ca14-430f-8bb6-4ca139cd83f7");
        assert_eq!(e.ty, TYPE);
        assert_eq!(e.source, "docker://192.168.100.227:5000/hello-world");
        assert_eq!(e.subject.as_deref(), Some("latest"));
        assert_eq!(
            e.time.as_deref(),
            Some("2016-03-09T14:44:26.402973972-08:00")
        );
        let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
        assert_eq!(data["repository"], "hello-world");
        assert_eq!(data["tag"], "latest");
        assert_eq!(
            data["digest"],
            "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
        );
    }

    #[test]
    fn maps_acr_webhooks() {
        assert_eq!(
            detect(Some("application/json"), ACR.as_bytes()),
            Some(Format::Acr)
        );
        let e = parse_acr(ACR.as_bytes()).unwrap();
        assert_eq!(
            e.source,
            "docker://registry.cn-hangzhou.aliyuncs.com/namespace/repoTest"
        );
        assert_eq!(e.subject.as_deref(), Some("latest"));
        assert_eq!(e.time, None);
        let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
        assert_eq!(data["pushedAt"], "2016-11-29 12:25:46");
        assert_eq!(parse_acr(ACR.as_bytes()).unwrap().id, e.id);
    }

    #[test]
    fn refuses_malformed_payloads() {
        assert_eq!(detect(Some("application/json"), b"{\"a\": 1}"), None);
        assert_eq!(detect(None, b"{\"events\": [], \"push_data\": {}}"), None);
        assert!(matches!(
            parse_distribution(&DISTRIBUTION.as_bytes()[..100]),
            Err(RegistryError::Malformed { .. })
        ));
        let no_digest = DISTRIBUTION.replace(
            "\"digest\": \"sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf\",",
            "",
        );
        assert_eq!(
            parse_distribution(no_digest.as_bytes()),
            Err(RegistryError::Missing {
                index: 0,
                field: "target.digest"
            })
        );
        let untagged = ACR.replace("\"tag\": \"latest\"", "\"tag\": \"\"");
        assert_eq!(
            parse_acr(untagged.as_bytes()).unwrap().subject.as_deref(),
            Some("sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917")
        );
    }
}
