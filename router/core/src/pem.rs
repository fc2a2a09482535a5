//! X.509 certificates in PEM text, decoded without `der`'s PEM reader.
//!
//! `der` 0.7's `PemReader` (behind `x509_cert::Certificate::from_pem`) spins forever on a
//! certificate whose base64 ends inside a DER length (`MIIB`, say): a typo in a trigger's
//! `CACerts` hung the config loader at 100% CPU, and an MNS signing certificate cut short in
//! transit would have hung a runtime thread. Here the PEM framing and base64 come from
//! `rustls-pki-types` (fuzzed, and bounded by the input), and only whole DER goes to
//! `x509-cert`, whose slice reader stops at the end of its input.
//!
//! What it does not do: check chains, dates or key usage; rustls does that when it connects.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_cert::der::Decode as _;

/// Each `CERTIFICATE` section of `pem`, decoded, in order; sections of other kinds (keys) are
/// skipped. An error says which certificate (counting from 1) failed, and why.
pub(crate) fn certificates(
    pem: &[u8],
) -> impl Iterator<Item = Result<x509_cert::Certificate, String>> {
    CertificateDer::pem_slice_iter(pem)
        .enumerate()
        .map(|(i, der)| {
            let der = der.map_err(|e| format!("certificate {}: {e}", i + 1))?;
            x509_cert::Certificate::from_der(&der)
                .map_err(|e| format!("certificate {}: {e}", i + 1))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `f`'s result, or `None` if it has not returned within 10 s (it is left running).
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    fn pem(base64: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{base64}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn truncated_certificates_are_errors_not_hangs() {
        // Each ends inside a DER header: der's PemReader loops forever on the first.
        for base64 in ["MIIB", "MIIBIjAN", "MA==", "MIICAA==", "MIAw"] {
            let text = pem(base64);
            let result = within(move || certificates(text.as_bytes()).collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("{base64:?}: no answer within 10 s"));
            assert_eq!(result.len(), 1, "{base64:?}");
            let err = result[0].as_ref().unwrap_err();
            assert!(err.starts_with("certificate 1: "), "{base64:?}: {err}");
        }
    }

    #[test]
    fn framing_errors_name_the_certificate() {
        let text = format!("{}-----BEGIN CERTIFICATE-----\nMIIB\n", pem("MA=="));
        let errors: Vec<String> = certificates(text.as_bytes())
            .map(|r| r.unwrap_err())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].starts_with("certificate 2: "), "{errors:?}");
        assert_eq!(certificates(b"no pem here").count(), 0);
        assert_eq!(certificates(pem("!!!!").as_bytes()).count(), 1);
    }
}
