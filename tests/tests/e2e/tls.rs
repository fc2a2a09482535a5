//! TLS on the HTTP listeners, end to end: HTTPS ingress and admin with a certificate from
//! files, the certificate replaced on disk and picked up without a restart, client
//! certificates required or optional (mTLS), plain HTTP refused on a TLS port, and HTTPS
//! subscribers, delivered to only when their certificate verifies.
//!
//! Certificates come from a throwaway CA made with rcgen at test time.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use triggerfish_tests::tls::{self, Ca, Issued};
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger, eventually};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `Server.spec.tls` naming `issued`'s certificate and key, written into `dir` as `tls.crt` and
/// `tls.key`.
fn tls_spec(dir: &Path, issued: &Issued) -> String {
    let cert = write(dir, "tls.crt", &issued.cert_pem);
    let key = write(dir, "tls.key", &issued.key_pem);
    format!("tls: {{certFile: {cert}, keyFile: {key}}}")
}

async fn post(
    router: &Router,
    ca: &str,
    client: Option<&Issued>,
) -> Result<tls::TlsResponse, String> {
    let event = Event::new("1", "order.created").source("/shop");
    tls::request(
        router.http,
        ca,
        client,
        Method::POST,
        "/default/default",
        &[("content-type", "application/cloudevents+json")],
        event.structured(),
    )
    .await
}

#[tokio::test]
async fn https_ingress_and_admin_with_a_certificate_reloaded_from_disk() {
    let sub = Subscriber::start().await;
    let ca = Ca::new("test CA");
    let first = ca.server();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .server(&tls_spec(dir.path(), &first))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/")))
        .render();
    let router = Router::start(&config).await;

    let r = post(&router, &ca.pem(), None).await.unwrap();
    assert_eq!(r.response.code(), 202, "{}", r.response.text());
    assert_eq!(r.server_cert, first.der);
    sub.wait_for(1, PATIENCE).await;
    // The admin listener is behind TLS too (the default covers every HTTP listener).
    let health = tls::request(
        router.admin,
        &ca.pem(),
        None,
        Method::GET,
        "/healthz",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(health.response.code(), 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = router
        .client
        .try_request(
            Method::GET,
            &router.admin_url("/healthz"),
            &[],
            Bytes::new(),
        )
        .await;
    assert!(plain.is_err() || plain.unwrap().code() != 200);
    // A client that does not trust the CA fails the handshake.
    let other = Ca::new("other CA");
    assert!(post(&router, &other.pem(), None).await.is_err());

    // Rotate: new files; new connections get the new certificate, without a restart.
    let second = ca.server();
    std::fs::write(dir.path().join("tls.key.new"), &second.key_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt.new"), &second.cert_pem).unwrap();
    std::fs::rename(dir.path().join("tls.key.new"), dir.path().join("tls.key")).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), dir.path().join("tls.crt")).unwrap();
    let pem = ca.pem();
    let seen = eventually(
        "the new certificate is served",
        Duration::from_secs(30),
        async || {
            let r = post(&router, &pem, None).await.ok()?;
            (r.server_cert == second.der).then_some(r)
        },
    )
    .await;
    assert_eq!(seen.response.code(), 202);
    router.wait_log("TLS certificate reloaded", PATIENCE).await;

    // A broken pair (the new certificate with the old key) is refused; the last good one stays.
    std::fs::write(dir.path().join("tls.key"), &first.key_pem).unwrap();
    router
        .wait_log("TLS files changed but do not load", Duration::from_secs(30))
        .await;
    let r = post(&router, &ca.pem(), None).await.unwrap();
    assert_eq!(r.server_cert, second.der);
    assert_eq!(r.response.code(), 202);
}

#[tokio::test]
async fn client_certificates_required_or_optional() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let stranger = Ca::new("stranger CA");
    let server = ca.server();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "tls.crt", &server.cert_pem);
    let key = write(dir.path(), "tls.key", &server.key_pem);
    let client_ca = write(dir.path(), "clients.crt", &clients.pem());
    let good = clients.client("checkout");
    let bad = stranger.client("checkout");
    for (mode, anonymous_ok) in [("require", false), ("optional", true)] {
        let config = Config::new()
            .server(&format!(
                "tls: {{certFile: {cert}, keyFile: {key}, clientCaFile: {client_ca}, clientAuth: {mode}, listeners: [http]}}"
            ))
            .broker("default", None)
            .trigger(Trigger::new("all", "http://127.0.0.1:9/"))
            .render();
        let router = Router::start(&config).await;
        let r = post(&router, &ca.pem(), Some(&good)).await.unwrap();
        assert_eq!(r.response.code(), 202, "{mode}: {}", r.response.text());
        assert!(
            post(&router, &ca.pem(), Some(&bad)).await.is_err(),
            "{mode}: a certificate from another CA is refused"
        );
        let anonymous = post(&router, &ca.pem(), None).await;
        assert_eq!(anonymous.is_ok(), anonymous_ok, "{mode}: no certificate");
        // `listeners: [http]` leaves the admin port on plain HTTP.
        assert_eq!(
            router
                .client
                .get(&router.admin_url("/healthz"))
                .await
                .code(),
            200
        );
    }
}

#[tokio::test]
async fn bad_tls_files_fail_the_load() {
    let ca = Ca::new("CA");
    let a = ca.server();
    let b = ca.server();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "a.crt", &a.cert_pem);
    let key_b = write(dir.path(), "b.key", &b.key_pem);
    let not_pem = write(dir.path(), "junk.crt", "hello");
    let cases = [
        (
            format!("tls: {{certFile: {cert}, keyFile: {key_b}}}"),
            "do not form a usable pair",
        ),
        (
            format!("tls: {{certFile: {not_pem}, keyFile: {key_b}}}"),
            "holds no PEM certificate",
        ),
        (
            format!("tls: {{certFile: {cert}, keyFile: /nonexistent/key}}"),
            "reading /nonexistent/key",
        ),
        (
            format!("tls: {{certFile: {cert}, keyFile: {key_b}, clientCaFile: {not_pem}}}"),
            "",
        ),
    ];
    for (server, expected) in cases {
        let config = Config::new()
            .server(&server)
            .broker("default", None)
            .render();
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let out =
            triggerfish_tests::run_cli(dir.path(), &["validate", "--config", "config.yaml"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{server} loaded");
        assert!(stderr.contains("spec.tls"), "{server}: {stderr}");
        assert!(stderr.contains(expected), "{server}: {stderr}");
    }
}

/// A client that completes its handshake and then sends nothing is closed after 30 s, like a
/// silent plain-text one (hyper's header timer starts only with a request's first byte).
#[tokio::test]
async fn a_client_silent_after_its_handshake_is_closed() {
    use tokio::io::AsyncReadExt as _;
    let ca = Ca::new("test CA");
    let server = ca.server();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .server(&tls_spec(dir.path(), &server))
        .broker("default", None)
        .render();
    let router = Router::start(&config).await;
    let mut silent = tls::connect(router.http, &ca.pem(), None).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), silent.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "still open after 60 s");
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(50)).contains(&took),
        "closed after {took:?}, not after 30 s"
    );
    // Meanwhile and after, others are served.
    let r = post(&router, &ca.pem(), None).await.unwrap();
    assert_eq!(r.response.code(), 202, "{}", r.response.text());
}

/// HTTPS subscribers: delivery checks the subscriber's certificate against the trusted roots
/// (the system's, which `SSL_CERT_FILE` replaces, as rustls-native-certs reads it) and the
/// destination's `CACerts`. A router that trusts the subscriber's CA either way delivers over
/// TLS; one that does not gets a transport error on every attempt and dead-letters the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_subscribers_are_verified() {
    let ca = Ca::new("subscriber-ca");
    let sub = Subscriber::start_tls(&ca.server()).await;
    assert!(sub.url("/s").starts_with("https://localhost:"));
    let dls = Subscriber::start().await;
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("secure", &sub.url("/s")).delivery(&format!(
            "retry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
            dls.url("/dls")
        )),
    );

    // Trusting the CA.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let options = triggerfish_tests::Options {
        env: vec![("SSL_CERT_FILE".to_owned(), ca_file)],
        ..Default::default()
    };
    let router = Router::start_with(&config.render(), options).await;
    router.publish(&Event::new("tls-1", "t")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].id(), "tls-1");
    assert_eq!(got[0].path, "/s");
    drop(router);

    // Trusting it for this destination only, with Knative's `CACerts`.
    let with_ca_certs = Config::new().broker("default", None).trigger(
        Trigger::new("secure", &sub.url("/s")).subscriber(&format!(
            "uri: {}\nCACerts: {}",
            sub.url("/ca-certs"),
            serde_json::to_string(&ca.pem()).unwrap()
        )),
    );
    let router = Router::start(&with_ca_certs.render()).await;
    router.publish(&Event::new("tls-ca-certs", "t")).await;
    let got = sub.wait_for(2, PATIENCE).await;
    assert_eq!(got[1].id(), "tls-ca-certs");
    assert_eq!(got[1].path, "/ca-certs");
    drop(router);

    // Not trusting it: two attempts fail the handshake, then the dead-letter sink.
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("tls-2", "t")).await;
    let dead = dls.wait_for(1, PATIENCE).await;
    assert_eq!(dead[0].id(), "tls-2");
    assert_eq!(
        dead[0].ce("knativeerrordest").as_deref(),
        Some(sub.url("/s").as_str())
    );
    // No response to report: 500, as documented in ARCHITECTURE.md.
    assert_eq!(dead[0].ce("knativeerrorcode").as_deref(), Some("500"));
    assert_eq!(sub.count(), 2, "nothing more reached the subscriber");
    router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/secure"), ("outcome", "retryable")],
            2.0,
            PATIENCE,
        )
        .await;
}
