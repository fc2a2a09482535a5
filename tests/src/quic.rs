//! A raw QUIC client for the protocol tests: frames as bytes, so that tests can send what a
//! well-behaved client never would (garbage, truncated frames, oversized headers) and see
//! exactly what comes back (an ack, a stream reset code, a lost connection).
//!
//! Frames are built with `triggerfish_core::quic`, the reference codec; acks are read with it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use triggerfish_core::quic::publish::{encode_publish, encode_publish_with_credential};
use triggerfish_core::quic::{ALPN, Ack};

use crate::event::{Event, batch};

/// What came back on a stream.
#[derive(Debug)]
pub enum Answer {
    /// An ack frame.
    Ack(Ack),
    /// The server reset the stream (or stopped our sending without an ack) with this code.
    Reset(u64),
    /// The connection went away, or the ack could not be read.
    Lost(String),
}

impl Answer {
    /// The ack; panics otherwise.
    pub fn ack(self) -> Ack {
        match self {
            Answer::Ack(a) => a,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

/// One client connection.
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    /// The connection.
    pub connection: quinn::Connection,
}

impl QuicClient {
    /// Connects to `addr` as `localhost`, trusting the PEM certificate `ca`, offering `alpn`.
    pub async fn connect_with(
        addr: SocketAddr,
        ca: &Path,
        alpn: &[u8],
    ) -> Result<QuicClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let config = quinn::ClientConfig::new(Arc::new(quic));
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| e.to_string())?;
        let connection = endpoint
            .connect_with(config, addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(QuicClient {
            endpoint,
            connection,
        })
    }

    /// Connects with the protocol's ALPN; panics on failure.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> QuicClient {
        QuicClient::connect_with(addr, ca, ALPN)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    /// Sends `bytes` on a new stream (then FIN, if `finish`) and reads the answer, for a
    /// frame of `events` events.
    pub async fn exchange(&self, bytes: &[u8], finish: bool, events: u32) -> Answer {
        let (mut send, mut recv) = match self.connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return Answer::Lost(e.to_string()),
        };
        match send.write_all(bytes).await {
            Ok(()) => {}
            // Stopped: an ack may still follow.
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(e) => return Answer::Lost(e.to_string()),
        }
        if finish {
            let _ = send.finish();
        }
        match recv.read_to_end(Ack::max_len(events as usize)).await {
            Ok(b) => match Ack::decode(&b, events) {
                Ok(a) => Answer::Ack(a),
                Err(e) => Answer::Lost(format!("unreadable ack: {e}")),
            },
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                Answer::Reset(code.into_inner())
            }
            Err(e) => Answer::Lost(e.to_string()),
        }
    }

    /// Publishes `events` to `target` (`namespace/broker`) in one frame.
    pub async fn publish(&self, target: &str, events: &[Event]) -> Answer {
        self.publish_body(target, &batch(events), events.len() as u32)
            .await
    }

    /// Publishes a body as given.
    pub async fn publish_body(&self, target: &str, body: &Bytes, events: u32) -> Answer {
        let frame = encode_publish(target, body).expect("a valid frame");
        self.exchange(&frame, true, events).await
    }

    /// Publishes `events` in one frame carrying `credential` (`Bearer <token>`).
    pub async fn publish_with_credential(
        &self,
        target: &str,
        credential: &str,
        events: &[Event],
    ) -> Answer {
        let frame =
            encode_publish_with_credential(target, Some(credential.as_bytes()), &batch(events))
                .expect("a valid frame");
        self.exchange(&frame, true, events.len() as u32).await
    }

    /// Closes the connection at once (no graceful wait).
    pub fn abort(&self) {
        self.connection.close(0u8.into(), b"test abort");
    }

    /// Closes the connection and waits for the server to hear it.
    pub async fn close(self) {
        self.connection.close(0u8.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}
