//! Benchmark tooling for Triggerfish.
//!
//! - fixtures for the criterion benches: realistic CloudEvents in each content mode, generated
//!   deterministically ([`structured_event`], [`batch_body`], [`binary_event`]);
//! - [`loadgen`]: the load generator and sink behind the `tf-loadgen` binary;
//! - [`benchconfig`]: the Knative configs the broker benchmarks run on (`tf-benchconfig`).
//!
//! The baseline router the broker benchmarks compare against is a separate crate,
//! `bench/peers/naive-router`, outside the workspace.

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
