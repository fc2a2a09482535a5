//! `RegistrySource`: container-registry webhooks, from a Docker Distribution registry
//! (`application/vnd.docker.distribution.events.v1+json` envelopes) or Alibaba Container
//! Registry (`application/json`, `push_data`/`repository`).
//!
//! Checks, in order: `Content-Type` is one of those (415); when a `token` is configured,
//! `Authorization: Bearer <token>` (401; set it in the registry's notification endpoint
//! `headers`); the payload is of an accepted format and maps (400). Pushes of image manifests
//! are published (202); an envelope with none (layer pushes, pulls) is answered 200.
//! Distribution retries failed deliveries itself, so a 429/503 here delays, never loses.

use http::StatusCode;
use triggerfish_core::config::{RegistryFormat, RegistrySourceSpec};
use triggerfish_core::sources::bearer_matches;
use triggerfish_core::sources::registry::{DISTRIBUTION_MEDIA_TYPE, Format, detect, parse};

use crate::sources::webhook::{Reply, Route, content_type_is, publish};
use crate::sources::{BuildErrors, Secret};

/// A `RegistrySource`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The webhook path.
    pub path: String,
    /// The bearer token, if required.
    pub token: Option<Secret>,
    /// Accepted formats.
    pub format: RegistryFormat,
}

impl RegistryConfig {
    pub(crate) fn build(spec: &RegistrySourceSpec, check: &mut BuildErrors<'_>) -> Option<Self> {
        let path = check.path(spec.path.as_deref(), "registrysources");
        let token = match &spec.token {
            Some(t) => Some(check.secret("token", t)?),
            None => None,
        };
        Some(RegistryConfig {
            path,
            token,
            format: spec.format.unwrap_or_default(),
        })
    }
}

/// Handles one request.
pub async fn handle(
    config: &RegistryConfig,
    route: &Route,
    parts: &http::request::Parts,
    body: &[u8],
) -> Reply {
    let headers = &parts.headers;
    if !content_type_is(headers, &[DISTRIBUTION_MEDIA_TYPE, "application/json"]) {
        return Reply::refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("registry webhooks are {DISTRIBUTION_MEDIA_TYPE} or application/json"),
        );
    }
    if let Some(token) = &config.token {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !bearer_matches(presented, token.expose()) {
            return Reply::refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = match (config.format, detect(content_type, body)) {
        (RegistryFormat::Auto, Some(f)) => f,
        (RegistryFormat::Distribution, Some(Format::Distribution)) => Format::Distribution,
        (RegistryFormat::Acr, Some(Format::Acr)) => Format::Acr,
        (_, detected) => {
            let found = match detected {
                Some(Format::Distribution) => "a Distribution envelope",
                Some(Format::Acr) => "an ACR webhook",
                None => "neither a Distribution envelope nor an ACR webhook",
            };
            return Reply::refuse(
                StatusCode::BAD_REQUEST,
                format!("unsupported payload: {found}"),
            );
        }
    };
    match parse(format, body) {
        Ok(events) if events.is_empty() => Reply::ok("no image push in this notification"),
        Ok(events) => publish(route, &events).await,
        Err(e) => Reply::refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
