//! The ingress gate: who is sending ([`Gate::authenticate`]), whether they may send these
//! events to this broker ([`Gate::authorize`], Knative's `EventPolicy`), and whether they are
//! within their rate ([`Gate::admit`]).
//!
//! The gate is transport-agnostic: HTTP and QUIC ingress hand it the `Authorization` value,
//! the broker and the decoded batch, and map its typed refusals to their own status codes
//! (`401`, `403`, `429`, `503`). A [`Gate`] is built from a [`crate::plan::AuthPlan`] on every
//! config load and lives in the routing snapshot; what must survive a reload (fetched JWKS keys,
//! rate-limit buckets) lives in [`GateState`] and is kept while its part of the config is
//! unchanged.
//!
//! Credentials:
//! - static bearer tokens are compared by their SHA-256 digest in a hash map, so lookup time
//!   does not depend on how much of a token matched;
//! - JWTs are verified against a JWKS ([`jwks`]): signature with an algorithm the key allows
//!   (never `none`, never HMAC), `iss`, `aud` (the broker's audience), `exp` and `nbf` with
//!   leeway; `sub` becomes the sender identity.
//!
//! Refusals carry a short code only. Why a token failed is logged at `debug` level, and the
//! token itself never is.
//!
//! What this module does not do: TLS (see `crate::tls`), or outbound identity (see
//! [`outbound`]).

pub mod jwks;
pub mod outbound;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use triggerfish_core::config::{OidcSpec, RateLimitsSpec, RateSpec};
use triggerfish_core::event::EventBatch;
use triggerfish_core::index::MatchScratch;
use triggerfish_core::policy::{Policies, Verdict};

use crate::plan::AuthPlan;
use jwks::{Jwks, JwtError};

/// A sender identity: a service account (`system:serviceaccount:ns:name`), a token's `sub`,
/// or the empty string for an anonymous sender.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity(Arc<str>);

impl Identity {
    /// The anonymous sender (no authentication configured).
    pub fn anonymous() -> Identity {
        Identity(Arc::from(""))
    }

    /// The identity as a string (empty when anonymous).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("<anonymous>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Why a request was not authenticated. `Display` is the short code sent to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No `Authorization` header (401).
    #[error("missing_token")]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (401).
    #[error("invalid_request")]
    Malformed,
    /// A bearer token that is unknown, badly signed, expired, not yet valid, or for another
    /// issuer or audience (401).
    #[error("invalid_token")]
    Invalid,
    /// A JWT that cannot be checked because the signing keys could not be fetched (503): the
    /// sender should retry, the operator should look at the JWKS source.
    #[error("keys_unavailable")]
    KeysUnavailable,
}

impl Unauthenticated {
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
    pub fn challenge(self) -> &'static str {
        match self {
            Unauthenticated::Missing => "Bearer realm=\"triggerfish\"",
            Unauthenticated::Malformed => "Bearer realm=\"triggerfish\", error=\"invalid_request\"",
            Unauthenticated::Invalid | Unauthenticated::KeysUnavailable => {
                "Bearer realm=\"triggerfish\", error=\"invalid_token\""
            }
        }
    }
}

/// Why a batch was refused by the rate limits (429).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimited {
    /// The bucket is empty: retry after the given time.
    #[error("rate limit of the {scope} exceeded")]
    Exceeded {
        /// `sender` or `broker`.
        scope: &'static str,
        /// When the batch would fit.
        retry_after: Duration,
    },
    /// The batch is larger than the bucket can ever hold: send smaller batches.
    #[error(
        "a batch of {events} events is larger than the {scope}'s burst of {burst}; send smaller batches"
    )]
    BatchTooLarge {
        /// `sender` or `broker`.
        scope: &'static str,
        /// Events in the batch.
        events: u32,
        /// The bucket size.
        burst: u32,
    },
}

impl RateLimited {
    /// Seconds for `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            RateLimited::Exceeded { retry_after, .. } => {
                retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
            }
            RateLimited::BatchTooLarge { .. } => 1,
        }
        .max(1)
    }
}

/// What survives reloads: JWKS keys and rate-limit buckets, each kept while its spec is
/// unchanged.
#[derive(Default)]
pub struct GateState {
    jwks: Option<(OidcSpec, Arc<Jwks>)>,
    limits: Option<(RateLimitsSpec, Arc<IngressLimits>)>,
}

/// Token buckets of the ingress.
pub struct IngressLimits {
    per_sender: Option<Bucket>,
    per_broker: Option<Bucket>,
    checks: AtomicU64,
}

struct Bucket {
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
    burst: NonZeroU32,
}

impl Bucket {
    fn new(spec: &RateSpec) -> Bucket {
        let burst = spec.burst.unwrap_or(spec.events_per_second);
        Bucket {
            limiter: RateLimiter::keyed(
                Quota::per_second(spec.events_per_second).allow_burst(burst),
            ),
            burst,
        }
    }

    fn check(&self, key: &Arc<str>, n: NonZeroU32, scope: &'static str) -> Result<(), RateLimited> {
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RateLimited::Exceeded {
                scope,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
            Err(_) => Err(RateLimited::BatchTooLarge {
                scope,
                events: n.get(),
                burst: self.burst.get(),
            }),
        }
    }
}

impl IngressLimits {
    fn new(spec: &RateLimitsSpec) -> IngressLimits {
        IngressLimits {
            per_sender: spec.per_sender.as_ref().map(Bucket::new),
            per_broker: spec.per_broker.as_ref().map(Bucket::new),
            checks: AtomicU64::new(0),
        }
    }
}

/// The gate of one config: static tokens, the JWT verifier, policies and rate limits.
pub struct Gate {
    /// SHA-256 of each static token, to its identity.
    tokens: HashMap<[u8; 32], Identity>,
    oidc: Option<Oidc>,
    policies: Policies,
    limits: Arc<IngressLimits>,
}

struct Oidc {
    jwks: Arc<Jwks>,
    issuer: String,
    leeway: Duration,
    /// Audience per broker `namespace/name`.
    audiences: HashMap<String, String>,
}

impl Gate {
    /// A gate that lets everything through (no authentication, no policy, no limits).
    pub fn open() -> Gate {
        Gate {
            tokens: HashMap::new(),
            oidc: None,
            policies: Policies::allow_all(),
            limits: Arc::new(IngressLimits::new(&RateLimitsSpec::default())),
        }
    }

    /// Builds the gate of a plan, reusing keys and buckets from `state` where their spec is
    /// unchanged. `client` fetches a JWKS URL.
    pub fn build(
        plan: AuthPlan,
        state: &mut GateState,
        client: &crate::sinks::http::HttpClient,
    ) -> Gate {
        let limits = match &state.limits {
            Some((spec, limits)) if *spec == plan.rate_limits => Arc::clone(limits),
            _ => {
                let limits = Arc::new(IngressLimits::new(&plan.rate_limits));
                state.limits = Some((plan.rate_limits.clone(), Arc::clone(&limits)));
                limits
            }
        };
        let oidc = plan.oidc.map(|oidc| {
            let jwks = match &state.jwks {
                Some((spec, jwks)) if *spec == oidc.spec => Arc::clone(jwks),
                _ => {
                    let jwks = Jwks::start(&oidc.spec, oidc.initial_keys, client.clone());
                    state.jwks = Some((oidc.spec.clone(), Arc::clone(&jwks)));
                    jwks
                }
            };
            Oidc {
                jwks,
                issuer: oidc.spec.issuer.clone(),
                leeway: oidc
                    .spec
                    .leeway
                    .map_or(Duration::from_secs(60), |d| d.get()),
                audiences: oidc.audiences,
            }
        });
        if oidc.is_none() {
            state.jwks = None;
        }
        let tokens = plan
            .tokens
            .into_iter()
            .map(|(token, identity)| (digest(token.expose().as_bytes()), Identity(identity)))
            .collect();
        Gate {
            tokens,
            oidc,
            policies: plan.policies,
            limits,
        }
    }

    /// Whether senders must present a credential.
    pub fn requires_credentials(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// Turns the `Authorization` header value into a sender identity. Without tokens or OIDC
    /// configured, every sender is anonymous and the header is ignored.
    pub async fn authenticate(
        &self,
        broker: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Identity, Unauthenticated> {
        if !self.requires_credentials() {
            return Ok(Identity::anonymous());
        }
        let value = authorization.ok_or(Unauthenticated::Missing)?;
        let token = bearer(value).ok_or(Unauthenticated::Malformed)?;
        if let Some(identity) = self.tokens.get(&digest(token.as_bytes())) {
            return Ok(identity.clone());
        }
        let Some(oidc) = &self.oidc else {
            tracing::debug!(broker, "unknown static bearer token");
            return Err(Unauthenticated::Invalid);
        };
        // A static token that is not a JWT fails here, as `invalid_token` like any other.
        let audience = oidc.audiences.get(broker).map_or("", String::as_str);
        match oidc
            .jwks
            .verify(token, &oidc.issuer, audience, oidc.leeway)
            .await
        {
            Ok(subject) => Ok(Identity(Arc::from(subject))),
            Err(JwtError::KeysUnavailable) => Err(Unauthenticated::KeysUnavailable),
            Err(e) => {
                tracing::debug!(broker, reason = %e, "bearer token rejected");
                Err(Unauthenticated::Invalid)
            }
        }
    }

    /// Checks every event of a batch against the broker's policies. Returns the indices of
    /// the events no policy allows (empty: all allowed).
    pub fn authorize(&self, broker: &str, identity: &Identity, batch: &EventBatch) -> Vec<usize> {
        let mut scratch = MatchScratch::default();
        let mut matched = Vec::new();
        if !self.policies.has_policies(broker) {
            // The default policy does not look at events.
            return match batch.iter().next() {
                Some(first) => {
                    let verdict = self.policies.allows(
                        broker,
                        identity.as_str(),
                        &first,
                        &mut scratch,
                        &mut matched,
                    );
                    if verdict == Verdict::Denied {
                        (0..batch.len()).collect()
                    } else {
                        Vec::new()
                    }
                }
                None => Vec::new(),
            };
        }
        batch
            .iter()
            .enumerate()
            .filter(|(_, event)| {
                self.policies
                    .allows(broker, identity.as_str(), event, &mut scratch, &mut matched)
                    == Verdict::Denied
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Takes `events` tokens from the sender's and the broker's buckets.
    pub fn admit(
        &self,
        broker: &str,
        identity: &Identity,
        events: usize,
    ) -> Result<(), RateLimited> {
        let limits = &*self.limits;
        if limits.per_sender.is_none() && limits.per_broker.is_none() {
            return Ok(());
        }
        let n =
            NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if let Some(bucket) = &limits.per_sender {
            bucket.check(&identity.0, n, "sender")?;
        }
        if let Some(bucket) = &limits.per_broker {
            bucket.check(&Arc::from(broker), n, "broker")?;
        }
        // Forget idle buckets now and then, so that many senders over time do not grow the maps.
        if limits.checks.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            for bucket in [&limits.per_sender, &limits.per_broker]
                .into_iter()
                .flatten()
            {
                bucket.limiter.retain_recent();
                bucket.limiter.shrink_to_fit();
            }
        }
        Ok(())
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A secret string: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret from a file (trailing whitespace trimmed) or an environment variable.
pub fn read_secret(file: Option<&std::path::Path>, env: Option<&str>) -> Result<Secret, String> {
    match (file, env) {
        (Some(path), None) => match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => Ok(Secret(s.trim_end().to_owned())),
            Ok(_) => Err(format!("{} is empty", path.display())),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        },
        (None, Some(var)) => match std::env::var(var) {
            Ok(s) if !s.trim().is_empty() => Ok(Secret(s.trim_end().to_owned())),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        },
        (Some(_), Some(_)) => Err("give either a file or an environment variable, not both".into()),
        (None, None) => Err("give a file or an environment variable".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_strict() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer a b"), None);
        assert_eq!(bearer(b"Bearer \xff"), None);
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = RateLimited::Exceeded {
            scope: "sender",
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(r.retry_after_secs(), 2);
        let r = RateLimited::Exceeded {
            scope: "sender",
            retry_after: Duration::from_millis(10),
        };
        assert_eq!(r.retry_after_secs(), 1);
    }

    #[test]
    fn buckets_refuse_bursts_and_oversized_batches() {
        let spec = RateLimitsSpec {
            per_sender: Some(RateSpec {
                events_per_second: NonZeroU32::new(10).unwrap(),
                burst: NonZeroU32::new(20),
            }),
            per_broker: None,
        };
        let gate = Gate {
            limits: Arc::new(IngressLimits::new(&spec)),
            ..Gate::open()
        };
        let alice = Identity(Arc::from("alice"));
        let bob = Identity(Arc::from("bob"));
        assert!(gate.admit("ns/b", &alice, 15).is_ok());
        let err = gate.admit("ns/b", &alice, 10).unwrap_err();
        assert!(
            matches!(
                err,
                RateLimited::Exceeded {
                    scope: "sender",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.retry_after_secs() >= 1);
        // Another sender has its own bucket.
        assert!(gate.admit("ns/b", &bob, 20).is_ok());
        assert!(matches!(
            gate.admit("ns/b", &bob, 21),
            Err(RateLimited::BatchTooLarge { burst: 20, .. })
        ));
    }
}
