//! Benchmark tooling for Triggerfish.
//!
//! - fixtures for the criterion benches: realistic CloudEvents in each content mode, generated
//!   deterministically ([`structured_event`], [`batch_body`], [`binary_event`]);
//! - [`loadgen`]: the load generator and sink behind the `tf-loadgen` binary;
//! - [`benchconfig`]: the Knative configs the broker benchmarks run on (`tf-benchconfig`).
//!
//! The baseline router the broker benchmarks compare against is a separate crate,
//! `bench/peers/naive-router`, outside the workspace.

pub mod naive;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

pub mod benchconfig;
pub mod loadgen;

/// One structured-mode event of about 400 bytes: an order event with a partition key, three
/// extensions and a small JSON payload.
pub fn structured_event(i: usize) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"evt-{i:08}","source":"/orders/eu-west-1/shop-{s}","type":"com.example.order.created","subject":"order-{i}","time":"2026-11-29T08:00:00.123Z","datacontenttype":"application/json","partitionkey":"customer-{k}","priority":{p},"traced":true,"data":{{"order":{i},"customer":"customer-{k}","items":[{{"sku":"A-1","qty":2,"price":1999}},{{"sku":"B-7","qty":1,"price":499}}],"currency":"EUR","note":"leave at the door"}}}}"#,
        s = i % 7,
        k = i % 97,
        p = i % 5
    )
}

/// A batched-mode body of `n` events.
pub fn batch_body(n: usize) -> Bytes {
    let events: Vec<String> = (0..n).map(structured_event).collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

/// Binary-mode headers and body for the same kind of event.
pub fn binary_event(i: usize) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    let pairs = [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", format!("evt-{i:08}")),
        ("ce-source", format!("/orders/eu-west-1/shop-{}", i % 7)),
        ("ce-type", "com.example.order.created".to_owned()),
        ("ce-subject", format!("order-{i}")),
        ("ce-time", "2026-11-29T08:00:00.123Z".to_owned()),
        ("ce-partitionkey", format!("customer-{}", i % 97)),
        ("ce-priority", format!("{}", i % 5)),
        ("ce-traced", "true".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    let body = format!(
        r#"{{"order":{i},"customer":"customer-{}","items":[{{"sku":"A-1","qty":2,"price":1999}},{{"sku":"B-7","qty":1,"price":499}}],"currency":"EUR","note":"leave at the door"}}"#,
        i % 97
    );
    (h, Bytes::from(body))
}

/// A broker config with `n` triggers in a realistic mix, plus the event types it routes.
///
/// The mix, by trigger position `i`:
/// - 50%: `filter.attributes` exact on `type` (`com.example.d{i}.created`);
/// - 15%: `filters: [prefix: {source: /tenants/t{i}/}]`;
/// - 10%: `filters: [suffix: {subject: .r{i}.png}]`;
/// - 15%: `filters: [any: [exact type A, exact type B]]`;
/// - 10%: CESQL with a type equality and a numeric test
///   (`type = 'com.example.d{i}.updated' AND priority > 2`).
///
/// Plus 4 triggers no index can narrow down (`not`, a CESQL without a type test, a presence
/// test and an empty filter), whatever `n` is, so every event also pays for a few full scans.
pub fn trigger_mix_config(n: usize) -> String {
    let mut out = String::from(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: default}\n",
    );
    let sub = "subscriber: {uri: http://127.0.0.1:9/}";
    for i in 0..n {
        let spec = match i % 20 {
            0..=9 => format!("filter: {{attributes: {{type: com.example.d{i}.created}}}}"),
            10..=12 => format!("filters: [{{prefix: {{source: /tenants/t{i}/}}}}]"),
            13..=14 => format!("filters: [{{suffix: {{subject: .r{i}.png}}}}]"),
            15..=17 => format!(
                "filters: [{{any: [{{exact: {{type: com.example.d{i}.a}}}}, {{exact: {{type: com.example.d{i}.b}}}}]}}]"
            ),
            _ => format!(
                "filters: [{{cesql: \"type = 'com.example.d{i}.updated' AND priority > 2\"}}]"
            ),
        };
        out.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{i}, namespace: default}}\nspec: {{broker: default, {spec}, {sub}}}\n"
        ));
    }
    for (name, spec) in [
        (
            "scan-not",
            "filters: [{not: {exact: {type: com.example.never}}}]",
        ),
        (
            "scan-cesql",
            "filters: [{cesql: \"priority > 3 AND source LIKE '%/eu/%'\"}]",
        ),
        ("scan-present", "filter: {attributes: {traced: \"\"}}"),
        ("scan-all", "filters: []"),
    ] {
        out.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: default}}\nspec: {{broker: default, {spec}, {sub}}}\n"
        ));
    }
    out
}

/// `count` events aimed at a broker of `n` mixed triggers: mostly types, sources and
/// subjects some trigger selects, and one in ten that only the catch-all triggers match.
pub fn events_for_mix(n: usize, count: usize) -> Bytes {
    let mut events = Vec::with_capacity(count);
    let n = n.max(1);
    for k in 0..count {
        let i = (k * 7919) % n;
        let (ty, source, subject) = match k % 10 {
            0 => (
                "com.example.unrouted".to_owned(),
                "/elsewhere/eu/x".to_owned(),
                "x.txt".to_owned(),
            ),
            1 => (
                format!("com.example.d{i}.updated"),
                format!("/tenants/t{i}/a"),
                format!("img.r{i}.png"),
            ),
            2 => (
                format!("com.example.d{i}.a"),
                "/s".to_owned(),
                "s".to_owned(),
            ),
            _ => (
                format!("com.example.d{i}.created"),
                format!("/tenants/t{i}/orders"),
                format!("doc-{k}.pdf"),
            ),
        };
        events.push(format!(
            r#"{{"specversion":"1.0","id":"e{k}","source":"{source}","type":"{ty}","subject":"{subject}","priority":{p},"traced":true}}"#,
            p = k % 5
        ));
    }
    Bytes::from(format!("[{}]", events.join(",")))
}
