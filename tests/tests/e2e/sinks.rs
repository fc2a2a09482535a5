//! The other destinations: the built-in `Display` and `File` sinks (as refs and as `display:`
//! and `file://` URIs), and a `Broker` ref that forwards events into another broker.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use triggerfish_tests::event::take_arrival;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_and_file_sinks() {
    let out_file = tempfile::tempdir().unwrap();
    let uri_path = out_file.path().join("by-uri.jsonl");
    let config = Config::new()
        .server("dataDir: state")
        .broker("default", None)
        .trigger(Trigger::new("show", "x").subscriber(
            "ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: display}",
        ))
        .trigger(
            Trigger::new("keep", "x")
                .subscriber("ref: {apiVersion: triggerfish.dev/v1alpha1, kind: File, name: kept}"),
        )
        .trigger(Trigger::new(
            "keep-uri",
            &format!("file://{}", uri_path.display()),
        ));
    let router = Router::start(&config.render()).await;
    let event = Event::new("f-1", "com.example.file")
        .subject("s")
        .attr("knativebrokerttl", 9)
        .data(json!({"k": [1, 2]}));
    router.publish(&event).await;

    // File by ref: {dataDir}/sinks/{namespace}/{name}.jsonl, relative to the working dir.
    let by_ref = router.dir().join("state/sinks/default/kept.jsonl");
    let mut expected = event.json();
    expected.as_object_mut().unwrap().remove("knativebrokerttl");
    let mut arrivals = Vec::new();
    for path in [&by_ref, &uri_path] {
        let lines = eventually(
            &format!("{} to be written", path.display()),
            PATIENCE,
            || async {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                text.ends_with('\n').then_some(text)
            },
        )
        .await;
        let mut lines: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for line in &mut lines {
            arrivals.push(take_arrival(line));
        }
        assert_eq!(lines, vec![expected.clone()], "{}", path.display());
    }
    assert_eq!(arrivals[0], arrivals[1], "one event, one arrival time");

    let stdout = eventually("the display sink to print", PATIENCE, || async {
        let out = router.stdout();
        out.contains("f-1").then_some(out)
    })
    .await;
    assert!(stdout.contains("cloudevents.Event"), "{stdout}");
    assert!(stdout.contains("id: f-1"), "{stdout}");
    assert!(stdout.contains("type: com.example.file"), "{stdout}");
    assert!(!stdout.contains("knativebrokerttl"), "{stdout}");
    assert!(
        stdout.contains(&format!("knativearrivaltime: {}", arrivals[0])),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_ref_forwards_into_another_broker() {
    let sub = Subscriber::start().await;
    let config =
        Config::new()
            .broker("default", None)
            .broker("audit", None)
            .trigger(Trigger::new("to-audit", "x").subscriber(
                "ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: audit}",
            ))
            .trigger(Trigger::new("audit-log", &sub.url("/audit")).broker("audit"));
    let router = Router::start(&config.render()).await;
    let event = Event::new("fw-1", "t").attr("x", "y");
    router.publish(&event).await;
    // The audit broker has its own ingress too.
    let r = router
        .client
        .send_binary(&router.broker_url("audit"), &Event::new("direct", "t"))
        .await;
    assert_eq!(r.code(), 202);
    let got = sub.wait_for(2, PATIENCE).await;
    let fw = got.iter().find(|r| r.id() == "fw-1").unwrap();
    assert_eq!(fw.ce("x").as_deref(), Some("y"));
    assert_eq!(fw.header("ce-knativebrokerttl"), None);
    // The audit broker stamps what enters it, forwarded or not.
    let direct = got.iter().find(|r| r.id() == "direct").unwrap();
    assert!(fw.ce("knativearrivaltime").is_some());
    assert!(direct.ce("knativearrivaltime").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_loop_between_brokers_stops() {
    // a forwards everything to b, b to a: knativebrokerttl ends it.
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok());
    let config = Config::new()
        .broker("a", None)
        .broker("b", None)
        .trigger(
            Trigger::new("a-to-b", "x")
                .broker("a")
                .subscriber("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: b}"),
        )
        .trigger(
            Trigger::new("b-to-a", "x")
                .broker("b")
                .subscriber("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: a}"),
        )
        .trigger(Trigger::new("watch", &sub.url("/watch")).broker("b"));
    let router = Router::start(&config.render()).await;
    let r = router
        .client
        .send_binary(
            &router.broker_url("a"),
            &Event::new("ping", "t").attr("knativebrokerttl", 10),
        )
        .await;
    assert_eq!(r.code(), 202);
    router
        .wait_metric(
            "triggerfish_delivery_dropped_total",
            &[("reason", "ttl_exhausted")],
            1.0,
            PATIENCE,
        )
        .await;
    // TTL 10 at a: a→b leaves 9, b→a 8, and so on; b sees it with 9, 7, 5, 3 and 1, and its
    // forward with 1 left is dropped. The last delivery to watch may still be on its way.
    let got = sub.wait_for(5, PATIENCE).await;
    assert_eq!(got.len(), 5, "{:?}", sub.summary());
    assert!(got.iter().all(|r| r.id() == "ping"));
}
