//! `S3Source`: MinIO and AWS S3 notification records, with and without the bearer token.

use std::time::Duration;

use http::StatusCode;

use crate::common::{Client, Harness, Sink};

const TOKEN: &str = "minio-webhook-token";

async fn start(sink: &Sink) -> Harness {
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: S3Source
metadata: {{name: uploads, namespace: media}}
spec:
  token: {{file: "{{dir}}/token"}}
  sink: {{uri: "{}"}}
"#,
        sink.uri()
    );
    Harness::start_with(&yaml, &[("token", TOKEN.as_bytes())]).await
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/s3/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const BEARER: &str = "Bearer minio-webhook-token";

#[tokio::test]
async fn minio_and_aws_records_are_published() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let url = h.url("/media/s3sources/uploads");
    let client = Client::new();
    let json = [
        ("content-type", "application/json"),
        ("authorization", BEARER),
    ];
    assert_eq!(
        client.post(&url, &json, fixture("minio-put")).await.0,
        StatusCode::ACCEPTED
    );
    let (status, body) = client.post(&url, &json, fixture("aws-two-records")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::ACCEPTED, "{\"accepted\":2}")
    );
    let got = sink.wait(3, Duration::from_secs(10)).await;
    let minio = got
        .iter()
        .find(|r| r.attr("source").as_deref() == Some("minio:s3"))
        .unwrap();
    assert_eq!(
        minio.attr("type").as_deref(),
        Some("com.amazonaws.s3.ObjectCreated:Put")
    );
    // Binary mode percent-encodes attribute values in headers: the subject is
    // `arn:aws:s3:::media/talks/intro 2024.mp4`.
    assert_eq!(
        minio.attr("subject").as_deref(),
        Some("arn:aws:s3:::media/talks/intro%202024.mp4")
    );
    assert_eq!(minio.attr("id").as_deref(), Some("17CB5E2D1E3C7A9F-0"));
    assert_eq!(minio.json()["s3"]["object"]["size"], 1048576);
    let removed = got
        .iter()
        .find(|r| r.attr("type").as_deref() == Some("com.amazonaws.s3.ObjectRemoved:Delete"))
        .unwrap();
    assert_eq!(
        removed.attr("subject").as_deref(),
        Some("arn:aws:s3:::amzn-s3-demo-bucket/Sad%20Face.jpg")
    );
    assert_eq!(removed.attr("id").as_deref(), Some("C3D13FE58DE4C810-1"));
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(r#"triggerfish_source_events_total{source="media/s3sources/uploads"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"triggerfish_source_requests_total{source="media/s3sources/uploads",outcome="202"} 2"#
    ));
}

#[tokio::test]
async fn bad_requests_publish_nothing() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let url = h.url("/media/s3sources/uploads");
    let client = Client::new();
    let json = [
        ("content-type", "application/json"),
        ("authorization", BEARER),
    ];
    // No token, a wrong token.
    assert_eq!(
        client
            .post(
                &url,
                &[("content-type", "application/json")],
                fixture("minio-put")
            )
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .post(
                &url,
                &[
                    ("content-type", "application/json"),
                    ("authorization", "Bearer guess")
                ],
                fixture("minio-put")
            )
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Wrong content type, truncated JSON.
    assert_eq!(
        client
            .post(
                &url,
                &[("content-type", "text/plain"), ("authorization", BEARER)],
                fixture("minio-put")
            )
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let full = fixture("minio-put");
    assert_eq!(
        client
            .post(&url, &json, full[..full.len() - 10].to_owned())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // The second record of two has a key that climbs out of the bucket, or none at all: the
    // first is not published either.
    let climbing = fixture("aws-two-records").replace("Sad+Face.jpg", "..%2F..%2Fetc%2Fpasswd");
    let (status, body) = client.post(&url, &json, climbing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Records[1]"), "{body}");
    let keyless = fixture("aws-two-records").replace(r#""key":"Sad+Face.jpg","#, "");
    assert_eq!(
        client.post(&url, &json, keyless).await.0,
        StatusCode::BAD_REQUEST
    );
    // S3's test event publishes nothing.
    let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"media","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
    assert_eq!(client.post(&url, &json, test).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn requests_larger_than_the_sink_queue_are_refused_whole_and_delivery_retries() {
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
  queues: {{trigger: {{events: 1, bytes: 256KiB}}}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: S3Source
metadata: {{name: uploads}}
spec:
  sink: {{uri: "{}"}}
  delivery: {{retry: 50, backoffPolicy: linear, backoffDelay: PT0.1S}}
"#,
        sink.uri()
    );
    let h = Harness::start(&yaml).await;
    sink.answer(503);
    let url = h.url("/default/s3sources/uploads");
    let client = Client::new();
    let json = [("content-type", "application/json")];
    // Two records can never fit a queue of one event: nothing is queued (413).
    let (status, _) = client.post(&url, &json, fixture("aws-two-records")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // One record fits; the sink fails, so it is retried from the dispatcher's queue.
    assert_eq!(
        client.post(&url, &json, fixture("minio-put")).await.0,
        StatusCode::ACCEPTED
    );
    sink.answer(202);
    let got = sink.wait(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].attr("id").as_deref(), Some("17CB5E2D1E3C7A9F-0"));
}
