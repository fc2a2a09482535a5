//! JWKS keys and JWT verification.
//!
//! [`Jwks`] holds the verification keys of one OIDC issuer, from a file (re-read on every
//! refresh) or a URL (fetched at start and on every refresh). A token naming a `kid` that is
//! not known triggers one early refresh, at most every 30 seconds, so a key rotation at the
//! issuer is picked up without waiting for the schedule. A failed refresh keeps the previous
//! keys.
//!
//! Which algorithms a key verifies comes from the key, never from the token: the JWK's `alg`
//! when it has one, else every algorithm of its type (RSA: RS*/PS*, EC: ES256 on P-256 and
//! ES384 on P-384, OKP: EdDSA). Symmetric (`oct`) keys are ignored: a JWKS is public, and an
//! HMAC key in it would let anyone sign.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, header};
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio_util::sync::{CancellationToken, DropGuard};
use triggerfish_core::config::OidcSpec;

use crate::sinks::http::HttpClient;

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// The least time between two refreshes caused by unknown `kid`s.
const MIN_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a JWT was refused. Logged at `debug`; clients only see `invalid_token`.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT, or a header that cannot be read.
    #[error("malformed token: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    /// No key in the JWKS has the token's `kid`, or verifies its `alg`.
    #[error("no key for kid {kid:?} and alg {alg:?}")]
    NoKey {
        /// The token's `kid`.
        kid: Option<String>,
        /// The token's `alg`.
        alg: Algorithm,
    },
    /// Signature, `iss`, `aud`, `exp`, `nbf` or a missing claim.
    #[error("{0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// The keys have never been fetched successfully.
    #[error("the JWKS has not been fetched yet")]
    KeysUnavailable,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Where keys come from.
#[derive(Clone, Debug)]
enum Source {
    File(std::path::PathBuf),
    Url(http::Uri),
}

/// The keys of one issuer, refreshed in the background until dropped.
pub struct Jwks {
    source: Source,
    /// `None` until the first successful fetch.
    keys: ArcSwap<Option<Vec<Key>>>,
    client: HttpClient,
    /// Serializes refreshes, and remembers when the last one caused by an unknown kid ran.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    _stop: DropGuard,
}

impl Jwks {
    /// Starts refreshing keys for `spec`. `initial` are keys already read (from the file, when
    /// the plan was built); a URL is fetched in the background right away.
    pub fn start(spec: &OidcSpec, initial: Option<JwkSet>, client: HttpClient) -> Arc<Jwks> {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let source = match (&spec.jwks_file, &spec.jwks_url) {
            (Some(path), _) => Source::File(path.clone()),
            // The plan checked that the URL parses.
            (None, Some(url)) => Source::Url(url.parse().unwrap_or_default()),
            (None, None) => Source::File(std::path::PathBuf::new()),
        };
        let stop = CancellationToken::new();
        let jwks = Arc::new(Jwks {
            source,
            keys: ArcSwap::from_pointee(initial.map(|set| keys_of(&set))),
            client,
            refreshing: tokio::sync::Mutex::new(None),
            _stop: stop.clone().drop_guard(),
        });
        let every = spec.refresh.map_or(Duration::from_secs(300), |d| d.get());
        let weak = Arc::downgrade(&jwks);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                }
                let Some(jwks) = weak.upgrade() else { return };
                if !(first && jwks.keys.load().is_some()) {
                    let _guard = jwks.refreshing.lock().await;
                    jwks.refresh().await;
                }
                first = false;
            }
        });
        jwks
    }

    async fn refresh(&self) {
        match self.fetch().await {
            Ok(set) => {
                let keys = keys_of(&set);
                tracing::debug!(source = ?self.source, keys = keys.len(), "JWKS refreshed");
                self.keys.store(Arc::new(Some(keys)));
            }
            Err(e) => {
                let have = self.keys.load().is_some();
                tracing::warn!(source = ?self.source, error = %e, keeping_previous_keys = have, "JWKS refresh failed");
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        match &self.source {
            Source::File(path) => read_jwks_file(path),
            Source::Url(uri) => {
                let request = http::Request::builder()
                    .method(Method::GET)
                    .uri(uri.clone())
                    .header(header::ACCEPT, "application/json")
                    .body(Full::default())
                    .map_err(|e| e.to_string())?;
                let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
                    .await
                    .map_err(|_| format!("no response within {FETCH_TIMEOUT:?}"))?
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                let (parts, body) = response.into_parts();
                let bytes = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    crate::body::read_limited(&parts.headers, body, MAX_JWKS_BYTES),
                )
                .await
                .map_err(|_| format!("body not read within {FETCH_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
                serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"))
            }
        }
    }

    /// Verifies a JWT and returns its `sub`.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<String, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Malformed)?;
        let mut keys = self.keys.load_full();
        if keys.is_none() || !has_key(&keys, header.kid.as_deref(), header.alg) {
            // An unknown kid may be a rotation at the issuer: refresh once, rate limited.
            let mut last = self.refreshing.lock().await;
            if last.is_none_or(|t| t.elapsed() >= MIN_UNKNOWN_KID_REFRESH) {
                *last = Some(Instant::now());
                self.refresh().await;
            }
            drop(last);
            keys = self.keys.load_full();
        }
        let Some(keys) = &*keys else {
            return Err(JwtError::KeysUnavailable);
        };
        let key = find(keys, header.kid.as_deref(), header.alg).ok_or(JwtError::NoKey {
            kid: header.kid.clone(),
            alg: header.alg,
        })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(JwtError::Invalid)?;
        Ok(data.claims.sub)
    }
}

fn has_key(keys: &Option<Vec<Key>>, kid: Option<&str>, alg: Algorithm) -> bool {
    keys.as_ref().is_some_and(|k| find(k, kid, alg).is_some())
}

fn find<'k>(keys: &'k [Key], kid: Option<&str>, alg: Algorithm) -> Option<&'k Key> {
    keys.iter().find(|k| {
        k.algorithms.contains(&alg)
            && match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                // Without a kid, only a set with a single key for this algorithm is unambiguous.
                None => true,
            }
    })
}

/// Reads and parses a JWKS file.
pub fn read_jwks_file(path: &std::path::Path) -> Result<JwkSet, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not a JWKS: {e}", path.display()))
}

fn keys_of(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let algorithms = algorithms_of(jwk);
            if algorithms.is_empty() {
                tracing::debug!(kid = ?jwk.common.key_id, "JWKS key skipped: no usable signature algorithm");
                return None;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => Some(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algorithms,
                }),
                Err(e) => {
                    tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped");
                    None
                }
            }
        })
        .collect()
}

fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![EdDSA]
        }
        _ => vec![],
    };
    match jwk.common.key_algorithm {
        Some(alg) => {
            // `KeyAlgorithm` and `Algorithm` share their names.
            let named = serde_json::to_value(alg)
                .ok()
                .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()));
            named.into_iter().filter(|a| by_type.contains(a)).collect()
        }
        None => by_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> JwkSet {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn algorithms_come_from_the_key() {
        let keys = keys_of(&set(r#"{"keys":[
              {"kty":"EC","crv":"P-256","kid":"a","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
              {"kty":"oct","kid":"h","k":"c2VjcmV0"},
              {"kty":"EC","crv":"P-256","kid":"r","alg":"RS256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
            ]}"#));
        // The HMAC key and the EC key claiming RS256 are both unusable.
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithms, vec![Algorithm::ES256]);
        assert!(find(&keys, Some("a"), Algorithm::ES256).is_some());
        assert!(find(&keys, Some("a"), Algorithm::HS256).is_none());
        assert!(find(&keys, Some("h"), Algorithm::HS256).is_none());
    }
}
