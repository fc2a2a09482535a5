//! GitHub webhooks: the `X-Hub-Signature-256` check and Knative eventing-github's event shape.
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `dev.knative.source.github.<X-GitHub-Event>`, e.g. `dev.knative.source.github.push` |
//! | `source` | `https://github.com/<repository.full_name>` (`https://github.com/<organization.login>` for organization events) |
//! | `subject` | as eventing-github's adapter sets it: see [`subject`] |
//! | `id` | `X-GitHub-Delivery` |
//! | `data` | the payload, byte for byte |
//!
//! The signature is HMAC-SHA256 of the raw body with the webhook's secret, hex-encoded after
//! `sha256=`, compared in constant time. GitHub payloads carry no timestamp, so a replayed
//! request cannot be told from a redelivery by its content: the router remembers delivery ids
//! for a window instead (`dedupeWindow`).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::sources::SourceEvent;

/// Prefix of every GitHub event type.
pub const TYPE_PREFIX: &str = "dev.knative.source.github.";

/// Why a request's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// There is no `X-Hub-Signature-256` header.
    #[error("X-Hub-Signature-256 is missing")]
    Missing,
    /// The header is not `sha256=` and 64 hex digits.
    #[error("X-Hub-Signature-256 is not sha256=<64 hex digits>")]
    Malformed,
    /// The signature does not match the body.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Why a payload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// `X-GitHub-Event` is missing or not a GitHub event name (`[a-z_]+`).
    #[error("X-GitHub-Event is missing or invalid")]
    EventName,
    /// `X-GitHub-Delivery` is missing or not printable ASCII.
    #[error("X-GitHub-Delivery is missing or invalid")]
    Delivery,
    /// The payload is not a JSON object.
    #[error("the payload is not a JSON object: {0}")]
    Malformed(String),
    /// A form-encoded body has no `payload` field.
    #[error("the form-encoded body has no payload field")]
    NoFormPayload,
}

/// Checks `X-Hub-Signature-256` against `body`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value of `body`: `sha256=` and the hex HMAC. For tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let mut out = String::from("sha256=");
    for byte in mac.finalize().into_bytes() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn decode_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A mapped webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: SourceEvent,
    /// `repository.full_name`, if the payload has one.
    pub repository: Option<String>,
    /// `zen` of a `ping`.
    pub zen: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    repository: Option<Named>,
    #[serde(default)]
    organization: Option<Login>,
    #[serde(default)]
    zen: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    full_name: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    login: Option<String>,
}

/// The JSON payload of a request body: the body itself (`application/json`), or the `payload`
/// field of a form (`application/x-www-form-urlencoded`), as GitHub sends either.
pub fn payload_of(body: &[u8], form: bool) -> Result<Vec<u8>, GitHubError> {
    if !form {
        return Ok(body.to_vec());
    }
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| value.into_owned().into_bytes())
        .ok_or(GitHubError::NoFormPayload)
}

/// Maps a delivery: `event` is `X-GitHub-Event`, `delivery` is `X-GitHub-Delivery`, `payload`
/// the JSON payload.
pub fn map_delivery(event: &str, delivery: &str, payload: &[u8]) -> Result<Delivery, GitHubError> {
    if event.is_empty() || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(GitHubError::EventName);
    }
    if delivery.is_empty()
        || delivery.len() > 128
        || !delivery.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(GitHubError::Delivery);
    }
    let text = std::str::from_utf8(payload).map_err(|e| GitHubError::Malformed(e.to_string()))?;
    let raw: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| GitHubError::Malformed(e.to_string()))?;
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| GitHubError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(GitHubError::Malformed("expected an object".into()));
    }
    let envelope: Envelope =
        serde_json::from_value(value.clone()).map_err(|e| GitHubError::Malformed(e.to_string()))?;
    let repository = envelope.repository.and_then(|r| r.full_name);
    let source = match (&repository, envelope.organization.and_then(|o| o.login)) {
        (Some(full_name), _) => format!("https://github.com/{full_name}"),
        (None, Some(org)) => format!("https://github.com/{org}"),
        (None, None) => "https://github.com".to_owned(),
    };
    Ok(Delivery {
        event: SourceEvent {
            id: delivery.to_owned(),
            source,
            ty: format!("{TYPE_PREFIX}{event}"),
            subject: subject(event, &value).filter(|s| !s.is_empty()),
            time: None,
            extensions: Vec::new(),
            data: raw,
        },
        repository,
        zen: envelope.zen,
    })
}

/// The subject Knative eventing-github's adapter sets for `event` (its
/// `subjectFromGitHubEvent`): the pull request or issue number, the compare range of a push,
/// the release tag, and so on. `None` for events it sets none for.
pub fn subject(event: &str, payload: &Value) -> Option<String> {
    let at = |pointer: &str| -> Option<String> {
        match payload.pointer(pointer)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    // The part after the last `/` of a URL: `<sha>#commitcomment-1`, `2#issuecomment-3`, or a
    // compare range `a10867b14bb7...000000000000`.
    let last_segment = |pointer: &str| -> Option<String> {
        let url = at(pointer)?;
        url.rfind('/').map(|i| url[i + 1..].to_owned())
    };
    match event {
        "check_suite" => at("/check_suite/id"),
        "commit_comment" | "issue_comment" => last_segment("/comment/html_url"),
        "create" | "delete" => at("/ref_type"),
        "deployment" | "deployment_status" => at("/deployment/id"),
        "fork" => at("/forkee/id"),
        "gollum" => {
            let pages = payload.get("pages")?.as_array()?;
            let names: Vec<&str> = pages
                .iter()
                .filter_map(|p| p.get("page_name")?.as_str())
                .collect();
            Some(names.join(","))
        }
        "installation" | "integration_installation" => at("/installation/id"),
        "issues" => at("/issue/number"),
        "label" => at("/label/name"),
        "member" | "membership" => at("/member/id"),
        "milestone" => at("/milestone/number"),
        "organization" | "org_block" | "project_card" | "project_column" | "project" => {
            at("/action")
        }
        "page_build" => at("/id"),
        "ping" => at("/hook_id"),
        "public" | "repository" | "team_add" | "watch" => at("/repository/id"),
        "pull_request" => at("/pull_request/number"),
        "pull_request_review" => at("/review/id"),
        "pull_request_review_comment" => at("/comment/id"),
        "push" => last_segment("/compare"),
        "release" => at("/release/tag_name"),
        "status" => at("/sha"),
        "team" => at("/team/id"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        // GitHub's documented test vector ("Validating webhook deliveries").
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body).as_bytes(), good);
        assert_eq!(verify_signature(secret, body, Some(good)), Ok(()));
        assert_eq!(
            verify_signature(secret, b"Hello, World?", Some(good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(secret, body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(secret, body, Some(b"sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(secret, body, Some(&good[..70])),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn subjects_follow_eventing_github() {
        let push = serde_json::json!({"compare": "https://github.com/Codertocat/Hello-World/compare/a10867b14bb7...000000000000"});
        assert_eq!(
            subject("push", &push).as_deref(),
            Some("a10867b14bb7...000000000000")
        );
        let pr = serde_json::json!({"pull_request": {"number": 2}});
        assert_eq!(subject("pull_request", &pr).as_deref(), Some("2"));
        let ping = serde_json::json!({"hook_id": 30});
        assert_eq!(subject("ping", &ping).as_deref(), Some("30"));
        let gollum = serde_json::json!({"pages": [{"page_name": "Home"}, {"page_name": "Main"}]});
        assert_eq!(subject("gollum", &gollum).as_deref(), Some("Home,Main"));
        assert_eq!(subject("star", &ping), None);
    }

    #[test]
    fn deliveries_map_and_bad_ones_are_refused() {
        let body = br#"{"ref":"refs/heads/main","compare":"https://github.com/o/r/compare/1...2","repository":{"full_name":"o/r"}}"#;
        let d = map_delivery("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body).unwrap();
        assert_eq!(d.event.ty, "dev.knative.source.github.push");
        assert_eq!(d.event.source, "https://github.com/o/r");
        assert_eq!(d.event.subject.as_deref(), Some("1...2"));
        assert_eq!(d.repository.as_deref(), Some("o/r"));
        assert_eq!(map_delivery("Push", "x", body), Err(GitHubError::EventName));
        assert_eq!(map_delivery("push", "", body), Err(GitHubError::Delivery));
        assert!(matches!(
            map_delivery("push", "x", &body[..20]),
            Err(GitHubError::Malformed(_))
        ));
        assert!(matches!(
            map_delivery("push", "x", b"[1]"),
            Err(GitHubError::Malformed(_))
        ));
        let form = b"payload=%7B%22zen%22%3A%22Keep+it+simple.%22%7D";
        let payload = payload_of(form, true).unwrap();
        assert_eq!(
            map_delivery("ping", "x", &payload).unwrap().zen.as_deref(),
            Some("Keep it simple.")
        );
        assert_eq!(payload_of(b"a=b", true), Err(GitHubError::NoFormPayload));
    }
}
