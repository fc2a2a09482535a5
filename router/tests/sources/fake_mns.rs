//! A fake MNS server for the tests: one queue, spoken to over real HTTP, following Alibaba
//! Cloud's MNS API reference:
//! - "Request protocol" / "Common parameters": required `Authorization`, `Date` (GMT; a request
//!   more than 15 minutes off is refused), `x-mns-version: 2015-06-06`; `Content-MD5` checked
//!   when sent; XML bodies in the `http://mns.aliyuncs.com/doc/v1/` namespace.
//! - "Sign requests": `Authorization: MNS AccessKeyId:Signature`, the signature being
//!   base64(HMAC-SHA1(secret, the method, Content-MD5, Content-Type and Date each followed by
//!   a newline, then CanonicalizedMNSHeaders and CanonicalizedResource)). The fake computes it
//!   on its own (it shares no code with the router's signer) and refuses a mismatch with 403
//!   `SignatureDoesNotMatch`.
//! - "ReceiveMessage": `GET /queues/{name}/messages?waitseconds=N` long-polls; a message
//!   received becomes invisible for the queue's visibility timeout and gets a new receipt
//!   handle; `404 MessageNotExist` when none arrives in time.
//! - "DeleteMessage": `DELETE /queues/{name}/messages?ReceiptHandle=...`, 204; a handle that
//!   is stale (its message became visible again or was received anew) gives 404
//!   `MessageNotExist`, a malformed one 400 `ReceiptHandleError`.
//! - "Error responses": `<Error><Code/><Message/><RequestId/><HostId/></Error>`.
//! - "Verify the signature of a push request to an HTTP endpoint": the fake also plays the
//!   topic pushing to an endpoint: it signs with RSA-SHA1 (a test key), sends
//!   `x-mns-signing-cert-url` as the base64 URL of its own `/x509_public_certificate.pem`,
//!   and counts how often the certificate is fetched.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use md5::{Digest as _, Md5};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::Sha1;
use tokio_util::sync::CancellationToken;
use triggerfish_router::body::read_limited;
use triggerfish_router::http_server::{ConnectionLimit, response, serve};
use triggerfish_router::metrics::Metrics;

pub const ACCESS_KEY_ID: &str = "LTAI5tFakeAccessKeyId";
pub const ACCESS_KEY_SECRET: &str = "fake-access-key-secret-0123456789";

struct Stored {
    id: String,
    body: String,
    enqueued_ms: u128,
    visible_at: Instant,
    dequeue_count: u32,
    handle: Option<String>,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Stored>,
    next_id: u64,
    deleted: Vec<String>,
    refused: Vec<String>,
    /// Deletes still to fail with 500 `InternalError` (to test redelivery).
    failing_deletes: usize,
}

pub struct FakeMns {
    pub addr: SocketAddr,
    pub queue: String,
    state: Arc<parking_lot::Mutex<Queue>>,
    cert_fetches: Arc<AtomicUsize>,
    stop: CancellationToken,
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/mns/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mns_error(status: StatusCode, code: &str, message: &str) -> http::Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error xmlns=\"http://mns.aliyuncs.com/doc/v1/\">\n  <Code>{code}</Code>\n  <Message>{}</Message>\n  <RequestId>5F1B2C3D4E5F60718293A4B5</RequestId>\n  <HostId>http://fake.mns.cn-hangzhou.aliyuncs.com</HostId>\n</Error>",
        xml_escape(message)
    );
    let mut r = response(status, "text/xml;charset=utf-8", body);
    r.headers_mut().insert(
        "x-mns-version",
        http::HeaderValue::from_static("2015-06-06"),
    );
    r
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

impl FakeMns {
    /// Starts the fake with one queue whose visibility timeout is `visibility`.
    pub async fn start(queue: &str, visibility: Duration) -> FakeMns {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(parking_lot::Mutex::new(Queue::default()));
        let cert_fetches = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (s, f, q) = (
            Arc::clone(&state),
            Arc::clone(&cert_fetches),
            queue.to_owned(),
        );
        tokio::spawn(serve(
            listener,
            None,
            ConnectionLimit::new(64, "ingress", &Metrics::new()),
            move |req: http::Request<hyper::body::Incoming>| {
                let (s, f, q) = (Arc::clone(&s), Arc::clone(&f), q.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = read_limited(&parts.headers, body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    handle(&s, &f, &q, visibility, &parts, &body).await
                }
            },
            stop.clone(),
            Duration::from_millis(100),
        ));
        FakeMns {
            addr,
            queue: queue.to_owned(),
            state,
            cert_fetches,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends a message to the queue (what OSS does when an object changes).
    pub fn send(&self, body: &str) -> String {
        let mut q = self.state.lock();
        q.next_id += 1;
        let id = format!("5F290C926D472878-1-{:X}-2000000{:02}", now_ms(), q.next_id);
        q.messages.push_back(Stored {
            id: id.clone(),
            body: body.to_owned(),
            enqueued_ms: now_ms(),
            visible_at: Instant::now(),
            dequeue_count: 0,
            handle: None,
        });
        id
    }

    /// Makes the next `n` DeleteMessage requests fail with 500 `InternalError`.
    pub fn fail_deletes(&self, n: usize) {
        self.state.lock().failing_deletes = n;
    }

    /// Message ids deleted, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.state.lock().deleted.clone()
    }

    /// Messages still in the queue.
    pub fn len(&self) -> usize {
        self.state.lock().messages.len()
    }

    /// Error codes of the requests the fake refused.
    pub fn refused(&self) -> Vec<String> {
        self.state.lock().refused.clone()
    }

    pub fn cert_fetches(&self) -> usize {
        self.cert_fetches.load(Ordering::SeqCst)
    }

    /// `http://<fake>/x509_public_certificate.pem`.
    pub fn cert_url(&self) -> String {
        format!("http://{}/x509_public_certificate.pem", self.addr)
    }

    /// A push request as MNS sends it to an HTTP endpoint (XML format), signed with `key`
    /// (`signing-key.pem` unless told otherwise), dated `date`.
    pub fn push_request(
        &self,
        endpoint: &str,
        message: &str,
        key: &str,
        date: SystemTime,
    ) -> (Vec<(String, String)>, String) {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Notification xmlns=\"http://mns.aliyuncs.com/doc/v1/\">\n  <TopicOwner>1692545896541241</TopicOwner>\n  <TopicName>oss-events</TopicName>\n  <Subscriber>1692545896541241</Subscriber>\n  <SubscriptionName>triggerfish</SubscriptionName>\n  <MessageId>C39FB8C345BBFBA8-1-1687F6FAADD-200000015</MessageId>\n  <MessageMD5>{}</MessageMD5>\n  <Message>{}</Message>\n  <PublishTime>{}</PublishTime>\n</Notification>",
            Md5::digest(message.as_bytes())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>(),
            xml_escape(message),
            now_ms()
        );
        let url = url::Url::parse(endpoint).unwrap();
        let resource = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let content_md5 = BASE64.encode(Md5::digest(body.as_bytes()));
        let content_type = "text/xml;charset=utf-8";
        let date = httpdate::fmt_http_date(date);
        let mut headers = vec![
            ("content-md5".to_owned(), content_md5.clone()),
            ("content-type".to_owned(), content_type.to_owned()),
            ("date".to_owned(), date.clone()),
            (
                "x-mns-request-id".to_owned(),
                "5F1B2C3D4E5F60718293A4B6".to_owned(),
            ),
            ("x-mns-version".to_owned(), "2015-06-06".to_owned()),
            (
                "x-mns-signing-cert-url".to_owned(),
                BASE64.encode(self.cert_url()),
            ),
            (
                "x-mns-message-id".to_owned(),
                "C39FB8C345BBFBA8-1-1687F6FAADD-200000015".to_owned(),
            ),
            ("x-mns-message-tag".to_owned(), "".to_owned()),
        ];
        // The string-to-sign of Alibaba's HTTP-endpoint sample: method, Content-MD5,
        // Content-Type, Date, the sorted x-mns-* headers, the resource.
        let mut mns: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-mns-"))
            .map(|(n, v)| format!("{n}:{v}"))
            .collect();
        mns.sort();
        let to_sign = format!(
            "POST\n{content_md5}\n{content_type}\n{date}\n{}\n{resource}",
            mns.join("\n")
        );
        let key =
            RsaPrivateKey::from_pkcs8_pem(std::str::from_utf8(&fixture(key)).unwrap()).unwrap();
        let signature = key
            .sign(
                Pkcs1v15Sign::new::<Sha1>(),
                &Sha1::digest(to_sign.as_bytes()),
            )
            .unwrap();
        headers.push(("authorization".to_owned(), BASE64.encode(signature)));
        (headers, body)
    }
}

impl Drop for FakeMns {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The signature the fake expects, computed independently of the router's signer.
fn expected_signature(parts: &http::request::Parts) -> String {
    let mut mns: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .filter(|(n, _)| n.starts_with("x-mns-"))
        .collect();
    mns.sort();
    let canonical_headers: String = mns.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let resource = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let to_sign = format!(
        "{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
        parts.method,
        header(&parts.headers, "content-md5"),
        header(&parts.headers, "content-type"),
        header(&parts.headers, "date"),
    );
    let mut mac = Hmac::<Sha1>::new_from_slice(ACCESS_KEY_SECRET.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

async fn handle(
    state: &parking_lot::Mutex<Queue>,
    cert_fetches: &AtomicUsize,
    queue: &str,
    visibility: Duration,
    parts: &http::request::Parts,
    body: &[u8],
) -> http::Response<Full<Bytes>> {
    let refuse = |status, code: &str, message: &str| {
        state.lock().refused.push(code.to_owned());
        mns_error(status, code, message)
    };
    if parts.uri.path() == "/x509_public_certificate.pem" {
        cert_fetches.fetch_add(1, Ordering::SeqCst);
        return response(
            StatusCode::OK,
            "application/x-pem-file",
            fixture("signing-cert.pem"),
        );
    }
    // Common headers.
    if header(&parts.headers, "x-mns-version") != "2015-06-06" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-mns-version must be 2015-06-06",
        );
    }
    let Ok(date) = httpdate::parse_http_date(header(&parts.headers, "date")) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "the Date header is missing or invalid",
        );
    };
    let skew = match SystemTime::now().duration_since(date) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > Duration::from_secs(15 * 60) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "TimeExpired",
            "The http request you sent is expired.",
        );
    }
    let md5 = header(&parts.headers, "content-md5");
    if !md5.is_empty() && md5 != BASE64.encode(Md5::digest(body)) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidDigest",
            "Content-MD5 does not match the body",
        );
    }
    let authorization = header(&parts.headers, "authorization");
    let Some((id, signature)) = authorization
        .strip_prefix("MNS ")
        .and_then(|a| a.split_once(':'))
    else {
        return refuse(
            StatusCode::FORBIDDEN,
            "InvalidAuthorizationHeader",
            "expected MNS AccessKeyId:Signature",
        );
    };
    if id != ACCESS_KEY_ID {
        return refuse(StatusCode::FORBIDDEN, "AccessDenied", "unknown AccessKeyId");
    }
    if signature != expected_signature(parts) {
        return refuse(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    // Routing.
    if parts.uri.path() != format!("/queues/{queue}/messages") {
        return refuse(
            StatusCode::NOT_FOUND,
            "QueueNotExist",
            "The queue name you provided is not exist.",
        );
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match parts.method.as_str() {
        "GET" => {
            let wait = param("waitseconds")
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0);
            if wait > 30 {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "waitseconds is 0 to 30",
                );
            }
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                if let Some(xml) = receive(state, visibility) {
                    return response(StatusCode::OK, "text/xml;charset=utf-8", xml);
                }
                if Instant::now() >= deadline {
                    return mns_error(
                        StatusCode::NOT_FOUND,
                        "MessageNotExist",
                        "Message not exist.",
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        "DELETE" => {
            let Some(handle) = param("ReceiptHandle") else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "ReceiptHandleError",
                    "ReceiptHandle is missing",
                );
            };
            if !handle.starts_with("1-") {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "ReceiptHandleError",
                    "The receipt handle you provided is not valid.",
                );
            }
            let mut q = state.lock();
            if q.failing_deletes > 0 {
                q.failing_deletes -= 1;
                drop(q);
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "injected failure",
                );
            }
            let now = Instant::now();
            let found = q
                .messages
                .iter()
                .position(|m| m.handle.as_deref() == Some(handle.as_str()) && m.visible_at > now);
            match found {
                Some(i) => {
                    let m = q.messages.remove(i).unwrap();
                    q.deleted.push(m.id);
                    let mut r = response(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
                    r.headers_mut().remove(http::header::CONTENT_TYPE);
                    r
                }
                None => {
                    drop(q);
                    refuse(
                        StatusCode::NOT_FOUND,
                        "MessageNotExist",
                        "Message not exist.",
                    )
                }
            }
        }
        _ => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidArgument",
            "unsupported method",
        ),
    }
}

/// Receives the first visible message: it becomes invisible for `visibility`, with a new
/// receipt handle.
fn receive(state: &parking_lot::Mutex<Queue>, visibility: Duration) -> Option<String> {
    let mut q = state.lock();
    let now = Instant::now();
    let m = q.messages.iter_mut().find(|m| m.visible_at <= now)?;
    m.dequeue_count += 1;
    m.visible_at = now + visibility;
    let handle = format!(
        "1-{}",
        BASE64.encode(format!("{}-{}-{}", m.id, m.dequeue_count, now_ms()))
    );
    m.handle = Some(handle.clone());
    let md5: String = Md5::digest(m.body.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Message xmlns=\"http://mns.aliyuncs.com/doc/v1/\">\n  <MessageId>{}</MessageId>\n  <ReceiptHandle>{handle}</ReceiptHandle>\n  <MessageBodyMD5>{md5}</MessageBodyMD5>\n  <MessageBody>{}</MessageBody>\n  <EnqueueTime>{}</EnqueueTime>\n  <NextVisibleTime>{}</NextVisibleTime>\n  <FirstDequeueTime>{}</FirstDequeueTime>\n  <DequeueCount>{}</DequeueCount>\n  <Priority>8</Priority>\n</Message>",
        m.id,
        xml_escape(&m.body),
        m.enqueued_ms,
        now_ms() + visibility.as_millis(),
        m.enqueued_ms,
        m.dequeue_count
    ))
}
