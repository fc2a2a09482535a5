//! `GitHubSource`: the GitHub webhook endpoint.
//!
//! A request is checked in this order, and the first failure answers:
//! 1. `Content-Type` is `application/json` or `application/x-www-form-urlencoded` (415);
//! 2. `X-Hub-Signature-256` is HMAC-SHA256 of the body with the secret, compared in constant
//!    time (401, also when missing: unsigned requests are never accepted);
//! 3. `X-GitHub-Event` and `X-GitHub-Delivery` are present and well-formed, the payload is a
//!    JSON object, the event is in `eventTypes` and the repository is `ownerAndRepository`
//!    when those are set (400);
//! 4. `ping` is answered 200 with GitHub's `zen`, and publishes nothing;
//! 5. a delivery id seen within `dedupeWindow` is answered 200 and not published again (GitHub
//!    requests carry no timestamp, so a replay can only be caught by its id; a redelivery from
//!    GitHub's UI reuses the id, and is deduplicated the same way);
//! 6. the event is published: 202, or 429/503/413 (and the id is forgotten, so a retry works).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use http::StatusCode;
use triggerfish_core::config::GitHubSourceSpec;
use triggerfish_core::sources::github::{map_delivery, payload_of, verify_signature};

use crate::sources::webhook::{Reply, Route, content_type_is, publish};
use crate::sources::{BuildErrors, Secret};

/// The most delivery ids remembered per source; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

/// A `GitHubSource`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitHubConfig {
    /// The webhook path.
    pub path: String,
    /// The webhook secret.
    pub secret: Secret,
    /// Accepted events; empty: all.
    pub event_types: Vec<String>,
    /// `owner/repo` to accept, if set.
    pub repository: Option<String>,
    /// How long delivery ids are remembered.
    pub dedupe_window: Duration,
}

impl GitHubConfig {
    pub(crate) fn build(spec: &GitHubSourceSpec, check: &mut BuildErrors<'_>) -> Option<Self> {
        let path = check.path(spec.path.as_deref(), "githubsources");
        let secret = check.secret("secretToken", &spec.secret_token);
        for (i, event) in spec.event_types.iter().enumerate() {
            if event.is_empty() || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                check.at(
                    &format!("eventTypes.{i}"),
                    format!("{event:?} is not a GitHub event name (push, pull_request, ...)"),
                );
            }
        }
        if let Some(repo) = &spec.owner_and_repository
            && repo.split('/').filter(|p| !p.is_empty()).count() != 2
        {
            check.at("ownerAndRepository", "expected owner/repository");
        }
        Some(GitHubConfig {
            path,
            secret: secret?,
            event_types: spec.event_types.clone(),
            repository: spec.owner_and_repository.clone(),
            dedupe_window: spec
                .dedupe_window
                .map_or(Duration::from_secs(3600), |d| d.get()),
        })
    }
}

/// The handler: the config and the delivery ids seen.
pub struct GitHubHook {
    config: GitHubConfig,
    seen: parking_lot::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    at: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl GitHubHook {
    /// A handler with no delivery seen yet.
    pub fn new(config: GitHubConfig) -> GitHubHook {
        GitHubHook {
            config,
            seen: parking_lot::Mutex::new(Seen::default()),
        }
    }

    /// Handles one request.
    pub async fn handle(&self, route: &Route, parts: &http::request::Parts, body: &[u8]) -> Reply {
        let headers = &parts.headers;
        let form = content_type_is(headers, &["application/x-www-form-urlencoded"]);
        if !form && !content_type_is(headers, &["application/json"]) {
            return Reply::refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "GitHub webhooks are application/json or application/x-www-form-urlencoded",
            );
        }
        let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        if let Err(e) = verify_signature(self.config.secret.expose(), body, signature) {
            return Reply::refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let (event, delivery) = (header("x-github-event"), header("x-github-delivery"));
        let mapped = payload_of(body, form).and_then(|p| map_delivery(event, delivery, &p));
        let mapped = match mapped {
            Ok(m) => m,
            Err(e) => return Reply::refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
        if event == "ping" {
            let zen = mapped.zen.unwrap_or_default();
            return Reply::ok(format!("pong: {zen}"));
        }
        if !self.config.event_types.is_empty()
            && !self.config.event_types.iter().any(|t| t == event)
        {
            return Reply::refuse(
                StatusCode::BAD_REQUEST,
                format!("event {event:?} is not among this source's eventTypes"),
            );
        }
        if let Some(want) = &self.config.repository
            && mapped.repository.as_deref() != Some(want.as_str())
        {
            return Reply::refuse(
                StatusCode::BAD_REQUEST,
                format!("the event is not about {want}"),
            );
        }
        if !self.begin(delivery) {
            tracing::info!(source = %route.key, delivery, "GitHub delivery already published; not publishing it again");
            return Reply::ok("duplicate delivery; already published");
        }
        let reply = publish(route, std::slice::from_ref(&mapped.event)).await;
        if !reply.status.is_success() {
            self.forget(delivery);
        }
        reply
    }

    /// Records `id`; false when it was seen within the window (or is being published).
    fn begin(&self, id: &str) -> bool {
        let now = Instant::now();
        let window = self.config.dedupe_window;
        // Never held across an await.
        let mut seen = self.seen.lock();
        while let Some((at, _)) = seen.order.front() {
            if now.duration_since(*at) < window && seen.order.len() < MAX_REMEMBERED {
                break;
            }
            if let Some((at, old)) = seen.order.pop_front()
                && seen.at.get(&old) == Some(&at)
            {
                seen.at.remove(&old);
            }
        }
        if seen
            .at
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < window)
        {
            return false;
        }
        seen.at.insert(id.to_owned(), now);
        seen.order.push_back((now, id.to_owned()));
        true
    }

    fn forget(&self, id: &str) {
        self.seen.lock().at.remove(id);
    }
}
