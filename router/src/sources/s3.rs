//! `S3Source`: an endpoint for S3-style event notifications, as MinIO's webhook target sends
//! them (`{"Records": [...]}`, `application/json`).
//!
//! Checks, in order: `Content-Type` is JSON (415); when a `token` is configured,
//! `Authorization: Bearer <token>` (401; MinIO sends it when the target's `auth_token` is set);
//! the payload maps, every record with a safe key (400). Then every record is published, or
//! none (202, else 429/503/413). An S3 `s3:TestEvent` is answered 200.

use http::StatusCode;
use triggerfish_core::config::S3SourceSpec;
use triggerfish_core::sources::{bearer_matches, s3};

use crate::sources::webhook::{Reply, Route, content_type_is, publish};
use crate::sources::{BuildErrors, Secret};

/// An `S3Source`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The webhook path.
    pub path: String,
    /// The bearer token, if required.
    pub token: Option<Secret>,
}

impl S3Config {
    pub(crate) fn build(spec: &S3SourceSpec, check: &mut BuildErrors<'_>) -> Option<Self> {
        let path = check.path(spec.path.as_deref(), "s3sources");
        let token = match &spec.token {
            Some(t) => Some(check.secret("token", t)?),
            None => None,
        };
        Some(S3Config { path, token })
    }
}

/// Handles one request.
pub async fn handle(
    config: &S3Config,
    route: &Route,
    parts: &http::request::Parts,
    body: &[u8],
) -> Reply {
    if !content_type_is(&parts.headers, &["application/json"]) {
        return Reply::refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "S3 notifications are application/json",
        );
    }
    if let Some(token) = &config.token {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !bearer_matches(presented, token.expose()) {
            return Reply::refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    match s3::parse_notification(body) {
        Ok(events) if events.is_empty() => Reply::ok("no records (a test event?)"),
        Ok(events) => publish(route, &events).await,
        Err(e) => Reply::refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
