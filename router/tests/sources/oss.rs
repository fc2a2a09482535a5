//! `OssSource` against the fake MNS server: queue polling (publish, then delete; redelivery
//! after the visibility timeout; signatures) and HTTP push (RSA-SHA1 signatures, certificate
//! fetching and caching, stale dates).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::StatusCode;

use crate::common::{Client, Harness, Sink};
use crate::fake_mns::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, FakeMns};

/// An OSS notification as OSS publishes it to MNS (the documentation's record, and a second
/// one), before base64.
const NOTIFICATION: &str = r#"{"events": [{
    "eventName": "ObjectCreated:PutObject",
    "eventSource": "acs:oss",
    "eventTime": "2024-05-01T11:17:30.000Z",
    "eventVersion": "1.0",
    "oss": {
        "bucket": {"arn": "acs:oss:cn-hangzhou:1148930107246818:media-uploads", "name": "media-uploads",
                   "ownerIdentity": "1148930107246818", "virtualBucket": ""},
        "object": {"deltaSize": 122539, "eTag": "688A7BF4F233DC9C88A80BF985AB7329", "key": "talks/intro.mp4", "size": 122539},
        "ossSchemaVersion": "1.0",
        "ruleId": "9adac8e253828f4f7c0466d941fa3db81161****"},
    "region": "cn-hangzhou",
    "requestParameters": {"sourceIPAddress": "140.205.***.***"},
    "responseElements": {"requestId": "5775D18A4C3BB62F7B0A12BD"},
    "userIdentity": {"principalId": "1148930107246818"}
}, {
    "eventName": "ObjectCreated:PutObject",
    "eventSource": "acs:oss",
    "eventTime": "2024-05-01T11:17:31.000Z",
    "eventVersion": "1.0",
    "oss": {
        "bucket": {"arn": "acs:oss:cn-hangzhou:1148930107246818:media-uploads", "name": "media-uploads",
                   "ownerIdentity": "1148930107246818", "virtualBucket": ""},
        "object": {"deltaSize": 2048, "eTag": "5D41402ABC4B2A76B9719D911017C592", "key": "talks/intro.srt", "size": 2048},
        "ossSchemaVersion": "1.0",
        "ruleId": "9adac8e253828f4f7c0466d941fa3db81161****"},
    "region": "cn-hangzhou",
    "requestParameters": {"sourceIPAddress": "140.205.***.***"},
    "responseElements": {"requestId": "5775D18A4C3BB62F7B0A12BD"},
    "userIdentity": {"principalId": "1148930107246818"}
}]}"#;

fn queue_config(
    mns: &FakeMns,
    sink: &Sink,
    secret: &str,
) -> (String, Vec<(&'static str, Vec<u8>)>) {
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: OssSource
metadata: {{name: uploads, namespace: media}}
spec:
  sink: {{uri: "{}"}}
  queue:
    endpoint: "{}"
    queue: {}
    accessKeyId: {{file: "{{dir}}/ak-id"}}
    accessKeySecret: {{file: "{{dir}}/ak-secret"}}
    waitSeconds: 1
"#,
        sink.uri(),
        mns.endpoint(),
        mns.queue
    );
    (
        yaml,
        vec![
            ("ak-id", ACCESS_KEY_ID.as_bytes().to_vec()),
            ("ak-secret", secret.as_bytes().to_vec()),
        ],
    )
}

async fn start_queue(mns: &FakeMns, sink: &Sink, secret: &str) -> Harness {
    let (yaml, files) = queue_config(mns, sink, secret);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    Harness::start_with(&yaml, &files).await
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn queue_messages_are_published_then_deleted() {
    let mns = FakeMns::start("oss-events", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let _h = start_queue(&mns, &sink, ACCESS_KEY_SECRET).await;
    let id = mns.send(&BASE64.encode(NOTIFICATION));
    let got = sink.wait(2, Duration::from_secs(10)).await;
    let first = got
        .iter()
        .find(|r| r.attr("id").as_deref() == Some("5775D18A4C3BB62F7B0A12BD-0"))
        .unwrap();
    assert_eq!(
        first.attr("type").as_deref(),
        Some("oss:ObjectCreated:PutObject")
    );
    assert_eq!(first.attr("source").as_deref(), Some("acs.oss"));
    assert_eq!(
        first.attr("subject").as_deref(),
        Some("acs:oss:cn-hangzhou:1148930107246818:media-uploads/talks/intro.mp4")
    );
    assert_eq!(
        first.attr("time").as_deref(),
        Some("2024-05-01T11:17:30.000Z")
    );
    assert_eq!(first.json()["oss"]["object"]["size"], 122539);
    assert!(
        got.iter()
            .any(|r| r.attr("id").as_deref() == Some("5775D18A4C3BB62F7B0A12BD-1"))
    );
    eventually("the message is deleted", || {
        mns.deleted() == vec![id.clone()]
    })
    .await;
    assert_eq!(mns.len(), 0);
    assert!(mns.refused().is_empty(), "{:?}", mns.refused());
}

#[tokio::test]
async fn a_message_not_deleted_comes_back_after_the_visibility_timeout_with_the_same_ids() {
    let mns = FakeMns::start("oss-events", Duration::from_secs(1)).await;
    let sink = Sink::start().await;
    // The first router publishes, then its DeleteMessage fails and it dies: the message is
    // still in the queue.
    mns.fail_deletes(1);
    let first = start_queue(&mns, &sink, ACCESS_KEY_SECRET).await;
    let id = mns.send(&BASE64.encode(NOTIFICATION));
    sink.wait(2, Duration::from_secs(10)).await;
    eventually("the failed delete", || {
        mns.refused().contains(&"InternalError".to_owned())
    })
    .await;
    drop(first);
    assert_eq!(mns.len(), 1);
    // A restarted router receives it again once it is visible, publishes it again with the
    // same event ids, and deletes it.
    let _second = start_queue(&mns, &sink, ACCESS_KEY_SECRET).await;
    let got = sink.wait(4, Duration::from_secs(10)).await;
    eventually("the message is deleted", || {
        mns.deleted() == vec![id.clone()]
    })
    .await;
    let mut ids: Vec<String> = got.iter().filter_map(|r| r.attr("id")).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "5775D18A4C3BB62F7B0A12BD-0",
            "5775D18A4C3BB62F7B0A12BD-0",
            "5775D18A4C3BB62F7B0A12BD-1",
            "5775D18A4C3BB62F7B0A12BD-1"
        ]
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_mns_and_nothing_is_received() {
    let mns = FakeMns::start("oss-events", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let _h = start_queue(&mns, &sink, "not-the-secret").await;
    mns.send(&BASE64.encode(NOTIFICATION));
    eventually("a refused request", || {
        mns.refused().contains(&"SignatureDoesNotMatch".to_owned())
    })
    .await;
    assert_eq!(mns.len(), 1);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn invalid_messages_are_dropped_whole_and_valid_ones_still_flow() {
    let mns = FakeMns::start("oss-events", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let _h = start_queue(&mns, &sink, ACCESS_KEY_SECRET).await;
    // Not base64; a record without a key next to a good one; a key climbing out of the bucket.
    let not_base64 = mns.send("{not base64}");
    let keyless = NOTIFICATION.replace(r#""key": "talks/intro.srt", "#, "");
    let keyless = mns.send(&BASE64.encode(keyless));
    let climbing =
        mns.send(&BASE64.encode(NOTIFICATION.replace("talks/intro.srt", "../../etc/passwd")));
    let good = mns.send(&BASE64.encode(NOTIFICATION));
    eventually("all four are handled", || mns.deleted().len() == 4).await;
    assert_eq!(mns.deleted(), vec![not_base64, keyless, climbing, good]);
    let got = sink.wait(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.received().len(), 2, "{got:#?}");
}

fn push_config(sink: &Sink, hosts: &str) -> String {
    format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: OssSource
metadata: {{name: pushed, namespace: media}}
spec:
  sink: {{uri: "{}"}}
  push:
    certificateHosts: {hosts}
"#,
        sink.uri()
    )
}

async fn push(
    client: &Client,
    url: &str,
    request: (Vec<(String, String)>, String),
) -> (StatusCode, String) {
    let (headers, body) = request;
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    client.post(url, &headers, body).await
}

#[tokio::test]
async fn pushed_notifications_are_verified_and_published() {
    let mns = FakeMns::start("unused", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let h = Harness::start(&push_config(&sink, r#"["127.0.0.1"]"#)).await;
    let url = h.url("/media/osssources/pushed");
    let client = Client::new();
    let message = BASE64.encode(NOTIFICATION);
    let (status, body) = push(
        &client,
        &url,
        mns.push_request(&url, &message, "signing-key.pem", SystemTime::now()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = push(
        &client,
        &url,
        mns.push_request(&url, &message, "signing-key.pem", SystemTime::now()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = sink.wait(4, Duration::from_secs(10)).await;
    assert!(
        got.iter()
            .all(|r| r.attr("type").as_deref() == Some("oss:ObjectCreated:PutObject"))
    );
    // The certificate was fetched once and cached.
    assert_eq!(mns.cert_fetches(), 1);
}

#[tokio::test]
async fn bad_pushes_are_refused_and_publish_nothing() {
    let mns = FakeMns::start("unused", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let h = Harness::start(&push_config(&sink, r#"["127.0.0.1"]"#)).await;
    let url = h.url("/media/osssources/pushed");
    let client = Client::new();
    let message = BASE64.encode(NOTIFICATION);
    let now = SystemTime::now();

    // Signed with another key.
    let (status, body) = push(
        &client,
        &url,
        mns.push_request(&url, &message, "other-key.pem", now),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Stale (a replay of a captured request) and from the future.
    let stale = now - Duration::from_secs(20 * 60);
    assert_eq!(
        push(
            &client,
            &url,
            mns.push_request(&url, &message, "signing-key.pem", stale)
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let future = now + Duration::from_secs(20 * 60);
    assert_eq!(
        push(
            &client,
            &url,
            mns.push_request(&url, &message, "signing-key.pem", future)
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    // A body changed after signing: Content-MD5 no longer matches.
    let (headers, body) = mns.push_request(&url, &message, "signing-key.pem", now);
    let changed = body.replace("oss-events", "oss-evil");
    assert_eq!(
        push(&client, &url, (headers.clone(), changed)).await.0,
        StatusCode::BAD_REQUEST
    );
    // No signature at all; no certificate URL.
    let unsigned: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n != "authorization")
        .cloned()
        .collect();
    assert_eq!(
        push(&client, &url, (unsigned, body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let no_cert: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n != "x-mns-signing-cert-url")
        .cloned()
        .collect();
    assert_eq!(
        push(&client, &url, (no_cert, body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Signed, but a record's key climbs out of the bucket: nothing of it is published.
    let climbing = BASE64.encode(NOTIFICATION.replace("talks/intro.srt", "../secrets"));
    assert_eq!(
        push(
            &client,
            &url,
            mns.push_request(&url, &climbing, "signing-key.pem", now)
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    // Signed, but not base64 / truncated JSON.
    assert_eq!(
        push(
            &client,
            &url,
            mns.push_request(&url, "%%%", "signing-key.pem", now)
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let truncated = BASE64.encode(&NOTIFICATION[..300]);
    assert_eq!(
        push(
            &client,
            &url,
            mns.push_request(&url, &truncated, "signing-key.pem", now)
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn certificates_are_only_fetched_from_allowed_hosts_or_taken_from_config() {
    let mns = FakeMns::start("unused", Duration::from_secs(2)).await;
    let sink = Sink::start().await;
    let h = Harness::start(&push_config(&sink, r#"["*.aliyuncs.com"]"#)).await;
    let url = h.url("/media/osssources/pushed");
    let client = Client::new();
    let message = BASE64.encode(NOTIFICATION);
    let (status, body) = push(
        &client,
        &url,
        mns.push_request(&url, &message, "signing-key.pem", SystemTime::now()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("not allowed"), "{body}");
    assert_eq!(mns.cert_fetches(), 0);

    // With the certificate in the config, nothing is fetched at all.
    let cert = format!(
        "{}/tests/fixtures/mns/signing-cert.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml = push_config(&sink, "[]").replace(
        "    certificateHosts: []",
        &format!("    certificate: {cert}"),
    );
    h.reload(&yaml);
    let (status, body) = push(
        &client,
        &url,
        mns.push_request(&url, &message, "signing-key.pem", SystemTime::now()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(mns.cert_fetches(), 0);
    sink.wait(2, Duration::from_secs(10)).await;
}
