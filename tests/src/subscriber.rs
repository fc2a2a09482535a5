//! A real HTTP subscriber on loopback: records every request it gets and answers as scripted.
//!
//! Each request is recorded when it arrives (method, path, headers, body, arrival
//! [`Instant`]) and again when its answer has been written ([`Request::answered`]), so tests
//! can check counts, gaps between attempts, extensions, ordering and overlap. Answers come, in
//! this order of precedence, from a queue of scripted [`Reply`]s ([`Subscriber::script`]), a
//! handler function ([`Subscriber::handle`]), or the default reply (200, empty body).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::event::Event;

/// One request the subscriber received.
#[derive(Debug)]
pub struct Request {
    /// Its position among all requests to this subscriber, from 0.
    pub seq: usize,
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// When it arrived (after its body was read).
    pub at: Instant,
    /// When its answer was handed to the connection; `None` while it is being answered.
    answered: Mutex<Option<Instant>>,
}

impl Request {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A binary-mode attribute: the `ce-{name}` header, percent-decoded.
    pub fn ce(&self, name: &str) -> Option<String> {
        let raw = self.header(&format!("ce-{name}"))?;
        Some(
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned(),
        )
    }

    /// A dead letter's `knativeerrordest`, `knativeerrorcode` and `knativeerrordata` (decoded
    /// from base64, as text), each `None` when absent.
    pub fn error_extensions(&self) -> (Option<String>, Option<String>, Option<String>) {
        use base64::Engine as _;
        let data = self.ce("knativeerrordata").map(|d| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&d)
                .unwrap_or_else(|e| panic!("knativeerrordata {d:?} is not base64: {e}"));
            String::from_utf8_lossy(&bytes).into_owned()
        });
        (
            self.ce("knativeerrordest"),
            self.ce("knativeerrorcode"),
            data,
        )
    }

    /// Asserts that this dead letter names `dest` and `code`, and that its reason
    /// (`knativeerrordata`) contains `reason`.
    pub fn assert_dead_letter(&self, dest: &str, code: &str, reason: &str) {
        let (got_dest, got_code, got_reason) = self.error_extensions();
        assert_eq!(got_dest.as_deref(), Some(dest), "knativeerrordest");
        assert_eq!(got_code.as_deref(), Some(code), "knativeerrorcode");
        let got_reason = got_reason.unwrap_or_default();
        assert!(
            got_reason.contains(reason),
            "knativeerrordata {got_reason:?} lacks {reason:?}"
        );
    }

    /// The event id: `ce-id`, or `id` of a structured-mode body.
    pub fn id(&self) -> String {
        if let Some(id) = self.ce("id") {
            return id;
        }
        self.json()
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// When the answer was written, if it has been.
    pub fn answered(&self) -> Option<Instant> {
        *self.answered.lock()
    }
}

/// How the subscriber answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
    hold: bool,
    abort: bool,
}

impl Reply {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            hold: false,
            abort: false,
        }
    }

    /// Closes the connection without answering (after any delay): a transport error for the
    /// router.
    pub fn abort() -> Reply {
        Reply {
            abort: true,
            ..Reply::ok()
        }
    }

    /// 200 with an empty body.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// The same answer with another status.
    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = StatusCode::from_u16(status).expect("a valid status");
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Retry-After`.
    pub fn retry_after(self, value: &str) -> Reply {
        self.header("retry-after", value)
    }

    /// Sets the body (and its content type).
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Waits until [`Subscriber::release`] before answering.
    pub fn held(mut self) -> Reply {
        self.hold = true;
        self
    }

    /// Answers 200 with `event` in binary mode (a reply event).
    pub fn event_binary(event: &Event) -> Reply {
        let (headers, body) = event.binary();
        let mut reply = Reply::ok();
        reply.headers = headers;
        reply.body = body;
        reply
    }

    /// Answers 200 with `event` in structured mode (a reply event).
    pub fn event_structured(event: &Event) -> Reply {
        Reply::ok().body("application/cloudevents+json", event.structured())
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    /// Whether requests are kept (see [`Subscriber::start_counting`]).
    record: bool,
    requests: Mutex<Vec<Arc<Request>>>,
    /// How many requests carried each event id.
    ids: Mutex<HashMap<String, usize>>,
    /// The next request's `seq` (taken under the `requests` lock, so in push order).
    next_seq: AtomicUsize,
    script: Mutex<VecDeque<Reply>>,
    handler: Mutex<Option<Handler>>,
    /// Requests received so far; waiters watch it.
    count: watch::Sender<usize>,
    /// Answers written so far.
    answered: watch::Sender<usize>,
    /// Requests being answered now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// Opened by [`Subscriber::release`].
    gate: watch::Sender<bool>,
}

/// An HTTP subscriber on `127.0.0.1`, on a port picked by the OS; HTTPS when started with
/// [`Subscriber::start_tls`].
pub struct Subscriber {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Subscriber {
    /// Starts a subscriber that answers 200 to everything until scripted otherwise.
    pub async fn start() -> Subscriber {
        Subscriber::start_with(true, None).await
    }

    /// Like [`Subscriber::start`], but over TLS with `cert` (for `localhost` and `127.0.0.1`):
    /// its [`Subscriber::url`]s are `https://localhost:{port}`.
    pub async fn start_tls(cert: &crate::tls::Issued) -> Subscriber {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Subscriber::start_with(true, Some(acceptor)).await
    }

    /// Like [`Subscriber::start`], but keeps only the count of requests per event id
    /// ([`Subscriber::id_counts`]), not the requests: for runs of 100,000 events.
    /// [`Subscriber::requests`] stays empty.
    pub async fn start_counting() -> Subscriber {
        Subscriber::start_with(false, None).await
    }

    async fn start_with(record: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Subscriber {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a subscriber port");
        let addr = listener.local_addr().expect("the subscriber's address");
        let state = Arc::new(State {
            record,
            requests: Mutex::new(Vec::new()),
            ids: Mutex::new(HashMap::new()),
            next_seq: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            handler: Mutex::new(None),
            count: watch::channel(0).0,
            answered: watch::channel(0).0,
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            gate: watch::channel(false).0,
        });
        let accept_state = Arc::clone(&state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&accept_state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { answer(&state, req).await }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        // A handshake the client abandons (an untrusted certificate) ends here.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Subscriber {
            addr,
            scheme,
            state,
            accept,
        }
    }

    /// `http://127.0.0.1:{port}{path}`, or `https://localhost:{port}{path}` over TLS.
    pub fn url(&self, path: &str) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}{path}", self.addr.port()),
            _ => format!("http://{}{path}", self.addr),
        }
    }

    /// Queues answers for the next requests, in order; later requests get the handler's or
    /// the default answer.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().extend(replies);
    }

    /// Answers every request that the script does not cover with `handler`.
    pub fn handle(&self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.state.handler.lock() = Some(Arc::new(handler));
    }

    /// Lets every held answer ([`Reply::held`]) go, now and from now on.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Arc<Request>> {
        self.state.requests.lock().clone()
    }

    /// The requests so far to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Arc<Request>> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many requests carried each event id so far (`ce-id`, or the structured body's
    /// `id`).
    pub fn id_counts(&self) -> HashMap<String, usize> {
        self.state.ids.lock().clone()
    }

    /// How many distinct event ids arrived so far.
    pub fn distinct_ids(&self) -> usize {
        self.state.ids.lock().len()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        *self.state.count.borrow()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state.max_active.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived and returns them all; panics after
    /// `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Arc<Request>> {
        let mut rx = self.state.count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "subscriber {}: expected at least {n} requests within {timeout:?}, got {}: {:#?}",
            self.addr,
            self.count(),
            self.summary()
        );
        self.requests()
    }

    /// Waits until at least `n` requests to `path` have arrived and returns them; panics after
    /// `timeout`.
    pub async fn wait_for_path(
        &self,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Arc<Request>> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.state.count.subscribe();
        loop {
            let got = self.requests_to(path);
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let changed = tokio::time::timeout(left, rx.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "subscriber {}: expected at least {n} requests to {path} within {timeout:?}, got {}: {:#?}",
                self.addr,
                got.len(),
                self.summary()
            );
        }
    }

    /// Waits until at least `n` answers have been written; panics after `timeout`.
    pub async fn wait_answered(&self, n: usize, timeout: Duration) {
        let mut rx = self.state.answered.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "subscriber {}: expected {n} answers within {timeout:?}, wrote {}",
            self.addr,
            *self.state.answered.borrow()
        );
    }

    /// `(path, id)` of every request so far, for failure messages.
    pub fn summary(&self) -> Vec<(String, String)> {
        self.requests()
            .iter()
            .map(|r| (r.path.clone(), r.id()))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.release();
        self.accept.abort();
    }
}

/// The answer to one request; `Err` closes the connection without one.
async fn answer(
    state: &State,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    // The router is the peer under test; its requests are small, and the test fails anyway if
    // one is not.
    #[allow(clippy::disallowed_methods)]
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = {
        let mut requests = state.requests.lock();
        let request = Arc::new(Request {
            seq: state.next_seq.fetch_add(1, Ordering::SeqCst),
            method: parts.method,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
            at: Instant::now(),
            answered: Mutex::new(None),
        });
        *state.ids.lock().entry(request.id()).or_default() += 1;
        if state.record {
            requests.push(Arc::clone(&request));
        }
        request
    };
    let active = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_active.fetch_max(active, Ordering::SeqCst);
    // Also counts down when the router gives up on the request (a timeout) and hyper drops
    // this future.
    let _active = Active(&state.active);
    state.count.send_modify(|c| *c += 1);

    let scripted = state.script.lock().pop_front();
    let reply = match scripted {
        Some(r) => r,
        None => {
            let handler = state.handler.lock().clone();
            match handler {
                Some(h) => h(&request),
                None => Reply::ok(),
            }
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.hold {
        let mut gate = state.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    if reply.abort {
        *request.answered.lock() = Some(Instant::now());
        state.answered.send_modify(|c| *c += 1);
        return Err(std::io::Error::other("scripted abort"));
    }
    let mut response = http::Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    for (name, value) in &reply.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            http::HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    *request.answered.lock() = Some(Instant::now());
    state.answered.send_modify(|c| *c += 1);
    Ok(response)
}

struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
