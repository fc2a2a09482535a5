//! The QUIC transport's shared pieces: TLS ([`tls`]) and the client ([`client`]).
//!
//! The protocol itself (frames, acks, error codes) is sans-IO, in
//! `triggerfish_core::quic`; the server is [`crate::ingress::quic`]; the batching subscriber
//! is [`crate::sinks::quic`]; `triggerfish send --quic` is [`crate::send`].

pub mod client;
pub mod tls;

/// The largest UDP payload a connection to another host sends, and path MTU discovery
/// searches for.
///
/// Quinn's defaults stop at Ethernet's 1,472 / 1,452 bytes. Searching higher is safe on any
/// path (probes that do not fit are lost and the search settles below them), and paths that
/// carry more (jumbo-frame networks) then send a batch in a fifth of the packets: fewer
/// encryptions, acks and system calls per frame.
///
/// Why 6,550 and not a jumbo frame's 8,952: quinn hands the kernel up to ten datagrams in one
/// segmentation-offload (GSO) send, and the kernel refuses a send of more than 65,507 bytes
/// (an IPv4 datagram's limit) with `EMSGSIZE`. With 8,952-byte datagrams a full send of ten
/// was 89,520 bytes: quinn dropped it whole, silently, and under load the losses drove loss
/// recovery, probe timeouts of 100–400 ms and the black-hole fallback below.
pub const MAX_UDP_PAYLOAD: u16 = 6_550;

/// The largest UDP payload a connection over loopback sends, and the largest any endpoint
/// receives.
///
/// Loopback carries 64 KiB packets, so a frame of 100 events (30–40 KB) fits in one datagram:
/// one packet to build, encrypt, send, receive, decrypt and acknowledge, where 6,550-byte
/// datagrams take five or six. Datagrams this large cannot share a GSO send, so loopback
/// connections send them one per system call; a frame still costs one. 65,488 bytes: an IPv6
/// loopback packet of 65,536 bytes less its IPv6 and UDP headers (IPv4 allows 65,507).
///
/// Same-host producers (a sidecar, `triggerfish send` on the router's machine, routers
/// forwarding to each other on one host) get it. The cost is the endpoint's receive buffer,
/// which quinn sizes for 32 × 64 datagrams of this size: 134 MB of address space, of which
/// the kernel writes at most 64 KiB into each of the 32 slots, so about 2 MiB is ever touched.
/// With transparent huge pages each touched slot would cost 2 MiB instead; `triggerfish`
/// turns them off (see its `main`).
pub const LOOPBACK_UDP_PAYLOAD: u16 = 65_488;

/// Quinn's most datagrams per GSO send (`MAX_TRANSMIT_SEGMENTS` in `quinn`'s connection).
const GSO_SEGMENTS: u32 = 10;

// Ten full datagrams must fit in one UDP send over IPv4.
const _: () = assert!(MAX_UDP_PAYLOAD as u32 * GSO_SEGMENTS <= 65_507);

/// How long path MTU discovery waits to search again after quinn's black-hole detector drops
/// a connection to 1,200-byte datagrams.
///
/// The detector reads a few lost large packets as a path that stopped carrying them, and
/// congestion loss fires it too (quinn-rs/quinn#1855, #2791): a producer at full rate over
/// loopback lost a handful of packets to congestion, fell to 1,200 bytes and sent seven times
/// the packets for the rest of the connection, since quinn's default cooldown is a minute. A
/// real black hole costs one failed search (a few probes) per cooldown.
const BLACK_HOLE_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets what depends on the path to the peer: how large a datagram path MTU discovery
/// searches for, and whether datagrams are sent in GSO batches. Over loopback: up to
/// [`LOOPBACK_UDP_PAYLOAD`], one per send; elsewhere up to [`MAX_UDP_PAYLOAD`], ten per send.
pub fn tune_for_path(transport: &mut quinn::TransportConfig, loopback: bool) {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    let upper = if loopback {
        LOOPBACK_UDP_PAYLOAD
    } else {
        MAX_UDP_PAYLOAD
    };
    mtu.upper_bound(upper)
        .black_hole_cooldown(BLACK_HOLE_COOLDOWN);
    transport
        .mtu_discovery_config(Some(mtu))
        .enable_segmentation_offload(!loopback);
}

/// The UDP socket buffers an endpoint asks for, each way.
///
/// The kernel's default (`net.core.rmem_default`, 208 KiB on most systems) holds a few dozen
/// large datagrams: a producer with eight frames of 100 events in flight overflows it, the
/// kernel drops datagrams (`RcvbufErrors` in `/proc/net/snmp`), and each drop costs a loss
/// recovery, up to a probe timeout of tens of milliseconds. Linux caps the request at
/// `net.core.rmem_max` / `wmem_max`; a server warns when it got less than a quarter of it.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A QUIC endpoint on `addr` that receives datagrams of up to [`LOOPBACK_UDP_PAYLOAD`], with
/// socket buffers of up to [`SOCKET_BUFFER`]; a server when `server` is given.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<Server>,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows, as quinn's own client endpoint does.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    size_buffers(&socket, server.is_some());
    let socket: std::net::UdpSocket = socket.into();
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    let (mut config, server) = match server {
        Some(s) => (restartable(&s.secret), Some(s.config)),
        // A client's connection IDs and resets only matter while it runs: random keys do.
        None => (quinn::EndpointConfig::default(), None),
    };
    config
        .max_udp_payload_size(LOOPBACK_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// What a server endpoint needs beyond a client's.
pub struct Server {
    /// TLS and transport settings.
    pub config: quinn::ServerConfig,
    /// The secret its connection-ID and reset keys derive from ([`tls::endpoint_secret`]).
    pub secret: [u8; 32],
}

/// An endpoint config whose connection IDs and stateless resets (RFC 9000 §10.3) are keyed by
/// `secret` instead of random keys. A server that crashed and restarted with the same secret
/// then recognises the connection IDs it gave out before (quinn drops packets whose IDs it
/// cannot validate), and answers their packets with a reset the clients accept: they
/// reconnect at once instead of waiting out their idle timeout, with their frames in flight
/// failing as transport errors (retried by the delivery policy).
fn restartable(secret: &[u8; 32]) -> quinn::EndpointConfig {
    use ring::hmac;
    // One key per use, each derived from the secret under its own label.
    let secret = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let reset_key = hmac::Key::new(
        hmac::HMAC_SHA256,
        hmac::sign(&secret, b"stateless resets").as_ref(),
    );
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&hmac::sign(&secret, b"connection ids").as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(std::sync::Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// Asks for [`SOCKET_BUFFER`] each way; a smaller buffer works, with more drops under bursts.
/// Only a server, which receives the events, warns when it got much less; a client receives
/// acks.
fn size_buffers(socket: &socket2::Socket, server: bool) {
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let got = socket.recv_buffer_size().unwrap_or(0);
    tracing::debug!(wanted = SOCKET_BUFFER, got, "QUIC: UDP receive buffer");
    if server && got < SOCKET_BUFFER / 4 {
        tracing::warn!(
            wanted = SOCKET_BUFFER,
            got,
            "QUIC: the UDP receive buffer is small, so bursts of datagrams may be dropped and \
             resent; raise it with `sysctl -w net.core.rmem_max={SOCKET_BUFFER}`"
        );
    }
}
