//! `GitHubSource`: GitHub's documented example payloads, signed as GitHub signs them.

use std::time::Duration;

use http::StatusCode;
use triggerfish_core::sources::github::sign;

use crate::common::{Client, Harness, Sink};

const SECRET: &str = "It's a Secret to Everybody";

fn config(sink: &Sink, extra: &str) -> String {
    format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
  limits: {{maxRequestBytes: 64KiB, maxEventBytes: 64KiB}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: GitHubSource
metadata: {{name: build}}
spec:
  secretToken: {{file: "{{dir}}/github-secret"}}
  sink: {{uri: "{}"}}
{extra}
"#,
        sink.uri()
    )
}

async fn start(sink: &Sink, extra: &str) -> Harness {
    let secret = format!("{SECRET}\n");
    Harness::start_with(
        &config(sink, extra),
        &[("github-secret", secret.as_bytes())],
    )
    .await
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/github/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn deliver(
    client: &Client,
    url: &str,
    event: &str,
    id: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (StatusCode, String) {
    let good = sign(SECRET.as_bytes(), body);
    let signature = signature.unwrap_or(&good);
    client
        .post(
            url,
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", id),
                ("x-hub-signature-256", signature),
                ("user-agent", "GitHub-Hookshot/044aadd"),
            ],
            body.to_vec(),
        )
        .await
}

#[tokio::test]
async fn push_and_pull_request_are_published_with_knative_attributes() {
    let sink = Sink::start().await;
    let h = start(&sink, "").await;
    let url = h.url("/default/githubsources/build");
    let client = Client::new();

    let (status, body) = deliver(
        &client,
        &url,
        "push",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &fixture("push"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = deliver(
        &client,
        &url,
        "pull_request",
        "d2a1f0a0-77d1-11e9-8f9e-2a86e4085a59",
        &fixture("pull_request"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let got = sink.wait(2, Duration::from_secs(10)).await;
    let push = got
        .iter()
        .find(|r| r.attr("type").as_deref() == Some("dev.knative.source.github.push"))
        .unwrap();
    assert_eq!(
        push.attr("id").as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(
        push.attr("source").as_deref(),
        Some("https://github.com/Codertocat/Hello-World")
    );
    assert_eq!(
        push.attr("subject").as_deref(),
        Some("6113728f27ae...000000000000")
    );
    assert_eq!(push.json()["ref"], "refs/tags/simple-tag");
    let pr = got
        .iter()
        .find(|r| r.attr("type").as_deref() == Some("dev.knative.source.github.pull_request"))
        .unwrap();
    assert_eq!(pr.attr("subject").as_deref(), Some("2"));
    assert_eq!(
        pr.json()["pull_request"]["head"]["sha"],
        "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    );
}

#[tokio::test]
async fn ping_is_answered_and_not_published() {
    let sink = Sink::start().await;
    let h = start(&sink, "  eventTypes: [push]").await;
    let client = Client::new();
    let (status, body) = deliver(
        &client,
        &h.url("/default/githubsources/build"),
        "ping",
        "p-1",
        &fixture("ping"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Anything added dilutes everything else."),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_nothing_is_published() {
    let sink = Sink::start().await;
    let h = start(
        &sink,
        "  eventTypes: [push]\n  ownerAndRepository: Codertocat/Hello-World",
    )
    .await;
    let url = h.url("/default/githubsources/build");
    let client = Client::new();
    let push = fixture("push");

    // Signatures: wrong secret, tampered body, missing, malformed.
    let wrong = sign(b"not the secret", &push);
    assert_eq!(
        deliver(&client, &url, "push", "a", &push, Some(&wrong))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = push.clone();
    tampered[10] ^= 1;
    let good_for_original = sign(SECRET.as_bytes(), &push);
    assert_eq!(
        deliver(
            &client,
            &url,
            "push",
            "a",
            &tampered,
            Some(&good_for_original)
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = client
        .post(
            &url,
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-github-delivery", "a"),
            ],
            push.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        deliver(&client, &url, "push", "a", &push, Some("sha256=zz"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Payloads: truncated JSON (validly signed), an event outside eventTypes, no event header,
    // another repository.
    let truncated = &push[..push.len() / 2];
    assert_eq!(
        deliver(&client, &url, "push", "b", truncated, None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        deliver(&client, &url, "issues", "c", &push, None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        deliver(&client, &url, "", "d", &push, None).await.0,
        StatusCode::BAD_REQUEST
    );
    let other = String::from_utf8(push.clone())
        .unwrap()
        .replace("Codertocat/Hello-World", "someone/else");
    assert_eq!(
        deliver(&client, &url, "push", "e", other.as_bytes(), None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Wrong content type, wrong method, unknown path, oversized body (413 while reading).
    let (status, _) = client
        .post(
            &url,
            &[
                ("content-type", "text/plain"),
                ("x-github-event", "push"),
                ("x-github-delivery", "f"),
                ("x-hub-signature-256", &sign(SECRET.as_bytes(), &push)),
            ],
            push.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        client.send("GET", &url, &[], Vec::new()).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        client.post(&h.url("/nope"), &[], Vec::new()).await.0,
        StatusCode::NOT_FOUND
    );
    let huge = vec![b' '; 100 * 1024];
    assert_eq!(
        deliver(&client, &url, "push", "g", &huge, None).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty(), "{:?}", sink.received());
}

#[tokio::test]
async fn a_replayed_delivery_is_published_once() {
    let sink = Sink::start().await;
    let h = start(&sink, "").await;
    let url = h.url("/default/githubsources/build");
    let client = Client::new();
    let push = fixture("push");
    assert_eq!(
        deliver(&client, &url, "push", "replayed", &push, None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let (status, body) = deliver(&client, &url, "push", "replayed", &push, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("duplicate"));
    assert_eq!(
        deliver(&client, &url, "push", "fresh", &push, None).await.0,
        StatusCode::ACCEPTED
    );
    sink.wait(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn form_encoded_deliveries_are_read_and_broker_sinks_route_through_triggers() {
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: pushes}}
spec:
  broker: default
  filter: {{attributes: {{type: dev.knative.source.github.push}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: GitHubSource
metadata: {{name: build}}
spec:
  secretToken: {{file: "{{dir}}/github-secret"}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        sink.uri()
    );
    let h = Harness::start_with(&yaml, &[("github-secret", SECRET.as_bytes())]).await;
    let client = Client::new();
    let push = fixture("push");
    let form = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(&push).collect::<String>()
    );
    let (status, body) = client
        .post(
            &h.url("/default/githubsources/build"),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-github-event", "push"),
                ("x-github-delivery", "form-1"),
                (
                    "x-hub-signature-256",
                    &sign(SECRET.as_bytes(), form.as_bytes()),
                ),
            ],
            form,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = sink.wait(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].attr("id").as_deref(), Some("form-1"));
    assert_eq!(got[0].json()["pusher"]["name"], "Codertocat");
    // Through the broker: stamped with the time it took the event.
    got[0].arrival();
}

#[tokio::test]
async fn reloads_keep_unchanged_sources_and_remove_deleted_ones() {
    let sink = Sink::start().await;
    let h = start(&sink, "").await;
    let url = h.url("/default/githubsources/build");
    let client = Client::new();
    let push = fixture("push");
    assert_eq!(
        deliver(&client, &url, "push", "before-reload", &push, None)
            .await
            .0,
        StatusCode::ACCEPTED
    );

    // The same source plus an unrelated document: the source keeps running, with its memory of
    // delivery ids.
    let unchanged = format!(
        "{}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: other}}\n",
        config(&sink, "")
    );
    h.reload(&unchanged);
    assert_eq!(
        deliver(&client, &url, "push", "before-reload", &push, None)
            .await
            .0,
        StatusCode::OK
    );

    // A changed source (another path) restarts; the old path is gone.
    h.reload(&config(&sink, "  path: /hooks/github"));
    assert_eq!(
        deliver(&client, &url, "push", "x", &push, None).await.0,
        StatusCode::NOT_FOUND
    );
    let moved = h.url("/hooks/github");
    assert_eq!(
        deliver(&client, &moved, "push", "after-reload", &push, None)
            .await
            .0,
        StatusCode::ACCEPTED
    );

    // Removed: 404.
    let without = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    h.reload(without);
    assert_eq!(
        deliver(&client, &moved, "push", "y", &push, None).await.0,
        StatusCode::NOT_FOUND
    );
    sink.wait(2, Duration::from_secs(10)).await;
}

/// The webhook listener's bodies share `limits.maxBufferedBytes`: a client holding all of it
/// (a body declared and almost all sent, then silence) gets other deliveries 429 instead of
/// more memory, and once it leaves they are published again.
#[tokio::test]
async fn a_full_body_budget_answers_429_then_recovers() {
    use tokio::io::AsyncWriteExt as _;
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace(
        "maxEventBytes: 64KiB}",
        "maxEventBytes: 64KiB, maxBufferedBytes: 64KiB}",
    );
    let secret = format!("{SECRET}\n");
    let h = Harness::start_with(&yaml, &[("github-secret", secret.as_bytes())]).await;
    let url = h.url("/default/githubsources/build");
    let client = Client::new();
    let push = fixture("push");

    let addr = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut staller = tokio::net::TcpStream::connect(addr).await.unwrap();
    let declared = 64 * 1024;
    let head = format!(
        "POST /default/githubsources/build HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    staller.write_all(head.as_bytes()).await.unwrap();
    staller.write_all(&vec![b' '; declared - 10]).await.unwrap();

    let patience = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let mut attempt = 0;
    let (status, body) = loop {
        // Each id once: a replayed delivery id would be answered 200 as a duplicate.
        attempt += 1;
        let id = format!("squeezed-{attempt}");
        let (status, body) = deliver(&client, &url, "push", &id, &push, None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break (status, body);
        }
        // The staller's bytes may not all be read yet: then this one went through.
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(started.elapsed() < patience, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("ingress buffers are full"), "{body}");
    let published = sink.received().len();

    // The staller leaves: its share comes back.
    drop(staller);
    let started = std::time::Instant::now();
    loop {
        attempt += 1;
        let id = format!("after-{attempt}");
        let (status, body) = deliver(&client, &url, "push", &id, &push, None).await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(started.elapsed() < patience, "the budget never came back");
    }
    let got = sink.wait(published + 1, patience).await;
    assert!(
        got.iter()
            .any(|r| r.attr("id").is_some_and(|id| id.contains("after"))),
        "{got:?}"
    );
}
