//! An HTTP client for the router's ingress and admin endpoints.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::event::{Event, batch};

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The status as a number.
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A new client with its own connection pool.
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build(connector),
        }
    }

    /// A client that speaks HTTP/2 with prior knowledge (h2c) only.
    pub fn http2() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
        }
    }

    /// Sends a request; `Err` when no response came (connection refused, say).
    pub async fn try_request(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Response, String> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
        for (name, value) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
                http::HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
        let resp = tokio::time::timeout(Duration::from_secs(20), self.inner.request(req))
            .await
            .map_err(|_| format!("{url}: no response within 20s"))?
            .map_err(|e| format!("{url}: {e:?}"))?;
        let (parts, body) = resp.into_parts();
        // Bodies from the router under test: small, and a test fails anyway if one is not.
        #[allow(clippy::disallowed_methods)]
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the body: {e}"))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and panics if no response comes.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Response {
        match self.try_request(method, url, headers, body).await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Response {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// `POST url` with `content_type` (if any) and `body`.
    pub async fn post(&self, url: &str, content_type: Option<&str>, body: Bytes) -> Response {
        let headers: Vec<(String, String)> = content_type
            .map(|ct| vec![("content-type".to_owned(), ct.to_owned())])
            .unwrap_or_default();
        self.request(Method::POST, url, &headers, body).await
    }

    /// Publishes `event` in binary mode.
    pub async fn send_binary(&self, url: &str, event: &Event) -> Response {
        let (headers, body) = event.binary();
        self.request(Method::POST, url, &headers, body).await
    }

    /// Publishes `event` in structured mode.
    pub async fn send_structured(&self, url: &str, event: &Event) -> Response {
        self.post(
            url,
            Some("application/cloudevents+json"),
            event.structured(),
        )
        .await
    }

    /// Publishes `events` in one batched-mode request.
    pub async fn send_batch(&self, url: &str, events: &[Event]) -> Response {
        self.send_batch_with(url, events, &[]).await
    }

    /// Publishes `events` in one batched-mode request with `headers` added (a `traceparent`,
    /// say).
    pub async fn send_batch_with(
        &self,
        url: &str,
        events: &[Event],
        headers: &[(&str, &str)],
    ) -> Response {
        let mut all = vec![(
            "content-type".to_owned(),
            "application/cloudevents-batch+json".to_owned(),
        )];
        all.extend(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.request(Method::POST, url, &all, batch(events)).await
    }
}
