//! HTTP/1.1 pipelining to one HTTP subscriber (`delivery.pipelining`).
//!
//! What it does: a trigger that sets `pipelining: N` gets a [`Pipeline`] of its own to its
//! subscriber: up to `ceil(maxInFlight / N)` connections, each with up to `N` requests written
//! before their responses come back. Responses are matched to requests by order, as RFC 9112
//! §9.3.2 requires servers to answer. A request goes to the first connection with room, so a
//! quiet trigger keeps one connection and a busy one writes many requests in one `write` and
//! reads many responses in one `read`: the syscalls and wake-ups per event, on both sides,
//! drop by up to `N` times. A connection's task starts when first needed; the connection opens
//! when a request comes and closes after [`IDLE_TIMEOUT`] without one.
//!
//! What it does not do: HTTP/2, `Expect: 100-continue`, redirects, or retries of its own.
//! A request whose bytes never reached the socket when its connection failed is sent again on
//! the next connection, since the subscriber cannot have seen it. A request that was written
//! and got no response is reported as [`TransportError::Reset`], and the delivery policy
//! decides, as for any other connection failure. Timeouts are the caller's: a caller that
//! stops waiting for the oldest response on a connection (its attempt timed out) closes that
//! connection, since every later response would queue behind it, and the requests written
//! after it fail with `Reset`, as they would if the subscriber had closed the connection.
//!
//! [`ResponseDecoder`] is the sans-IO half: it finds the responses in the bytes read, framed by
//! `Content-Length`, chunked transfer coding, or the end of the connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use triggerfish_core::delivery::TransportError;
use url::{Host, Url};

/// How long a connection with nothing outstanding stays open. Under the 30 s after which
/// Triggerfish's own listeners close an idle connection, as for the pooled client.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing a connection may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Room kept in the read buffer, so that one `read` can take many responses.
const READ_CHUNK: usize = 16 * 1024;

/// The most headers in a response head.
const MAX_HEADERS: usize = 96;

/// Pipelined connections to one subscriber.
pub struct Pipeline {
    origin: Arc<Origin>,
    /// Started when first needed: a trigger that never has more than `depth` requests
    /// outstanding has one lane task.
    lanes: Box<[OnceLock<Lane>]>,
    depth: usize,
}

/// One connection's queue and driver task.
struct Lane {
    tx: mpsc::Sender<Exchange>,
    /// Requests handed to this lane and not yet answered.
    outstanding: Arc<AtomicUsize>,
}

/// Where the connections go.
struct Origin {
    host: Host<String>,
    port: u16,
    /// `Some` for `https`.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

/// A request on its way to a connection.
struct Exchange {
    /// The whole request, head and body.
    request: Bytes,
    /// The most body bytes to keep.
    keep: usize,
    reply: oneshot::Sender<Result<RawResponse, TransportError>>,
}

/// A response as read off a connection.
#[derive(Debug)]
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body's first `keep` bytes.
    pub body: Bytes,
    /// Whether the body was longer than `keep` (the rest was read and dropped).
    pub truncated: bool,
}

/// Why a pipeline could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The URL has no host, or a scheme other than `http` and `https`.
    #[error("{0}: not an http or https URL with a host")]
    Url(String),
    /// The TLS settings could not be built.
    #[error("TLS settings for {url}: {reason}")]
    Tls {
        /// The subscriber.
        url: String,
        /// What rustls said.
        reason: String,
    },
}

impl Pipeline {
    /// Connections to `url`, `depth` requests deep, enough of them for `max_in_flight`
    /// requests at once. `tls` is the client configuration for `https` URLs.
    pub fn new(
        url: &Url,
        depth: usize,
        max_in_flight: usize,
        tls: impl FnOnce() -> Result<rustls::ClientConfig, String>,
    ) -> Result<Pipeline, PipelineError> {
        let bad_url = || PipelineError::Url(url.to_string());
        let host = url.host().ok_or_else(bad_url)?.to_owned();
        let port = url.port_or_known_default().ok_or_else(bad_url)?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                let mut config = tls().map_err(|reason| PipelineError::Tls {
                    url: url.to_string(),
                    reason,
                })?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = match &host {
                    Host::Domain(d) => {
                        rustls_pki_types::ServerName::try_from(d.clone()).map_err(|e| {
                            PipelineError::Tls {
                                url: url.to_string(),
                                reason: e.to_string(),
                            }
                        })?
                    }
                    Host::Ipv4(ip) => rustls_pki_types::ServerName::from(std::net::IpAddr::V4(*ip)),
                    Host::Ipv6(ip) => rustls_pki_types::ServerName::from(std::net::IpAddr::V6(*ip)),
                };
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => return Err(bad_url()),
        };
        let origin = Arc::new(Origin { host, port, tls });
        let depth = depth.max(1);
        let lanes = max_in_flight.div_ceil(depth).max(1);
        Ok(Pipeline {
            origin,
            lanes: (0..lanes).map(|_| OnceLock::new()).collect(),
            depth,
        })
    }

    /// Lane `i`, its task started on first use.
    fn lane(&self, i: usize) -> &Lane {
        self.lanes[i].get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.depth);
            let outstanding = Arc::new(AtomicUsize::new(0));
            tokio::spawn(lane(
                Arc::clone(&self.origin),
                self.depth,
                rx,
                Arc::clone(&outstanding),
            ));
            Lane { tx, outstanding }
        })
    }

    /// Sends `request` (a whole HTTP/1.1 request) and waits for its response, keeping at most
    /// `keep` bytes of its body. Dropping the future gives up on the response (see the module
    /// docs for what that does to the connection).
    pub async fn send(&self, request: Bytes, keep: usize) -> Result<RawResponse, TransportError> {
        let (reply, response) = oneshot::channel();
        let exchange = Exchange {
            request,
            keep,
            reply,
        };
        // The first lane with room, so that load gathers on few connections.
        let lane = (0..self.lanes.len())
            .map(|i| self.lane(i))
            .find(|lane| {
                if lane.outstanding.fetch_add(1, Ordering::Relaxed) < self.depth {
                    return true;
                }
                lane.outstanding.fetch_sub(1, Ordering::Relaxed);
                false
            })
            .unwrap_or_else(|| {
                // Every lane is full (callers beyond `maxInFlight`): the least loaded one.
                let lane = (0..self.lanes.len())
                    .map(|i| self.lane(i))
                    .min_by_key(|l| l.outstanding.load(Ordering::Relaxed))
                    .unwrap_or_else(|| self.lane(0));
                lane.outstanding.fetch_add(1, Ordering::Relaxed);
                lane
            });
        // Counted from here: given back by the lane once it settles the exchange, or here if
        // the exchange never reaches it (a closed lane, or a caller that stops waiting first).
        let mut counted = Counted(Some(&lane.outstanding));
        if lane.tx.send(exchange).await.is_err() {
            return Err(TransportError::Reset);
        }
        counted.0 = None;
        response.await.unwrap_or(Err(TransportError::Reset))
    }
}

/// A request counted in a lane's `outstanding` that the lane has not taken yet.
struct Counted<'a>(Option<&'a AtomicUsize>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(outstanding) = self.0 {
            outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A lane's driver: connects when a request comes, drives the connection until it ends, and
/// connects again for the requests it could not send.
async fn lane(
    origin: Arc<Origin>,
    depth: usize,
    mut rx: mpsc::Receiver<Exchange>,
    outstanding: Arc<AtomicUsize>,
) {
    let mut conn = Connection {
        depth,
        outstanding,
        carry: VecDeque::new(),
        waiting: VecDeque::new(),
        rx_closed: false,
    };
    loop {
        if conn.carry.is_empty() {
            match rx.recv().await {
                Some(exchange) => conn.carry.push_back(exchange),
                None => return,
            }
        }
        match origin.connect().await {
            Ok(Io::Plain(tcp)) => conn.drive(tcp, &mut rx).await,
            Ok(Io::Tls(tls)) => conn.drive(*tls, &mut rx).await,
            Err(e) => {
                tracing::debug!(host = %origin.host, port = origin.port, error = ?e, "could not connect to a pipelined subscriber");
                while let Some(exchange) = conn.carry.pop_front() {
                    conn.complete(exchange.reply, Err(e));
                }
            }
        }
        if conn.rx_closed && conn.carry.is_empty() {
            return;
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Origin {
    async fn connect(&self) -> Result<Io, TransportError> {
        let connect = async {
            let tcp = match &self.host {
                Host::Domain(d) => TcpStream::connect((d.as_str(), self.port)).await,
                Host::Ipv4(ip) => TcpStream::connect((*ip, self.port)).await,
                Host::Ipv6(ip) => TcpStream::connect((*ip, self.port)).await,
            }
            .map_err(|_| TransportError::Connect)?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Io::Plain(tcp)),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|s| Io::Tls(Box::new(s)))
                    .map_err(|_| TransportError::Tls),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or(Err(TransportError::Connect))
    }
}

/// A request written (or being written) on the connection, waiting for its response.
struct Waiting {
    reply: oneshot::Sender<Result<RawResponse, TransportError>>,
    keep: usize,
    /// Where its bytes start in the connection's output.
    start: u64,
    /// Its bytes, kept until they start going out, to send again on another connection.
    request: Bytes,
}

/// The state of a lane across its connections.
struct Connection {
    depth: usize,
    outstanding: Arc<AtomicUsize>,
    /// Requests to send first, on the next connection: none of their bytes went out.
    carry: VecDeque<Exchange>,
    waiting: VecDeque<Waiting>,
    /// The pipeline was dropped: no more requests come.
    rx_closed: bool,
}

/// How a connection ended.
enum End {
    /// Idle, or the pipeline is gone: nothing outstanding.
    Clean,
    /// Failed: what to tell the requests that were written and got no response.
    Failed(TransportError),
}

impl Connection {
    fn complete(
        &self,
        reply: oneshot::Sender<Result<RawResponse, TransportError>>,
        result: Result<RawResponse, TransportError>,
    ) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        let _ = reply.send(result);
    }

    /// Queues `exchange` on this connection, unless its caller gave up already.
    fn push(&mut self, exchange: Exchange, out: &mut BytesMut, queued: &mut u64) {
        if exchange.reply.is_closed() {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        out.extend_from_slice(&exchange.request);
        self.waiting.push_back(Waiting {
            reply: exchange.reply,
            keep: exchange.keep,
            start: *queued,
            request: exchange.request,
        });
        *queued += self.waiting.back().map_or(0, |w| w.request.len() as u64);
    }

    /// Drives one connection until it ends, then settles what was outstanding on it.
    async fn drive<T: AsyncRead + AsyncWrite>(&mut self, io: T, rx: &mut mpsc::Receiver<Exchange>) {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut out = BytesMut::new();
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let mut decoder = ResponseDecoder::default();
        // Bytes queued for output and bytes written, since the connection opened.
        let (mut queued, mut written) = (0u64, 0u64);
        let mut flush = false;
        let end = loop {
            while self.waiting.len() < self.depth {
                let exchange = match self.carry.pop_front() {
                    Some(e) => e,
                    None => match rx.try_recv() {
                        Ok(e) => e,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            self.rx_closed = true;
                            break;
                        }
                    },
                };
                self.push(exchange, &mut out, &mut queued);
            }
            if self.waiting.is_empty() && self.rx_closed {
                break End::Clean;
            }
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
            let room = self.waiting.len() < self.depth && !self.rx_closed;
            let idle = self.waiting.is_empty();
            tokio::select! {
                biased;
                () = front_abandoned(&mut self.waiting) => break End::Failed(TransportError::Reset),
                read = rd.read_buf(&mut input) => match read {
                    Ok(0) => {
                        // The peer closed: a body framed by the close is now complete.
                        if let Some(w) = self.waiting.pop_front() {
                            match decoder.finish(&mut input, w.keep) {
                                Some(response) => self.complete(w.reply, Ok(response)),
                                None => self.waiting.push_front(w),
                            }
                        }
                        break End::Failed(TransportError::Reset);
                    }
                    Ok(_) => match self.take_responses(&mut decoder, &mut input) {
                        Ok(true) => {}
                        // `Connection: close`: nothing after this response will be answered.
                        Ok(false) => break End::Failed(TransportError::Reset),
                        Err(e) => break End::Failed(e),
                    },
                    Err(_) => break End::Failed(TransportError::Reset),
                },
                wrote = write_step(&mut wr, &out), if flush || !out.is_empty() => match wrote {
                    Err(_) => break End::Failed(TransportError::Reset),
                    Ok(0) if !out.is_empty() => break End::Failed(TransportError::Reset),
                    // Flushed.
                    Ok(0) => flush = false,
                    Ok(n) => {
                        out.advance(n);
                        written += n as u64;
                        flush = true;
                    }
                },
                exchange = rx.recv(), if room => match exchange {
                    Some(e) => self.push(e, &mut out, &mut queued),
                    None => self.rx_closed = true,
                },
                () = tokio::time::sleep(IDLE_TIMEOUT), if idle => break End::Clean,
            }
        };
        // Bounded: a TLS close_notify cannot go out while a stalled peer leaves the socket full.
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, wr.shutdown()).await;
        if let End::Failed(error) = end {
            // Requests none of whose bytes went out go first on the next connection; the
            // others may have been seen, so the delivery policy decides.
            let mut unsent = Vec::new();
            while let Some(w) = self.waiting.pop_back() {
                if w.start >= written {
                    unsent.push(Exchange {
                        request: w.request,
                        keep: w.keep,
                        reply: w.reply,
                    });
                } else {
                    self.complete(w.reply, Err(error));
                }
            }
            for exchange in unsent {
                self.carry.push_front(exchange);
            }
        }
    }

    /// Completes the waiting requests whose responses are in `input`. `Ok(false)`: the last
    /// one closes the connection.
    fn take_responses(
        &mut self,
        decoder: &mut ResponseDecoder,
        input: &mut BytesMut,
    ) -> Result<bool, TransportError> {
        loop {
            let Some(front) = self.waiting.front() else {
                // Bytes nobody asked for.
                return if input.is_empty() {
                    Ok(true)
                } else {
                    Err(TransportError::Protocol)
                };
            };
            match decoder.decode(input, front.keep)? {
                None => return Ok(true),
                Some((response, keep_alive)) => {
                    if let Some(w) = self.waiting.pop_front() {
                        self.complete(w.reply, Ok(response));
                    }
                    if !keep_alive {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

/// Writes some of `out`, or flushes once it is all written (TLS may hold bytes back).
async fn write_step<W: AsyncWrite + Unpin>(wr: &mut W, out: &[u8]) -> std::io::Result<usize> {
    if out.is_empty() {
        wr.flush().await.map(|()| 0)
    } else {
        wr.write(out).await
    }
}

/// Resolves when the caller of the oldest waiting request has stopped waiting.
async fn front_abandoned(waiting: &mut VecDeque<Waiting>) {
    match waiting.front_mut() {
        Some(w) => w.reply.closed().await,
        None => std::future::pending().await,
    }
}

/// Finds HTTP/1.1 responses in a byte stream (sans-IO).
#[derive(Default)]
pub struct ResponseDecoder {
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Head,
    Body(Partial),
}

/// A response whose body is being read.
struct Partial {
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
    framing: Framing,
    body: BytesMut,
    truncated: bool,
}

enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked: the next chunk's size line.
    ChunkSize,
    /// Chunked: this many bytes of the chunk left, then its CRLF.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: the trailer section after the last chunk.
    Trailers,
    /// Until the connection closes.
    Close,
}

impl ResponseDecoder {
    /// Takes the next complete response off the front of `input`, keeping at most `keep`
    /// bytes of its body, with whether the connection stays open after it. `Ok(None)`: more
    /// bytes are needed.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        keep: usize,
    ) -> Result<Option<(RawResponse, bool)>, TransportError> {
        loop {
            match &mut self.state {
                State::Head => match parse_head(input)? {
                    None => return Ok(None),
                    // 1xx: informational, the final response follows.
                    Some(None) => {}
                    Some(Some(partial)) => self.state = State::Body(partial),
                },
                State::Body(partial) => {
                    if !partial.read_body(input, keep)? {
                        return Ok(None);
                    }
                    let State::Body(p) = std::mem::take(&mut self.state) else {
                        unreachable!("in the body state");
                    };
                    let keep_alive = p.keep_alive;
                    return Ok(Some((p.into_response(), keep_alive)));
                }
            }
        }
    }

    /// The connection ended: the response whose body runs to the close, if that is what was
    /// being read.
    pub fn finish(&mut self, input: &mut BytesMut, keep: usize) -> Option<RawResponse> {
        match std::mem::take(&mut self.state) {
            State::Body(mut p) if matches!(p.framing, Framing::Close) => {
                p.keep(input.split().freeze().as_ref(), keep);
                Some(p.into_response())
            }
            _ => None,
        }
    }
}

/// Parses a response head off `input`: `Ok(None)` if incomplete, `Ok(Some(None))` for a 1xx
/// response (consumed), else the response with its body to read.
fn parse_head(input: &mut BytesMut) -> Result<Option<Option<Partial>>, TransportError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD_BYTES => {
            return Err(TransportError::Protocol);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(TransportError::Protocol),
    };
    let code = response.code.ok_or(TransportError::Protocol)?;
    let status = StatusCode::from_u16(code).map_err(|_| TransportError::Protocol)?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(TransportError::Protocol);
        }
        input.advance(len);
        return Ok(Some(None));
    }
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = None;
    for h in response.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| TransportError::Protocol)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| TransportError::Protocol)?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(TransportError::Protocol)?;
            if length.is_some_and(|l| l != n) {
                return Err(TransportError::Protocol);
            }
            length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            // Chunked only if it is the last coding applied.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == http::header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        headers.append(name, value);
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::ChunkSize,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    input.advance(len);
    Ok(Some(Some(Partial {
        status,
        headers,
        keep_alive,
        framing,
        body: BytesMut::new(),
        truncated: false,
    })))
}

impl Partial {
    /// Reads body bytes off `input`; `Ok(true)` once the body is complete.
    fn read_body(&mut self, input: &mut BytesMut, keep: usize) -> Result<bool, TransportError> {
        loop {
            match self.framing {
                Framing::Length(0) => return Ok(true),
                Framing::Length(left) | Framing::ChunkData(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let n = (input.len() as u64).min(left) as usize;
                    let data = input.split_to(n);
                    self.keep(&data, keep);
                    let left = left - n as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::ChunkEnd,
                        _ => Framing::ChunkData(left),
                    };
                }
                Framing::ChunkSize => match httparse::parse_chunk_size(input) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        input.advance(len);
                        self.framing = if size == 0 {
                            Framing::Trailers
                        } else {
                            Framing::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if input.len() > MAX_HEAD_BYTES => {
                        return Err(TransportError::Protocol);
                    }
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Err(_) => return Err(TransportError::Protocol),
                },
                Framing::ChunkEnd => {
                    if input.len() < 2 {
                        return Ok(false);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(TransportError::Protocol);
                    }
                    input.advance(2);
                    self.framing = Framing::ChunkSize;
                }
                Framing::Trailers => {
                    // Trailer fields are dropped: the section ends at the first empty line.
                    if input.starts_with(b"\r\n") {
                        input.advance(2);
                        self.framing = Framing::Length(0);
                    } else if let Some(end) = memchr::memmem::find(input, b"\r\n\r\n") {
                        input.advance(end + 4);
                        self.framing = Framing::Length(0);
                    } else if input.len() > MAX_HEAD_BYTES {
                        return Err(TransportError::Protocol);
                    } else {
                        return Ok(false);
                    }
                }
                Framing::Close => {
                    let data = input.split();
                    self.keep(&data, keep);
                    return Ok(false);
                }
            }
        }
    }

    fn keep(&mut self, data: &[u8], keep: usize) {
        let room = keep.saturating_sub(self.body.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn into_response(self) -> RawResponse {
        RawResponse {
            status: self.status,
            headers: self.headers,
            body: self.body.freeze(),
            truncated: self.truncated,
        }
    }
}

/// Writes one POST request for `url` with `headers` and `body` into a buffer.
pub fn encode_request(url: &Url, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let mut buf = BytesMut::with_capacity(96 + path.len() + body.len() + 48 * headers.len());
    buf.put_slice(b"POST ");
    buf.put_slice(if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    });
    buf.put_slice(b" HTTP/1.1\r\nhost: ");
    buf.put_slice(host.as_bytes());
    buf.put_slice(b"\r\ncontent-length: ");
    buf.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    buf.put_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"\r\n");
    buf.put_slice(body);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::net::TcpListener;

    use super::*;

    /// Feeds `wire` to a decoder `step` bytes at a time; returns the responses found.
    fn decode_all(wire: &[u8], step: usize, keep: usize) -> Vec<(RawResponse, bool)> {
        let mut decoder = ResponseDecoder::default();
        let mut input = BytesMut::new();
        let mut found = Vec::new();
        for piece in wire.chunks(step) {
            input.extend_from_slice(piece);
            while let Some(r) = decoder.decode(&mut input, keep).unwrap() {
                found.push(r);
            }
        }
        assert!(input.is_empty(), "{} bytes left over", input.len());
        found
    }

    const WIRE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 200 OK\r\ncontent-length: 5\r\nce-id: a\r\n\r\nhello\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n\
        3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n\
        HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n\
        HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

    #[test]
    fn finds_each_response_however_the_bytes_arrive() {
        for step in [1, 2, 7, 64, WIRE.len()] {
            let found = decode_all(WIRE, step, 1024);
            let statuses: Vec<u16> = found.iter().map(|(r, _)| r.status.as_u16()).collect();
            assert_eq!(statuses, [200, 204, 500, 202, 503], "step {step}");
            assert_eq!(&found[0].0.body[..], b"hello");
            assert_eq!(found[0].0.headers["ce-id"], "a");
            assert!(found[1].0.body.is_empty());
            assert_eq!(
                &found[2].0.body[..],
                b"abcde",
                "chunks joined, trailers dropped"
            );
            assert!(found[3].0.body.is_empty());
            assert_eq!(found[4].0.headers["retry-after"], "2");
            let keep_alive: Vec<bool> = found.iter().map(|(_, k)| *k).collect();
            assert_eq!(keep_alive, [true, true, true, true, false]);
        }
    }

    #[test]
    fn keeps_at_most_keep_bytes_and_still_frames_the_rest() {
        let found = decode_all(WIRE, 3, 2);
        assert_eq!(&found[0].0.body[..], b"he");
        assert!(found[0].0.truncated);
        assert_eq!(&found[2].0.body[..], b"ab");
        assert!(found[2].0.truncated);
        assert!(!found[1].0.truncated);
        assert_eq!(found.len(), 5);
    }

    #[test]
    fn a_body_without_a_length_ends_with_the_connection() {
        let mut decoder = ResponseDecoder::default();
        let mut input = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\npart one, "[..]);
        assert!(decoder.decode(&mut input, 100).unwrap().is_none());
        input.extend_from_slice(b"part two");
        assert!(decoder.decode(&mut input, 100).unwrap().is_none());
        let response = decoder.finish(&mut input, 100).unwrap();
        assert_eq!(&response.body[..], b"part one, part two");
    }

    #[test]
    fn malformed_responses_are_protocol_errors() {
        for wire in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let mut decoder = ResponseDecoder::default();
            let mut input = BytesMut::from(wire);
            let r = decoder.decode(&mut input, 10);
            assert!(
                matches!(r, Err(TransportError::Protocol)),
                "{:?}: {:?}",
                String::from_utf8_lossy(wire),
                r.map(|o| o.is_some())
            );
        }
        let mut endless = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        endless.extend(std::iter::repeat_n(b'x', MAX_HEAD_BYTES + 1));
        assert!(ResponseDecoder::default().decode(&mut endless, 10).is_err());
    }

    #[test]
    fn requests_carry_host_length_and_headers() {
        let url = Url::parse("http://example.com:8080/a/b?c=d").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("ce-id", HeaderValue::from_static("1"));
        let request = encode_request(&url, &headers, b"{}");
        assert_eq!(
            &request[..],
            b"POST /a/b?c=d HTTP/1.1\r\nhost: example.com:8080\r\ncontent-length: 2\r\nce-id: 1\r\n\r\n{}"
        );
        let bare = encode_request(&Url::parse("http://[::1]").unwrap(), &HeaderMap::new(), b"");
        assert!(bare.starts_with(b"POST / HTTP/1.1\r\nhost: [::1]\r\n"));
    }

    /// A server that reads `n` whole requests before answering any, then answers them in one
    /// write, each with its request's `x-n` header as the body: it only ever answers if the
    /// client pipelines.
    async fn batch_answering_server(n: usize) -> (Url, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/sink", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut input = BytesMut::new();
            let mut tags = Vec::new();
            while tags.len() < n {
                stream.read_buf(&mut input).await.unwrap();
                loop {
                    let mut slots = [httparse::EMPTY_HEADER; 16];
                    let mut request = httparse::Request::new(&mut slots);
                    let Ok(httparse::Status::Complete(len)) = request.parse(&input) else {
                        break;
                    };
                    let header = |name: &str| {
                        let h = request.headers.iter().find(|h| h.name == name).unwrap();
                        String::from_utf8(h.value.to_vec()).unwrap()
                    };
                    let body_len: usize = header("content-length").parse().unwrap();
                    if input.len() < len + body_len {
                        break;
                    }
                    tags.push(header("x-n"));
                    input.advance(len + body_len);
                }
            }
            let mut out = Vec::new();
            for tag in &tags {
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{tag}",
                        tag.len()
                    )
                    .as_bytes(),
                );
            }
            stream.write_all(&out).await.unwrap();
            stream.flush().await.unwrap();
            tags.len()
        });
        (url, server)
    }

    fn tagged(url: &Url, n: usize) -> Bytes {
        let mut headers = HeaderMap::new();
        headers.insert("x-n", HeaderValue::from(n));
        encode_request(url, &headers, b"event")
    }

    fn no_tls() -> Result<rustls::ClientConfig, String> {
        Err("no TLS in this test".into())
    }

    #[tokio::test]
    async fn requests_are_pipelined_and_answers_matched_in_order() {
        let n = 8;
        let (url, server) = batch_answering_server(n).await;
        // Room for four connections: `n` requests all go on the first, the only one the server
        // accepts.
        let pipeline = Arc::new(Pipeline::new(&url, n, 4 * n, no_tls).unwrap());
        let sends = (0..n).map(|i| {
            let pipeline = Arc::clone(&pipeline);
            let request = tagged(&url, i);
            tokio::spawn(async move { pipeline.send(request, 64).await })
        });
        let sends: Vec<_> = sends.collect();
        for (i, send) in sends.into_iter().enumerate() {
            let response = tokio::time::timeout(Duration::from_secs(10), send)
                .await
                .expect("answered: the requests were pipelined")
                .unwrap()
                .unwrap();
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(response.body, i.to_string(), "request {i}'s own answer");
        }
        assert_eq!(server.await.unwrap(), n);
    }

    #[tokio::test]
    async fn an_abandoned_request_closes_its_connection_and_fails_those_behind_it() {
        // The server never answers; the first caller gives up, the others learn at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            // Reads until the client closes.
            let _ = stream.read_to_end(&mut sink).await;
        });
        let pipeline = Arc::new(Pipeline::new(&url, 4, 4, no_tls).unwrap());
        let first = {
            let pipeline = Arc::clone(&pipeline);
            let request = tagged(&url, 0);
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(200), pipeline.send(request, 64)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let behind = {
            let pipeline = Arc::clone(&pipeline);
            let request = tagged(&url, 1);
            tokio::spawn(async move { pipeline.send(request, 64).await })
        };
        assert!(first.await.unwrap().is_err(), "the first caller timed out");
        let behind = tokio::time::timeout(Duration::from_secs(5), behind)
            .await
            .expect("not left waiting for a response that cannot come first")
            .unwrap();
        assert_eq!(behind.unwrap_err(), TransportError::Reset);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection was closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let pipeline = Pipeline::new(&url, 4, 4, no_tls).unwrap();
        let result = pipeline.send(tagged(&url, 0), 64).await;
        assert_eq!(result.unwrap_err(), TransportError::Connect);
    }
}
