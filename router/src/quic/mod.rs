//! The QUIC transport's shared pieces: TLS ([`tls`]) and the client ([`client`]).
//!
//! The protocol itself (frames, acks, error codes) is sans-IO, in
//! `triggerfish_core::quic`; the server is [`crate::ingress::quic`]; the batching subscriber
//! is [`crate::sinks::quic`]; `triggerfish send --quic` is [`crate::send`].

pub mod client;
pub mod tls;

/// The largest UDP payload an endpoint receives and path MTU discovery searches for: a
/// jumbo frame's (9,000-byte MTU less the IPv6 and UDP headers).
///
/// Quinn's defaults stop at Ethernet's 1,472 / 1,452 bytes. Searching higher is safe on any
/// path (probes that do not fit are lost and the search settles below them), and paths that
/// carry more (jumbo-frame networks, loopback) then send a batch in a sixth of the packets:
/// fewer encryptions, acks and system calls per frame. The cost is the endpoint's receive
/// buffer, which grows with it (quinn sizes it for 32 × 64 segments of this size, touched only
/// as datagrams arrive).
const MAX_UDP_PAYLOAD: u16 = 8_952;

/// Path MTU discovery up to [`MAX_UDP_PAYLOAD`], for the server and the client.
pub fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    mtu
}

/// A QUIC endpoint on `addr` that receives datagrams of up to [`MAX_UDP_PAYLOAD`]; a server
/// when `server` is given.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows, as quinn's own client endpoint does.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}
