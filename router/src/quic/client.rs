//! The QUIC client: one endpoint per process, one reused connection per server ([`Peer`]),
//! one stream per frame ([`publish`]).
//!
//! Used by QUIC subscribers (`sinks::quic`) and `triggerfish send --quic`. It does not batch
//! or retry; callers decide what a failure means for their events. What it guarantees: a
//! frame whose ack was read is reported with that ack; any other outcome is a
//! [`PublishError`], and [`PublishError::may_have_published`] says whether the server may
//! have queued the events anyway (the ack was lost with the connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use triggerfish_core::delivery::TransportError;
use triggerfish_core::quic::publish::encode_publish_head;
use triggerfish_core::quic::{Ack, AckDecodeError, FrameError, SUPPORTED_ALPNS, StreamCode};

use super::tls::{TlsError, Trust};

/// How often an idle client connection pings, so a pooled connection outlives the server's
/// idle timeout, and a server that stopped answering is noticed by [`IDLE_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// How long a connection lives without hearing from the server. A server (or its host) that
/// died answers nothing, not even a stateless reset, so this is how long its frames in flight
/// wait before they fail as transport errors, to be retried on a new connection: 10 s instead
/// of the 30 s of the server's default, with three keep-alives in it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a handshake may take. A server that is down answers UDP with silence (ICMP
/// errors do not reach QUIC), so without this a connect would wait for the idle timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a frame got no ack.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The name did not resolve, or no connection could be made.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// `host:port`.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed: an untrusted certificate, or no common ALPN.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        /// `host:port`.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The connection was lost after the frame was sent: the server may have queued the
    /// events, but did not say so.
    #[error("connection lost before the ack: {0}")]
    ConnectionLost(String),
    /// The server reset the stream: it did not read the frame, and queued nothing.
    #[error("the server refused the frame: {} (code {code:?})", code.describe())]
    Reset {
        /// The stream code.
        code: StreamCode,
    },
    /// The ack could not be read.
    #[error("invalid ack: {0}")]
    Ack(#[from] AckDecodeError),
    /// The answer is longer than any ack of this frame can be.
    #[error("invalid ack: longer than an ack of this frame can be")]
    AckTooLong,
    /// The frame could not be built (an invalid target, a body over 4 GiB).
    #[error("cannot build the frame: {0}")]
    Frame(#[from] FrameError),
}

impl PublishError {
    /// Whether the server may have queued the frame's events even though no ack came back.
    pub fn may_have_published(&self) -> bool {
        matches!(
            self,
            PublishError::ConnectionLost(_) | PublishError::Ack(_) | PublishError::AckTooLong
        )
    }

    /// The delivery policy's view of the failure.
    pub fn transport(&self) -> TransportError {
        match self {
            PublishError::Connect { .. } => TransportError::Connect,
            PublishError::Tls { .. } => TransportError::Tls,
            PublishError::ConnectionLost(_) => TransportError::Reset,
            PublishError::Reset { .. }
            | PublishError::Ack(_)
            | PublishError::AckTooLong
            | PublishError::Frame(_) => TransportError::Protocol,
        }
    }
}

/// The process's QUIC client endpoint and its TLS settings.
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    /// For servers on other hosts.
    network: quinn::ClientConfig,
    /// For servers on this host: the same TLS, larger datagrams ([`super::tune_for_path`]).
    loopback: quinn::ClientConfig,
}

impl QuicClient {
    /// Binds a client endpoint (dual-stack where the system allows) trusting `trust`.
    pub fn new(trust: &Trust) -> Result<QuicClient, ClientSetupError> {
        let config = trust.client_config(SUPPORTED_ALPNS)?;
        let with_transport = |loopback: bool| {
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(KEEP_ALIVE));
            transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
            // Acks are small; the client takes no streams from the server.
            transport.max_concurrent_uni_streams(0u8.into());
            transport.max_concurrent_bidi_streams(0u8.into());
            super::tune_for_path(&mut transport, loopback);
            let mut config = config.clone();
            config.transport_config(Arc::new(transport));
            config
        };
        let (network, loopback) = (with_transport(false), with_transport(true));
        let endpoint = match super::endpoint(SocketAddr::from(([0u16; 8], 0)), None) {
            Ok(e) => e,
            Err(_) => super::endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None)
                .map_err(ClientSetupError::Bind)?,
        };
        Ok(QuicClient {
            endpoint,
            network,
            loopback,
        })
    }

    /// Opens a connection to `host:port`, checking the certificate against `host`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<quinn::Connection, PublishError> {
        let peer = format!("{host}:{port}");
        let connect_error = |reason: String| PublishError::Connect {
            peer: peer.clone(),
            reason,
        };
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .next()
            .ok_or_else(|| connect_error("the name resolves to no address".into()))?;
        let config = if addr.ip().to_canonical().is_loopback() {
            &self.loopback
        } else {
            &self.network
        };
        let addr = match addr {
            // A v4 peer from a dual-stack socket.
            SocketAddr::V4(v4) if self.is_v6() => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            a => a,
        };
        let connecting = self
            .endpoint
            .connect_with(config.clone(), addr, host)
            .map_err(|e| connect_error(e.to_string()))?;
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_error(format!("no handshake within {CONNECT_TIMEOUT:?}")))?;
        connected.map_err(|e| match e {
            // Our verifier refused the certificate, or the server refused the handshake (no
            // common ALPN, say): a TLS alert, carried as a crypto error code.
            quinn::ConnectionError::TransportError(t) if is_crypto(t.code) => PublishError::Tls {
                peer: peer.clone(),
                reason: t.to_string(),
            },
            quinn::ConnectionError::ConnectionClosed(c) if is_crypto(c.error_code) => {
                PublishError::Tls {
                    peer: peer.clone(),
                    reason: c.to_string(),
                }
            }
            other => connect_error(other.to_string()),
        })
    }

    fn is_v6(&self) -> bool {
        self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6())
    }

    /// Closes every connection and waits (briefly) for the peers to hear it.
    pub async fn close(&self) {
        self.endpoint.close(0u8.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Whether a QUIC transport error code carries a TLS alert (`0x100..0x200`, RFC 9001 §4.8).
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Why the client endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// TLS settings.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No UDP socket.
    #[error("binding a UDP socket: {0}")]
    Bind(std::io::Error),
}

/// One server, reached over one connection that is opened on first use and reopened after
/// it fails.
pub struct Peer {
    client: Arc<QuicClient>,
    host: String,
    port: u16,
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

impl Peer {
    /// A server at `host:port`; nothing is opened yet.
    pub fn new(client: Arc<QuicClient>, host: &str, port: u16) -> Peer {
        Peer {
            client,
            host: host.to_owned(),
            port,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The open connection, or a new one.
    pub async fn connection(&self) -> Result<quinn::Connection, PublishError> {
        // Held across the connect: concurrent callers wait for one handshake instead of
        // starting one each.
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            match c.close_reason() {
                None => return Ok(c.clone()),
                // Closed between frames: by the server, an idle timeout, or a stateless reset
                // from a server that restarted (a keep-alive or a retransmission heard it).
                Some(reason) => tracing::info!(
                    peer = %self.address(),
                    %reason,
                    "QUIC connection was closed; opening a new one"
                ),
            }
        }
        let c = self.client.connect(&self.host, self.port).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends one frame of `events` events to `target` on the shared connection.
    pub async fn publish(
        &self,
        target: &str,
        credential: Option<&[u8]>,
        body: Bytes,
        events: u32,
    ) -> Result<Ack, PublishError> {
        let connection = self.connection().await?;
        publish(&connection, target, credential, body, events).await
    }
}

/// Sends one frame on a new stream of `connection` and reads its ack. The body is written
/// from its own buffer, never copied. `credential` is what HTTP would send in
/// `Authorization` (`Bearer <token>`).
pub async fn publish(
    connection: &quinn::Connection,
    target: &str,
    credential: Option<&[u8]>,
    body: Bytes,
    events: u32,
) -> Result<Ack, PublishError> {
    let head = encode_publish_head(target, credential, body.len())?;
    // quinn's stream errors say only "connection lost"; the connection says why (closed by
    // the server, timed out, or reset by a server that restarted).
    let lost = |e: &dyn std::fmt::Display| {
        PublishError::ConnectionLost(match connection.close_reason() {
            Some(reason) => reason.to_string(),
            None => e.to_string(),
        })
    };
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    let mut chunks = [Bytes::from(head), body];
    let stopped = match send.write_all_chunks(&mut chunks).await {
        Ok(()) => {
            // Fails only if the stream was reset meanwhile; the read below says how.
            let _ = send.finish();
            None
        }
        // The server stopped reading: it answered early (404, 503: an ack follows) or refused
        // the frame (a reset follows). The read below tells which.
        Err(quinn::WriteError::Stopped(code)) => Some(code),
        Err(e) => return Err(lost(&e)),
    };
    match recv.read_to_end(Ack::max_len(events as usize)).await {
        Ok(bytes) => Ok(Ack::decode(&bytes, events)?),
        Err(quinn::ReadToEndError::TooLong) => Err(PublishError::AckTooLong),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            Err(PublishError::Reset {
                code: StreamCode::from_wire(code.into_inner()),
            })
        }
        Err(quinn::ReadToEndError::Read(e)) => match stopped {
            Some(code) => Err(PublishError::Reset {
                code: StreamCode::from_wire(code.into_inner()),
            }),
            None => Err(lost(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::quic::{MAX_UDP_PAYLOAD, tls};

    /// A server that reads every unidirectional stream to its end.
    fn sink_server(dir: &std::path::Path) -> (SocketAddr, String) {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let identity = tls::server_identity(None, dir, listen).unwrap();
        let fingerprint = identity.fingerprint.clone();
        let secret = tls::endpoint_secret(&identity.key);
        let config = tls::server_config(identity).unwrap();
        let server = crate::quic::Server { config, secret };
        let server = crate::quic::endpoint(listen, Some(server)).unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let Ok(connection) = incoming.await else {
                    continue;
                };
                tokio::spawn(async move {
                    while let Ok(mut stream) = connection.accept_uni().await {
                        let _ = stream.read_to_end(1 << 20).await;
                    }
                });
            }
        });
        (addr, fingerprint)
    }

    /// Sends `len` bytes on a stream of their own and waits for the server to have them all.
    async fn send(connection: &quinn::Connection, len: usize) {
        let mut stream = connection.open_uni().await.unwrap();
        stream.write_all(&vec![b'x'; len]).await.unwrap();
        stream.finish().unwrap();
        stream.stopped().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loopback_connections_send_a_frame_in_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, fingerprint) = sink_server(dir.path());
        let client = QuicClient::new(&Trust {
            pinned_sha256: vec![fingerprint],
            ..Trust::default()
        })
        .unwrap();
        let connection = client.connect("127.0.0.1", addr.port()).await.unwrap();

        // Path MTU discovery takes a few round trips, probing while data flows.
        let deadline = Instant::now() + Duration::from_secs(10);
        while connection.stats().path.current_mtu <= MAX_UDP_PAYLOAD {
            assert!(
                Instant::now() < deadline,
                "the MTU stayed at {} bytes over loopback",
                connection.stats().path.current_mtu
            );
            send(&connection, 64 << 10).await;
        }

        // 32 frames of 32 KiB: a datagram each, where network-sized datagrams take six.
        let before = connection.stats().udp_tx.datagrams;
        for _ in 0..32 {
            send(&connection, 32 << 10).await;
        }
        let datagrams = connection.stats().udp_tx.datagrams - before;
        assert!(
            datagrams <= 32 * 2,
            "{datagrams} datagrams for 32 frames of 32 KiB"
        );
        let path = connection.stats().path;
        assert_eq!((path.lost_packets, path.black_holes_detected), (0, 0));
        client.close().await;
    }
}
