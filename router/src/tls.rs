//! TLS for the HTTP listeners (rustls): certificate and key from PEM files, reloaded when
//! they change, and optional client-certificate verification (mTLS).
//!
//! Defaults are rustls's with the `ring` provider: TLS 1.3 and TLS 1.2 only; TLS 1.3 suites
//! AES-256-GCM, AES-128-GCM and ChaCha20-Poly1305; TLS 1.2 suites ECDHE (ECDSA or RSA) with
//! the same AEADs; key exchange X25519, P-256, P-384. No renegotiation, no compression, no
//! CBC or RSA key exchange. ALPN offers `h2` and `http/1.1`.
//!
//! [`ReloadingTls`] holds the current [`ServerConfig`]; [`ReloadingTls::spawn_watch`] re-reads
//! the files every [`CHECK_EVERY`] and swaps in a new config when their content changed. A
//! change that does not load (a key that does not match, a half-written file) is logged and the
//! previous certificate stays: connections keep working while the operator fixes it. Each
//! handshake uses the config current when the connection was accepted.
//!
//! What this module does not do: ACME, OCSP stapling, or certificate revocation lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, crypto::ring};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::{ClientAuth, TlsSpec};

/// How often certificate files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The client CA file holds no usable CA certificate.
    #[error("{} holds no usable CA certificate: {reason}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("the certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The content of the files, for change detection, and the leaf's fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digests {
    files: [u8; 32],
    leaf: [u8; 32],
}

/// A server config that follows its files.
pub struct ReloadingTls {
    spec: TlsSpec,
    current: ArcSwap<ServerConfig>,
    digests: parking_lot::Mutex<Digests>,
}

impl ReloadingTls {
    /// Loads `spec`'s files.
    pub fn load(spec: &TlsSpec) -> Result<ReloadingTls, TlsError> {
        let (config, digests) = build(spec)?;
        Ok(ReloadingTls {
            spec: spec.clone(),
            current: ArcSwap::from_pointee(config),
            digests: parking_lot::Mutex::new(digests),
        })
    }

    /// The config for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// SHA-256 of the leaf certificate, as hex with colons (what `openssl x509 -fingerprint
    /// -sha256` prints).
    pub fn fingerprint(&self) -> String {
        hex_colons(&self.digests.lock().leaf)
    }

    /// Re-reads the files every [`CHECK_EVERY`] until `stop`.
    pub fn spawn_watch(self: &Arc<Self>, stop: CancellationToken) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(CHECK_EVERY) => {}
                }
                this.check();
            }
        });
    }

    /// Reloads if the files changed; returns whether a new certificate is in use.
    pub fn check(&self) -> bool {
        let Ok(files) = files_digest(&self.spec) else {
            // Being rewritten, or gone: keep serving, and report it once it fails to load.
            return false;
        };
        if files == self.digests.lock().files {
            return false;
        }
        match build(&self.spec) {
            Ok((config, digests)) => {
                self.current.store(Arc::new(config));
                *self.digests.lock() = digests;
                tracing::info!(cert = %self.spec.cert_file.display(), sha256 = %hex_colons(&digests.leaf), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the content, so the same bad files are reported once.
                self.digests.lock().files = files;
                tracing::error!(error = %e, "TLS files changed but do not load; the previous certificate stays in use");
                false
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn files_digest(spec: &TlsSpec) -> Result<[u8; 32], TlsError> {
    digest_files(
        [
            Some(&spec.cert_file),
            Some(&spec.key_file),
            spec.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten(),
    )
}

/// SHA-256 over the contents of `paths`, to tell when certificate files change.
pub(crate) fn digest_files<'a>(
    paths: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<[u8; 32], TlsError> {
    let mut h = Sha256::new();
    for path in paths {
        let bytes = read(path)?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    Ok(h.finalize().into())
}

fn build(spec: &TlsSpec) -> Result<(ServerConfig, Digests), TlsError> {
    let files = files_digest(spec)?;
    let cert_pem = read(&spec.cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: spec.cert_file.clone(),
        });
    };
    let leaf: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
    let key_pem = read(&spec.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: spec.key_file.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &spec.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let bad = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let pem = read(path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match spec.client_auth {
                ClientAuth::Require => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, Digests { files, leaf }))
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
