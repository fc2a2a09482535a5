//! TLS for QUIC: the server's certificate, and how clients decide to trust a server.
//!
//! Server side: a certificate chain and key from PEM files (`Server.spec.quic.tls`), or a
//! self-signed development certificate generated into `{dataDir}/quic/` on first start and
//! reused after. Its SHA-256 fingerprint is logged at every start so that clients can pin it.
//! Certificate files are followed ([`spawn_cert_watch`]): a renewed pair is used for new
//! connections without a restart.
//!
//! Client side ([`Trust`]): the system's trusted roots, plus a CA file, plus pinned
//! fingerprints (a pinned certificate is trusted as it is, whatever its name or issuer). A
//! client that accepts anything must say so: [`Trust::danger_accept_invalid_certs`], logged as
//! a warning. Handshake signatures are verified in every case, so even then the peer must hold
//! the key of the certificate it presents.
//!
//! TLS 1.3 only (QUIC requires it), ring as the crypto provider, and no 0-RTT: a replayed
//! publish frame would publish its events twice.

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};
use triggerfish_core::config::TlsFiles;
use triggerfish_core::quic::{SUPPORTED_ALPNS, format_fingerprint, parse_fingerprint};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The development certificate could not be generated.
    #[error("generating the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, the key, or the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A pinned fingerprint that does not parse.
    #[error("pinned fingerprint {pin:?}: {reason}")]
    Pin {
        /// The pin as given.
        pin: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The crypto provider offers no cipher suite QUIC can start with.
    #[error("TLS: no cipher suite usable by QUIC")]
    NoInitialCipherSuite,
}

/// The server's certificate chain and key, and where they came from.
pub struct ServerIdentity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf, `AB:CD:...`.
    pub fingerprint: String,
    /// The certificate file.
    pub cert_path: PathBuf,
    /// Whether this start generated it.
    pub generated: bool,
    /// Whether it is the self-signed development certificate.
    pub development: bool,
}

/// Loads the configured certificate, or the development one from `data_dir` (generating it
/// the first time).
pub fn server_identity(
    files: Option<&TlsFiles>,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path, generated, development) = match files {
        Some(f) => (f.cert_file.clone(), f.key_file.clone(), false, false),
        None => {
            let dir = data_dir.join("quic");
            let cert = dir.join("dev-cert.pem");
            let key = dir.join("dev-key.pem");
            let generated = if cert.exists() && key.exists() {
                false
            } else {
                generate_development(&dir, &cert, &key, listen)?;
                true
            };
            (cert, key, generated, true)
        }
    };
    load_identity(cert_path, &key_path, generated, development)
}

fn load_identity(
    cert_path: PathBuf,
    key_path: &Path,
    generated: bool,
    development: bool,
) -> Result<ServerIdentity, TlsError> {
    let chain = read_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
        path: key_path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })?;
    let fingerprint = chain.first().map(fingerprint).unwrap_or_default();
    Ok(ServerIdentity {
        chain,
        key,
        fingerprint,
        cert_path,
        generated,
        development,
    })
}

/// Follows the QUIC ingress's certificate files: every [`crate::tls::CHECK_EVERY`] until
/// `stop` it re-reads them, and a changed pair that loads becomes the certificate of new
/// connections (open ones keep theirs). A changed pair that does not load is logged once, and
/// the previous certificate stays. `seen` is the digest of the files as loaded at start; the
/// development certificate is not followed.
pub fn spawn_cert_watch(
    endpoint: quinn::Endpoint,
    files: TlsFiles,
    seen: Option<[u8; 32]>,
    transport: Arc<quinn::TransportConfig>,
    stop: tokio_util::sync::CancellationToken,
) {
    let paths = [files.cert_file.clone(), files.key_file.clone()];
    let mut seen = seen;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(crate::tls::CHECK_EVERY) => {}
            }
            // Unreadable: being rewritten, or gone; keep serving and look again.
            let Ok(now) = crate::tls::digest_files(&paths) else {
                continue;
            };
            if seen == Some(now) {
                continue;
            }
            seen = Some(now);
            let loaded = load_identity(files.cert_file.clone(), &files.key_file, false, false)
                .and_then(|identity| {
                    let fingerprint = identity.fingerprint.clone();
                    Ok((server_config(identity)?, fingerprint))
                });
            match loaded {
                Ok((mut config, fingerprint)) => {
                    config.transport_config(Arc::clone(&transport));
                    endpoint.set_server_config(Some(config));
                    tracing::info!(cert = %files.cert_file.display(), fingerprint = %format!("sha256:{fingerprint}"),
                        "QUIC certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e,
                        "QUIC TLS files changed but do not load; the previous certificate stays in use");
                }
            }
        }
    });
}

/// The SHA-256 fingerprint of a certificate, `AB:CD:...`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    format_fingerprint(&Sha256::digest(cert.as_ref()).into())
}

/// A secret of the QUIC server's endpoint that outlives the process: SHA-256 of a label and
/// the TLS private key's DER (one-way, so it reveals nothing of the key). A server restarted
/// with the same certificate (or a replica sharing it) derives the same keys for its
/// connection IDs and stateless resets from it ([`super::Server`]).
pub fn endpoint_secret(key: &PrivateKeyDer<'_>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"triggerfish/1 QUIC endpoint secret\0");
    hash.update(key.secret_der());
    hash.finalize().into()
}

/// The rustls side of the QUIC server: TLS 1.3, every supported ALPN, no client
/// certificates.
pub fn server_config(identity: ServerIdentity) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = SUPPORTED_ALPNS.iter().map(|a| a.to_vec()).collect();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|_| TlsError::NoInitialCipherSuite)?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// Which servers a client trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// A PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Fingerprints of certificates trusted as they are.
    pub pinned_sha256: Vec<String>,
    /// Accept any certificate (handshake signatures are still checked).
    pub danger_accept_invalid_certs: bool,
}

impl Trust {
    /// The QUIC client config for this trust, offering `alpns`.
    pub fn client_config(&self, alpns: &[&[u8]]) -> Result<quinn::ClientConfig, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        // Unreadable system roots are not fatal: a CA file or a pin may be all that is needed.
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &self.ca_file {
            let certs = read_certs(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::File {
                    path: path.clone(),
                    reason: "no usable CA certificate".into(),
                });
            }
        }
        let pins = self
            .pinned_sha256
            .iter()
            .map(|p| {
                parse_fingerprint(p).map_err(|reason| TlsError::Pin {
                    pin: p.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let webpki = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .ok()
        };
        let verifier = Verifier {
            webpki,
            pins,
            danger: self.danger_accept_invalid_certs,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Writes a self-signed certificate for `localhost`, the loopback addresses and the listen
/// address; the key is readable by its owner only.
fn generate_development(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    listen: SocketAddr,
) -> Result<(), TlsError> {
    let write_error = |path: &Path, e: std::io::Error| TlsError::File {
        path: path.to_owned(),
        reason: format!("cannot write: {e}"),
    };
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    // Each file is written aside and renamed into place, the certificate last: a crash
    // leaves no half-written file, and a key without its certificate is generated again.
    let key = certified.signing_key.serialize_pem();
    write_then_rename(key_path, key.as_bytes(), 0o600).map_err(|e| write_error(key_path, e))?;
    write_then_rename(cert_path, certified.cert.pem().as_bytes(), 0o644)
        .map_err(|e| write_error(cert_path, e))?;
    Ok(())
}

/// Writes `path` whole or not at all: into `{path}.tmp` (created with `mode`), then renamed.
fn write_then_rename(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Trusts a pinned certificate, else whatever the system roots and the CA file vouch for,
/// else (only when asked, by name) anything.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    danger: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&digest) {
            return Ok(ServerCertVerified::assertion());
        }
        let verdict = match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match verdict {
            Err(_) if self.danger => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let first = server_identity(None, dir.path(), listen).unwrap();
        assert!(first.generated && first.development);
        assert_eq!(first.fingerprint.len(), 95);
        let again = server_identity(None, dir.path(), listen).unwrap();
        assert!(!again.generated);
        assert_eq!(again.fingerprint, first.fingerprint);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.path().join("quic/dev-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path().join("quic"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
        // A restart derives the same endpoint secret; another key, another secret.
        let secret = endpoint_secret(&first.key);
        assert_eq!(endpoint_secret(&again.key), secret);
        let other = tempfile::tempdir().unwrap();
        let other = server_identity(None, other.path(), listen).unwrap();
        assert_ne!(endpoint_secret(&other.key), secret);
        assert!(server_config(again).is_ok());
    }

    #[test]
    fn configured_files_must_hold_a_certificate_and_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            cert_file: empty.clone(),
            key_file: empty,
        };
        let err = server_identity(Some(&files), dir.path(), "127.0.0.1:1".parse().unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn bad_pins_are_errors() {
        let trust = Trust {
            pinned_sha256: vec!["xyz".into()],
            ..Trust::default()
        };
        assert!(matches!(
            trust.client_config(SUPPORTED_ALPNS),
            Err(TlsError::Pin { .. })
        ));
    }
}
