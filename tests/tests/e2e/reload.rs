//! Hot reload: a valid new config swaps in under traffic without losing an event; an invalid
//! one is logged and rejected, and the old config stays live.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_loses_nothing() {
    let sub = Subscriber::start().await;
    let v1 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")));
    // v2 adds trigger b *before* a, so a's index position changes too, and changes nothing
    // about a's delivery.
    let v2 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("b", &sub.url("/b")))
        .trigger(Trigger::new("a", &sub.url("/a")));
    let router = Arc::new(Router::start(&v1.render()).await);
    let version1 = router.config_version().await;

    // A producer sending one event after the other until told to stop; it records what was
    // accepted, and when.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let producer = {
        let (router, stop, accepted) = (
            Arc::clone(&router),
            Arc::clone(&stop),
            Arc::clone(&accepted),
        );
        tokio::spawn(async move {
            let url = router.broker_url("default");
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let e = Event::new(format!("e-{i}"), "t");
                let r = router.client.send_binary(&url, &e).await;
                assert_eq!(r.code(), 202, "{}: {}", e.id(), r.text());
                accepted
                    .lock()
                    .await
                    .push((e.id().to_owned(), Instant::now()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    sub.wait_for_path("/a", 20, PATIENCE).await;
    router.write_config(&v2.render());
    let version2 = router.wait_config_change(&version1).await;
    let active_at = Instant::now();
    assert_eq!(
        version2,
        triggerfish_core::config::version_of(&v2.render()),
        "/config reports the SHA-256 of the new file"
    );
    // Keep sending under the new config until 20 events were accepted well after it was
    // active (the window the assertions on b below look at).
    let settled = active_at + Duration::from_millis(50);
    eventually(
        "20 events accepted under the new config",
        PATIENCE,
        || async {
            let n = accepted
                .lock()
                .await
                .iter()
                .filter(|(_, at)| *at > settled)
                .count();
            (n >= 20).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();

    let accepted = accepted.lock().await.clone();
    let all: BTreeSet<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    // Every accepted event reaches a, exactly once, across the swap.
    let a = sub.wait_for_path("/a", all.len(), PATIENCE).await;
    sub.wait_answered(sub.count(), PATIENCE).await;
    let a_ids: Vec<String> = a.iter().map(|r| r.id()).collect();
    let a_set: BTreeSet<String> = a_ids.iter().cloned().collect();
    assert_eq!(a_ids.len(), a_set.len(), "duplicates at a");
    assert_eq!(a_set, all, "a lost events over the reload");
    // b gets nothing from before the reload was written, and everything accepted once the
    // new config was active (allowing for the shard driver's run in progress).
    let after: BTreeSet<String> = accepted
        .iter()
        .filter(|(_, at)| *at > settled)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(after.len() >= 20);
    let b_ids: BTreeSet<String> =
        eventually("b to get every event after the swap", PATIENCE, || {
            let b_ids: BTreeSet<String> = sub.requests_to("/b").iter().map(|r| r.id()).collect();
            let done = after.is_subset(&b_ids);
            async move { done.then_some(b_ids) }
        })
        .await;
    assert!(b_ids.is_subset(&all));

    let status = router.config_status().await;
    assert_eq!(
        status["brokers"][0]["triggers"],
        serde_json::json!(["b", "a"])
    );
    assert_eq!(status["lastRejected"], serde_json::Value::Null);
    let logs = router.wait_log("triggers_kept=1", PATIENCE).await;
    assert!(logs.contains("triggers_started=1"), "{logs}");
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_config_reloads_total",
            &[("outcome", "applied")]
        ),
        1
    );
    assert_eq!(m.count("triggerfish_delivery_dropped_total", &[]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_rejected_and_the_old_config_stays() {
    let sub = Subscriber::start().await;
    let valid = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")));
    let router = Router::start(&valid.render()).await;
    let before = router.config_status().await;
    let version = before["version"].as_str().unwrap().to_owned();

    // A CESQL filter that does not compile (found by the build step, after loading).
    let invalid = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .trigger(
            Trigger::new("broken", &sub.url("/broken")).filter("filters:\n  - cesql: \"type = \""),
        );
    router.write_config(&invalid.render());
    let logs = router.wait_log("config reload rejected", PATIENCE).await;
    assert!(
        logs.contains("Trigger \\\"broken\\\"") || logs.contains("Trigger \"broken\""),
        "the log names the resource: {logs}"
    );
    assert!(logs.contains("spec.filters[0].cesql"), "{logs}");

    let status = eventually("/config to report the rejection", PATIENCE, || async {
        let s = router.config_status().await;
        (!s["lastRejected"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(status["version"].as_str(), Some(version.as_str()));
    assert_eq!(status["brokers"][0]["triggers"], serde_json::json!(["a"]));
    let rejected = status["lastRejected"].as_str().unwrap();
    let file = router.config_path().display().to_string();
    assert!(
        rejected.contains(&format!("{file}:")) && rejected.contains("spec.filters[0].cesql"),
        "names file:line and the field: {rejected}"
    );
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_config_reloads_total",
            &[("outcome", "rejected")]
        ),
        1
    );

    // YAML that does not even load is rejected the same way.
    router.write_config("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nspec: [\n");
    router
        .wait_metric(
            "triggerfish_config_reloads_total",
            &[("outcome", "rejected")],
            2.0,
            PATIENCE,
        )
        .await;
    assert_eq!(
        router.config_status().await["version"].as_str(),
        Some(version.as_str())
    );

    // Events still flow under the old config.
    router.publish(&Event::new("still-1", "t")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].path, "/a");
    assert_eq!(got[0].id(), "still-1");

    // Fixing the file applies it, and clears the rejection.
    let fixed = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .trigger(Trigger::new("fixed", &sub.url("/fixed")));
    router.write_config(&fixed.render());
    let v = router.wait_config_change(&version).await;
    assert_eq!(v, triggerfish_core::config::version_of(&fixed.render()));
    let status = router.config_status().await;
    assert!(status["lastRejected"].is_null(), "{status}");
    router.publish(&Event::new("still-2", "t")).await;
    sub.wait_for_path("/fixed", 1, PATIENCE).await;
    let got = sub.wait_for_path("/a", 2, PATIENCE).await;
    assert_eq!(got[1].id(), "still-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_write_reloads_too() {
    let sub = Subscriber::start().await;
    let v1 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")));
    let router = Router::start(&v1.render()).await;
    let version = router.config_version().await;
    // Change a's subscriber by writing the file in place (truncate and write).
    let v2 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a2")));
    std::fs::write(router.config_path(), v2.render()).unwrap();
    router.wait_config_change(&version).await;
    router.publish(&Event::new("moved", "t")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].path, "/a2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_swap_reloads() {
    // A mounted ConfigMap: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>; an
    // update writes a new timestamped directory and renames a new ..data link over the old.
    use std::os::unix::fs::symlink;
    let sub = Subscriber::start().await;
    let v1 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .render();
    let v2 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a2")))
        .render();
    let router = Router::start(&v1).await;
    let dir = router.dir().to_path_buf();
    let version = router.config_version().await;
    std::fs::create_dir(dir.join("..2024_01_01_v1")).unwrap();
    std::fs::write(dir.join("..2024_01_01_v1/config.yaml"), &v1).unwrap();
    symlink("..2024_01_01_v1", dir.join("..data")).unwrap();
    symlink("..data/config.yaml", dir.join("config.yaml.link")).unwrap();
    std::fs::rename(dir.join("config.yaml.link"), router.config_path()).unwrap();

    std::fs::create_dir(dir.join("..2024_01_02_v2")).unwrap();
    std::fs::write(dir.join("..2024_01_02_v2/config.yaml"), &v2).unwrap();
    symlink("..2024_01_02_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2024_01_01_v1")).unwrap();

    let v = router.wait_config_change(&version).await;
    assert_eq!(v, triggerfish_core::config::version_of(&v2));
    router.publish(&Event::new("k8s", "t")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].path, "/a2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_then_recreated_file_and_a_reverted_file() {
    let sub = Subscriber::start().await;
    let v1 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .render();
    let router = Router::start(&v1).await;
    let version = router.config_version().await;

    // Deleted: rejected (the file cannot be read), the config stays.
    std::fs::remove_file(router.config_path()).unwrap();
    let status = eventually("the deletion to be rejected", PATIENCE, || async {
        let s = router.config_status().await;
        (!s["lastRejected"].is_null()).then_some(s)
    })
    .await;
    assert!(
        status["lastRejected"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{status}"
    );
    assert_eq!(status["version"].as_str(), Some(version.as_str()));

    // Recreated with the same text: nothing to apply, and nothing rejected any more, since
    // the file is the active config again.
    std::fs::write(router.config_path(), &v1).unwrap();
    let status = eventually("the rejection to clear", PATIENCE, || async {
        let s = router.config_status().await;
        s["lastRejected"].is_null().then_some(s)
    })
    .await;
    assert_eq!(status["version"].as_str(), Some(version.as_str()));

    // An invalid edit, then reverted by hand: the same.
    router.write_config(&v1.replace("name: a\n", "name: A\n"));
    eventually("the bad edit to be rejected", PATIENCE, || async {
        let s = router.config_status().await;
        (!s["lastRejected"].is_null()).then_some(())
    })
    .await;
    router.write_config(&v1);
    eventually("the revert to clear the rejection", PATIENCE, || async {
        let s = router.config_status().await;
        s["lastRejected"].is_null().then_some(())
    })
    .await;
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_config_reloads_total",
            &[("outcome", "applied")]
        ),
        0,
        "the active config was never replaced"
    );
    router.publish(&Event::new("after", "t")).await;
    sub.wait_for(1, PATIENCE).await;
}

/// A reload that changes what only a restart applies (shards, queue limits) is applied for
/// everything else, warns, and lists those fields in `/config` until the file is back to what
/// the process started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_needs_a_restart_says_so() {
    let sub = Subscriber::start().await;
    let v1 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")));
    let router = Router::start(&v1.render()).await;
    let status = router.config_status().await;
    assert_eq!(status["restartPending"], serde_json::json!([]));
    let version1 = status["version"].as_str().unwrap().to_owned();

    let v2 = Config::new()
        .server("shards: 3\nqueues:\n  trigger:\n    events: 100\n    bytes: 1MiB")
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .trigger(Trigger::new("b", &sub.url("/b")));
    router.write_config(&v2.render());
    let version2 = router.wait_config_change(&version1).await;
    let status = router.config_status().await;
    assert_eq!(
        status["restartPending"],
        serde_json::json!(["shards", "queues"])
    );
    let logs = router
        .wait_log("take effect only at the next restart", PATIENCE)
        .await;
    assert!(logs.contains("shards, queues"), "{logs}");
    // The rest of the new config is live: b gets events.
    router.publish(&Event::new("after", "t")).await;
    let got = sub.wait_for_path("/b", 1, PATIENCE).await;
    assert_eq!(got[0].id(), "after");

    // Back to the Server document the process started with: nothing pending.
    let v3 = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .trigger(Trigger::new("b", &sub.url("/b")));
    router.write_config(&v3.render());
    router.wait_config_change(&version2).await;
    assert_eq!(
        router.config_status().await["restartPending"],
        serde_json::json!([])
    );
}
