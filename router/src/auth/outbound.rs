//! Outbound identity: the bearer token a delivery carries, so that subscribers can verify the
//! router.
//!
//! A subscriber gets either a static token (`spec.subscriber.token`) or a JWT minted for its
//! `audience` with `Server.spec.auth.outbound`'s signing key (ES256 for an EC P-256 key, RS256
//! for RSA, EdDSA for Ed25519). Minted tokens carry `iss`, `sub`, `aud`, `iat`, `nbf`, `exp` and
//! a fresh `jti`; they are cached per audience and reused until a minute before they expire.
//!
//! What this module does not do: serve the public key. Publish it in the JWKS your
//! subscribers trust (the `kid` in the token header is `outbound.keyId`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use triggerfish_core::config::OutboundSpec;

use super::Secret;

/// How long before expiry a cached token is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Mints JWTs with the router's signing key.
pub struct Minter {
    spec: OutboundSpec,
    /// SHA-256 of the key file, so that two minters compare equal only with the same key.
    fingerprint: [u8; 32],
    key: EncodingKey,
    algorithm: Algorithm,
    subject: String,
    ttl: Duration,
    cache: parking_lot::Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.spec.issuer)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Minter {
    fn eq(&self, other: &Minter) -> bool {
        self.spec == other.spec && self.fingerprint == other.fingerprint
    }
}

impl Eq for Minter {}

impl Minter {
    /// Reads the signing key of `spec`.
    pub fn from_spec(spec: &OutboundSpec) -> Result<Minter, String> {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let pem = std::fs::read(&spec.signing_key_file)
            .map_err(|e| format!("reading {}: {e}", spec.signing_key_file.display()))?;
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
            (k, Algorithm::RS256)
        } else if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
            (k, Algorithm::EdDSA)
        } else {
            return Err(format!(
                "{} is not a PEM private key (EC P-256, RSA or Ed25519)",
                spec.signing_key_file.display()
            ));
        };
        let minter = Minter {
            fingerprint: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                &pem,
            ))
            .into(),
            key,
            algorithm,
            subject: spec
                .subject
                .clone()
                .unwrap_or_else(|| "system:serviceaccount:triggerfish:router".into()),
            ttl: spec
                .token_ttl
                .map_or(Duration::from_secs(600), |d| d.get())
                .max(RENEW_BEFORE * 2),
            spec: spec.clone(),
            cache: parking_lot::Mutex::new(HashMap::new()),
        };
        // Sign once now, so that a key the algorithm cannot use fails at load, not at delivery.
        minter.mint("triggerfish-self-test")?;
        Ok(minter)
    }

    /// The `Authorization` value for `audience`: a cached token, or a fresh one. Minted under
    /// the cache's lock (a signature, tens of microseconds, once per audience per `tokenTtl`),
    /// so that the deliveries that start together share one token instead of each minting its
    /// own.
    pub fn authorization(&self, audience: &str) -> Result<HeaderValue, String> {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if let Some((value, renew_at)) = cache.get(audience)
            && now < *renew_at
        {
            return Ok(value.clone());
        }
        let token = self.mint(audience)?;
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|e| format!("minted token is not a header value: {e}"))?;
        value.set_sensitive(true);
        let renew_at = now + self.ttl - RENEW_BEFORE;
        if cache.len() > 1024 {
            cache.retain(|_, (_, at)| now < *at);
        }
        cache.insert(audience.to_owned(), (value.clone(), renew_at));
        Ok(value)
    }

    fn mint(&self, audience: &str) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            iat: u64,
            nbf: u64,
            exp: u64,
            jti: String,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = Header::new(self.algorithm);
        header.kid = self.spec.key_id.clone();
        let claims = Claims {
            iss: &self.spec.issuer,
            sub: &self.subject,
            aud: audience,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("signing a token for {audience}: {e}"))
    }
}

/// The credential a subscriber's requests carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A static token.
    Static(Secret),
    /// A token minted for the audience.
    Minted {
        /// The subscriber's audience.
        audience: String,
        /// The router's signing key.
        minter: Arc<Minter>,
    },
}

impl Credential {
    /// The `Authorization` header value (marked sensitive, so HTTP logging never shows it).
    pub fn authorization(&self) -> Result<HeaderValue, String> {
        match self {
            Credential::Static(secret) => {
                let mut v = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
                    .map_err(|_| "the static token is not a valid header value".to_owned())?;
                v.set_sensitive(true);
                Ok(v)
            }
            Credential::Minted { audience, minter } => minter.authorization(audience),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deliveries that start together, with nothing cached yet, share one token: each used to
    /// mint its own (a different `jti` each) until the first one was cached.
    #[test]
    fn concurrent_first_deliveries_share_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("router.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let spec = OutboundSpec {
            issuer: "https://triggerfish.test".into(),
            subject: None,
            signing_key_file: key_file,
            key_id: None,
            token_ttl: None,
        };
        let minter = Arc::new(Minter::from_spec(&spec).unwrap());
        let start = Arc::new(std::sync::Barrier::new(8));
        let tokens: Vec<HeaderValue> = (0..8)
            .map(|_| {
                let (minter, start) = (Arc::clone(&minter), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    minter.authorization("https://sub.test").unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
        // Another audience gets a token of its own.
        assert_ne!(
            minter.authorization("https://other.test").unwrap(),
            tokens[0]
        );
    }
}
