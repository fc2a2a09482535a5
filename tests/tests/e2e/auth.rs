//! Sender authentication, event policies, rate limits and outbound identity, end to end:
//! the real binary with static tokens (from a file and from the environment), JWTs verified
//! against a JWKS file and a JWKS served over HTTP (with a key rotation), `EventPolicy`
//! resources, token buckets, and subscribers that check the router's own token.
//!
//! QUIC ingress goes through the same checks (the frame's credential), and QUIC subscribers
//! present the router's token in their frames.
//!
//! Keys are generated per test (EC P-256 through rcgen); tokens are signed with
//! `jsonwebtoken`, as an OIDC issuer would.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use triggerfish_tests::quic::{Answer, QuicClient};
use triggerfish_tests::{
    Config, Event, Options, PATIENCE, Reply, Response, Router, Subscriber, Trigger, event,
};

const ISSUER: &str = "https://issuer.test";
const SA: &str = "system:serviceaccount:default:checkout";

/// A signing key of the test issuer.
struct Signer {
    pem: String,
    key: EncodingKey,
    kid: String,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = pair.serialize_pem();
        Signer {
            key: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            pem,
            kid: kid.to_owned(),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A token with the given claims, signed with this key and its kid.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn jwks(signers: &[&Signer]) -> String {
    serde_json::to_string(&JwkSet {
        keys: signers.iter().map(|s| s.jwk()).collect(),
    })
    .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for broker `default/default`, `exp` and `nbf` shifted by `exp_in` and
/// `nbf_in` seconds from now.
fn claims(sub: &str, exp_in: i64, nbf_in: i64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": "eventing.knative.dev/broker/default/default",
        "sub": sub,
        "iat": now(),
        "nbf": now() + nbf_in,
        "exp": now() + exp_in,
    })
}

fn event(id: &str) -> Event {
    Event::new(id, "order.created").source("/shop")
}

async fn post(router: &Router, broker: &str, auth: Option<&str>, events: &[Event]) -> Response {
    let mut headers = vec![(
        "content-type".to_owned(),
        "application/cloudevents-batch+json".to_owned(),
    )];
    if let Some(a) = auth {
        headers.push(("authorization".to_owned(), a.to_owned()));
    }
    router
        .client
        .request(
            Method::POST,
            &router.broker_url(broker),
            &headers,
            event::batch(events),
        )
        .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A 401 with the given short code, a challenge, and nothing else.
fn assert_unauthorized(r: &Response, code: &str) {
    assert_eq!(r.code(), 401, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"triggerfish\""),
        "{challenge}"
    );
    // The body says no more than the code.
    assert_eq!(r.json().as_object().unwrap().len(), 1, "{}", r.text());
}

#[tokio::test]
async fn static_tokens_from_a_file_and_the_environment() {
    let sub = Subscriber::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("checkout.token");
    std::fs::write(&token_file, "s3cr3t-checkout\n").unwrap();
    let config = Config::new()
        .server(&format!(
            "auth:\n  tokens:\n    - {{identity: \"{SA}\", tokenFile: {}}}\n    - {{identity: billing, tokenEnv: BILLING_TOKEN}}",
            token_file.display()
        ))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/")))
        .render();
    let router = Router::start_with(
        &config,
        Options {
            env: vec![("BILLING_TOKEN".into(), "s3cr3t-billing".into())],
            ..Options::default()
        },
    )
    .await;

    assert_unauthorized(
        &post(&router, "default", None, &[event("1")]).await,
        "missing_token",
    );
    assert_unauthorized(
        &post(&router, "default", Some("Basic czNjcjN0"), &[event("1")]).await,
        "invalid_request",
    );
    let wrong = post(
        &router,
        "default",
        Some("Bearer s3cr3t-checkouX"),
        &[event("1")],
    )
    .await;
    assert_unauthorized(&wrong, "invalid_token");
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    let ok = post(
        &router,
        "default",
        Some("Bearer s3cr3t-checkout"),
        &[event("a")],
    )
    .await;
    assert_eq!(ok.code(), 202, "{}", ok.text());
    let ok = post(
        &router,
        "default",
        Some("bearer s3cr3t-billing"),
        &[event("b")],
    )
    .await;
    assert_eq!(ok.code(), 202, "{}", ok.text());
    sub.wait_for(2, PATIENCE).await;

    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", "unauthorized")]
        ),
        3
    );
    let logs = router.stderr();
    assert!(
        !logs.contains("s3cr3t"),
        "a secret reached the logs:\n{logs}"
    );
}

#[tokio::test]
async fn jwts_are_checked_for_signature_issuer_audience_and_time() {
    let sub = Subscriber::start().await;
    let issuer = Signer::new("k1");
    let forger = Signer::new("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&issuer])).unwrap();
    let config = Config::new()
        .server(&format!(
            "auth:\n  oidc: {{issuer: \"{ISSUER}\", jwksFile: {}, leeway: PT30S}}",
            jwks_file.display()
        ))
        .broker("default", None)
        .broker("other", None)
        .trigger(Trigger::new("all", &sub.url("/")))
        .render();
    let router = Router::start(&config).await;
    let send =
        async |token: &str| post(&router, "default", Some(&bearer(token)), &[event("e")]).await;

    let good = issuer.sign(&claims(SA, 300, 0));
    assert_eq!(send(&good).await.code(), 202);
    // Within the leeway on either side.
    assert_eq!(send(&issuer.sign(&claims(SA, -10, 0))).await.code(), 202);
    assert_eq!(send(&issuer.sign(&claims(SA, 300, 10))).await.code(), 202);

    let mut wrong_aud = claims(SA, 300, 0);
    wrong_aud["aud"] = json!("eventing.knative.dev/broker/default/other");
    let mut wrong_iss = claims(SA, 300, 0);
    wrong_iss["iss"] = json!("https://evil.test");
    let mut no_sub = claims(SA, 300, 0);
    no_sub.as_object_mut().unwrap().remove("sub");
    let rejected = [
        ("forged", forger.sign(&claims(SA, 300, 0))),
        ("expired", issuer.sign(&claims(SA, -120, -600))),
        ("not yet valid", issuer.sign(&claims(SA, 600, 120))),
        ("wrong audience", issuer.sign(&wrong_aud)),
        ("wrong issuer", issuer.sign(&wrong_iss)),
        ("no subject", issuer.sign(&no_sub)),
        ("unsigned", unsigned(&claims(SA, 300, 0))),
        (
            "hmac with the public key",
            hmac_with(&issuer, &claims(SA, 300, 0)),
        ),
        ("garbage", "not.a.jwt".to_owned()),
        ("tampered", tamper(&good)),
    ];
    for (what, token) in &rejected {
        let r = send(token).await;
        assert_eq!(r.code(), 401, "{what}: {}", r.text());
        assert_unauthorized(&r, "invalid_token");
    }
    // A token for broker default/default is not valid for default/other.
    let r = post(&router, "other", Some(&bearer(&good)), &[event("x")]).await;
    assert_unauthorized(&r, "invalid_token");
    sub.wait_for(3, PATIENCE).await;
    assert_eq!(sub.count(), 3);
}

/// `alg: none`.
fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        b64.encode(claims.to_string())
    )
}

/// HS256 keyed with the issuer's public key: the classic algorithm-confusion attack.
fn hmac_with(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signer.kid.clone());
    let public = serde_json::to_vec(&signer.jwk()).unwrap();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&public).unwrap()).unwrap()
}

/// The same token with its `sub` changed and the signature kept.
fn tamper(token: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("system:serviceaccount:default:admin");
    format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn jwks_fetched_over_http_and_a_rotated_key_is_picked_up() {
    let sub = Subscriber::start().await;
    let old = Signer::new("2026-old");
    let new = Signer::new("2026-new");
    let issuer = Subscriber::start().await;
    let served = std::sync::Arc::new(parking_lot::Mutex::new(jwks(&[&old])));
    let s = std::sync::Arc::clone(&served);
    issuer.handle(move |_| Reply::ok().body("application/json", s.lock().clone()));
    let config = Config::new()
        .server(&format!(
            "auth:\n  oidc: {{issuer: \"{ISSUER}\", jwksUrl: \"{}\", refresh: PT1H}}",
            issuer.url("/keys")
        ))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/")))
        .render();
    let router = Router::start(&config).await;
    let token = old.sign(&claims(SA, 300, 0));
    let r = triggerfish_tests::eventually("the JWKS is fetched", PATIENCE, async || {
        let r = post(&router, "default", Some(&bearer(&token)), &[event("1")]).await;
        (r.code() == 202).then_some(r)
    })
    .await;
    assert_eq!(r.code(), 202);

    // The issuer rotates: a token with the new kid makes the router refresh at once.
    *served.lock() = jwks(&[&old, &new]);
    let r = post(
        &router,
        "default",
        Some(&bearer(&new.sign(&claims(SA, 300, 0)))),
        &[event("2")],
    )
    .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(2, PATIENCE).await;
    let fetches = issuer.count();
    // Unknown kids do not make the router hammer the issuer.
    let stranger = Signer::new("unknown");
    for _ in 0..5 {
        let r = post(
            &router,
            "default",
            Some(&bearer(&stranger.sign(&claims(SA, 300, 0)))),
            &[event("3")],
        )
        .await;
        assert_unauthorized(&r, "invalid_token");
    }
    assert!(
        issuer.count() <= fetches + 1,
        "{} fetches after {fetches}",
        issuer.count()
    );
}

/// Static tokens for three senders.
fn senders_config(dir: &std::path::Path, default: &str, policies: &[&str]) -> String {
    let mut tokens = String::new();
    for (identity, token) in [
        (SA, "tok-checkout"),
        ("system:serviceaccount:default:billing", "tok-billing"),
        ("system:serviceaccount:elsewhere:spy", "tok-spy"),
    ] {
        let path = dir.join(token);
        std::fs::write(&path, token).unwrap();
        tokens.push_str(&format!(
            "    - {{identity: \"{identity}\", tokenFile: {}}}\n",
            path.display()
        ));
    }
    let mut config = Config::new()
        .server(&format!("auth:\n  defaultPolicy: {default}\n  tokens:\n{tokens}"))
        .raw("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: default, labels: {tier: gold}}\n")
        .broker("plain", None)
        .trigger(Trigger::new("all", "http://127.0.0.1:9/"));
    for p in policies {
        config = config.raw(p);
    }
    config.render()
}

#[tokio::test]
async fn default_policies_without_event_policies() {
    let dir = tempfile::tempdir().unwrap();
    for (default, checkout, spy) in [
        ("allow-all", 202, 202),
        ("allow-same-namespace", 202, 403),
        ("deny-all", 403, 403),
    ] {
        let router = Router::start(&senders_config(dir.path(), default, &[])).await;
        let r = post(
            &router,
            "default",
            Some("Bearer tok-checkout"),
            &[event("1")],
        )
        .await;
        assert_eq!(
            r.code(),
            checkout,
            "{default}, same namespace: {}",
            r.text()
        );
        let r = post(&router, "default", Some("Bearer tok-spy"), &[event("1")]).await;
        assert_eq!(r.code(), spy, "{default}, other namespace: {}", r.text());
        if spy == 403 {
            assert_eq!(r.json()["error"], "forbidden");
        }
    }
}

#[tokio::test]
async fn event_policies_with_wildcards_filters_and_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let orders = "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: orders, namespace: default}\n\
        spec:\n  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}]\n  from: [{sub: \"system:serviceaccount:default:*\"}]\n  filters: [{prefix: {type: order.}}]\n";
    let gold = "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: gold, namespace: default}\n\
        spec:\n  to: [{selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {tier: gold}}}]\n  from: [{sub: \"system:serviceaccount:elsewhere:spy\"}]\n  filters: [{exact: {type: audit.read}}]\n";
    let router = Router::start(&senders_config(dir.path(), "allow-all", &[orders, gold])).await;

    // Wildcard sender, filter on type.
    let r = post(
        &router,
        "default",
        Some("Bearer tok-billing"),
        &[event("1")],
    )
    .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    // One event of the batch is not allowed: the batch is refused, naming it.
    let batch = [
        event("1"),
        Event::new("2", "payment.made").source("/shop"),
        event("3"),
    ];
    let r = post(&router, "default", Some("Bearer tok-checkout"), &batch).await;
    assert_eq!(r.code(), 403, "{}", r.text());
    assert_eq!(
        r.json()["events"],
        json!([{"index": 1, "error": "not allowed by any EventPolicy"}])
    );
    // The other namespace's sender only through the label-selected policy, only its type.
    let r = post(&router, "default", Some("Bearer tok-spy"), &[event("1")]).await;
    assert_eq!(r.code(), 403, "{}", r.text());
    let r = post(
        &router,
        "default",
        Some("Bearer tok-spy"),
        &[Event::new("4", "audit.read").source("/a")],
    )
    .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    // A broker no policy targets keeps the default (allow-all).
    let r = post(
        &router,
        "plain",
        Some("Bearer tok-spy"),
        &[Event::new("5", "x").source("/a")],
    )
    .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", "forbidden")]
        ),
        2
    );
}

#[tokio::test]
async fn rate_limits_per_sender_and_per_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = senders_config(dir.path(), "allow-all", &[]);
    config = config.replacen(
        "  auth:\n",
        "  auth:\n    rateLimits:\n      perSender: {eventsPerSecond: 1, burst: 5}\n      perBroker: {eventsPerSecond: 1, burst: 8}\n",
        1,
    );
    let router = Router::start(&config).await;
    let five: Vec<Event> = (0..5).map(|i| event(&i.to_string())).collect();
    assert_eq!(
        post(&router, "default", Some("Bearer tok-checkout"), &five)
            .await
            .code(),
        202
    );
    // The sender's bucket is empty.
    let r = post(&router, "default", Some("Bearer tok-checkout"), &five[..2]).await;
    assert_eq!(r.code(), 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(r.text().contains("sender"), "{}", r.text());
    // Another sender has its own bucket, but the broker's holds 8: 5 + 3 fit, 4 do not.
    let r = post(&router, "default", Some("Bearer tok-billing"), &five[..4]).await;
    assert_eq!(r.code(), 429, "{}", r.text());
    assert!(r.text().contains("broker"), "{}", r.text());
    // A batch larger than the burst can never fit: the answer says so.
    let six: Vec<Event> = (0..6).map(|i| event(&i.to_string())).collect();
    let r = post(&router, "plain", Some("Bearer tok-spy"), &six).await;
    assert_eq!(r.code(), 429, "{}", r.text());
    assert!(r.text().contains("smaller batches"), "{}", r.text());
}

#[tokio::test]
async fn subscribers_receive_static_and_minted_tokens() {
    let sub = Subscriber::start().await;
    let router_key = Signer::new("router-1");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("router.pem");
    std::fs::write(&key_file, &router_key.pem).unwrap();
    let token_file = dir.path().join("sub.token");
    std::fs::write(&token_file, "static-for-subscriber").unwrap();
    let config = Config::new()
        .server(&format!(
            "auth:\n  outbound: {{issuer: \"https://triggerfish.test\", signingKeyFile: {}, keyId: router-1}}",
            key_file.display()
        ))
        .broker("default", None)
        .trigger(Trigger::new("minted", "x").subscriber(&format!(
            "uri: {}\naudience: \"https://sub.test\"",
            sub.url("/minted")
        )))
        .trigger(Trigger::new("static", "x").subscriber(&format!(
            "uri: {}\ntoken: {{file: {}}}",
            sub.url("/static"),
            token_file.display()
        )))
        .trigger(Trigger::new("none", &sub.url("/none")))
        .render();
    let router = Router::start(&config).await;
    router.publish(&event("1")).await;
    router.publish(&event("2")).await;
    let minted = sub.wait_for_path("/minted", 2, PATIENCE).await;
    let stat = sub.wait_for_path("/static", 2, PATIENCE).await;
    let none = sub.wait_for_path("/none", 2, PATIENCE).await;
    assert_eq!(
        stat[0].header("authorization"),
        Some("Bearer static-for-subscriber")
    );
    assert_eq!(none[0].header("authorization"), None);

    // The subscriber verifies the minted token with the router's public key.
    let token = minted[0]
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("router-1"));
    assert_eq!(header.alg, Algorithm::ES256);
    let key = jsonwebtoken::DecodingKey::from_jwk(&router_key.jwk()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&["https://sub.test"]);
    validation.set_issuer(&["https://triggerfish.test"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap();
    assert_eq!(
        data.claims["sub"],
        "system:serviceaccount:triggerfish:router"
    );
    // Cached: the second delivery reuses the token.
    assert_eq!(
        minted[0].header("authorization"),
        minted[1].header("authorization")
    );
    assert!(!router.stderr().contains(token));
}

#[tokio::test]
async fn a_trigger_rate_limit_smooths_a_burst() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("slow", &sub.url("/")).spec("rateLimit: {eventsPerSecond: 10, burst: 1}"),
        )
        .render();
    let router = Router::start(&config).await;
    let events: Vec<Event> = (0..8).map(|i| event(&i.to_string())).collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202);
    let got = sub.wait_for(8, PATIENCE).await;
    // 8 events at 10/s with a burst of 1: at least 7 intervals of 100 ms.
    let span = got[7].at - got[0].at;
    assert!(
        span >= Duration::from_millis(690),
        "8 deliveries within {span:?}"
    );
}

#[tokio::test]
async fn bad_auth_configs_fail_to_load_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "auth:\n  tokens: [{identity: a, tokenFile: /nonexistent/token}]".to_owned(),
            "reading /nonexistent/token",
        ),
        (
            "auth:\n  tokens: [{identity: a, tokenEnv: TF_TEST_UNSET_VARIABLE}]".to_owned(),
            "TF_TEST_UNSET_VARIABLE is not set",
        ),
        (
            "auth:\n  oidc: {issuer: x}".to_owned(),
            "exactly one of jwksFile and jwksUrl",
        ),
        (
            format!(
                "auth:\n  oidc: {{issuer: x, jwksFile: {}}}",
                dir.path().join("nope.json").display()
            ),
            "nope.json",
        ),
        (
            format!(
                "auth:\n  outbound: {{issuer: x, signingKeyFile: {}}}",
                dir.path().join("nokey.pem").display()
            ),
            "nokey.pem",
        ),
    ];
    for (server, expected) in cases {
        let config = Config::new()
            .server(&server)
            .broker("default", None)
            .render();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let out =
            triggerfish_tests::run_cli(dir.path(), &["validate", "--config", "config.yaml"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{server} loaded");
        assert!(stderr.contains(expected), "{server}: {stderr}");
        assert!(stderr.contains("spec.auth"), "{server}: {stderr}");
    }
    // An audience without an outbound identity.
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("t", "x").subscriber("uri: http://127.0.0.1:9/\naudience: a"))
        .render();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let out =
        triggerfish_tests::run_cli(dir.path(), &["validate", "--config", "config.yaml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Server.spec.auth.outbound"));
}

/// The ack's status and message; panics on a reset or a lost stream.
fn ack(answer: Answer) -> (u16, String) {
    let a = answer.ack();
    (a.status, a.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_ingress_applies_the_same_credentials_policies_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let orders = "apiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: orders, namespace: default}\n\
        spec:\n  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}]\n  from: [{sub: \"system:serviceaccount:default:*\"}]\n  filters: [{prefix: {type: order.}}]\n";
    let config = senders_config(dir.path(), "deny-all", &[orders]).replace(
        "  auth:\n",
        "  auth:\n    rateLimits:\n      perSender: {eventsPerSecond: 1, burst: 3}\n",
    );
    let router = Router::start(&config).await;
    let client = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let target = "default/default";

    // No credential, a wrong one, one that is not a bearer token: 401 with the short code.
    let (status, message) = ack(client.publish(target, &[event("1")]).await);
    assert_eq!((status, message.as_str()), (401, "missing_token"));
    let (status, message) = ack(client
        .publish_with_credential(target, "Bearer tok-nope", &[event("1")])
        .await);
    assert_eq!((status, message.as_str()), (401, "invalid_token"));
    let (status, message) = ack(client
        .publish_with_credential(target, "Basic dG9r", &[event("1")])
        .await);
    assert_eq!((status, message.as_str()), (401, "invalid_request"));
    // A sender the policy covers, with a type it allows.
    let (status, message) = ack(client
        .publish_with_credential(target, "Bearer tok-checkout", &[event("a")])
        .await);
    assert_eq!(status, 202, "{message}");
    // The policy refuses another type: the whole frame, as over HTTP.
    let mixed = [event("b"), Event::new("c", "payment.made").source("/shop")];
    let (status, message) = ack(client
        .publish_with_credential(target, "Bearer tok-checkout", &mixed)
        .await);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("1 of 2 events"), "{message}");
    // Another namespace's sender: deny-all applies to the broker through the policy.
    let (status, _) = ack(client
        .publish_with_credential(target, "Bearer tok-spy", &[event("d")])
        .await);
    assert_eq!(status, 403);
    // The sender's bucket holds 3: a frame of 4 can never pass; it is refused with a
    // retry-after, nothing queued.
    let four = [event("e"), event("f"), event("g"), event("h")];
    let a = client
        .publish_with_credential(target, "Bearer tok-checkout", &four)
        .await
        .ack();
    assert_eq!(a.status, 429, "{}", a.message);
    assert!(a.retry_after_ms >= 1000, "{a:?}");
    client.close().await;

    let m = router.metrics().await;
    for (outcome, n) in [("unauthorized", 3), ("forbidden", 2), ("rate_limited", 1)] {
        assert_eq!(
            m.count(
                "triggerfish_ingress_requests_total",
                &[("outcome", outcome)]
            ),
            n,
            "{outcome}"
        );
    }
    assert!(!router.stderr().contains("tok-checkout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_subscribers_and_triggerfish_send_present_tokens() {
    // B requires a token over QUIC; A forwards to B over QUIC with a static token.
    let sub = Subscriber::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("a-to-b.token");
    std::fs::write(&token_file, "router-a-secret\n").unwrap();
    let b_config = Config::new()
        .server(&format!(
            "auth:\n  tokens:\n    - {{identity: router-a, tokenFile: {}}}",
            token_file.display()
        ))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/s")))
        .render();
    let b = Router::start(&b_config).await;
    let a_config = Config::new()
        .server(&format!(
            "quic:\n  client: {{caFile: {}}}",
            b.quic_cert().display()
        ))
        .broker("default", None)
        .trigger(Trigger::new("forward", "x").subscriber(&format!(
            "uri: {}\ntoken: {{file: {}}}",
            b.quic_url("default"),
            token_file.display()
        )))
        .render();
    let a = Router::start(&a_config).await;
    a.publish(&event("via-a")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].id(), "via-a");

    // `triggerfish send` over QUIC: refused without the token, accepted with it.
    let quic_url = b.quic_url("default");
    let ca = b.quic_cert().display().to_string();
    let base = vec![
        "send".to_owned(),
        "--json".to_owned(),
        "--quiet".to_owned(),
        "--to".to_owned(),
        quic_url,
        "--ca-file".to_owned(),
        ca,
        "--type".to_owned(),
        "order.created".to_owned(),
    ];
    let run = |extra: Vec<String>| {
        let dir = dir.path().to_owned();
        let mut args = base.clone();
        args.extend(extra);
        tokio::task::spawn_blocking(move || {
            let all: Vec<&str> = args.iter().map(String::as_str).collect();
            triggerfish_tests::run_cli(&dir, &all, None)
        })
    };
    let refused = run(vec![]).await.unwrap();
    assert!(!refused.status.success());
    let summary: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(summary["accepted"], 0, "{summary}");
    let accepted = run(vec![
        "--token-file".to_owned(),
        token_file.display().to_string(),
    ])
    .await
    .unwrap();
    let summary: Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert!(accepted.status.success(), "{summary}");
    assert_eq!(summary["accepted"], 1, "{summary}");
    sub.wait_for(2, PATIENCE).await;
    let m = b.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", "unauthorized")]
        ),
        1
    );
}
