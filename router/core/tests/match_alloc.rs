//! Matching allocates nothing: with a counting global allocator, matching events against an
//! index of every filter dialect (CESQL included) makes zero heap allocations once the scratch
//! buffer and the output vector have grown.
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use triggerfish_core::config::Config;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::filter::Filter;
use triggerfish_core::index::{MatchScratch, TriggerIndex};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONFIG: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: attrs}
spec: {broker: default, filter: {attributes: {type: order.created, priority: "3", traced: ""}}, subscriber: {uri: "http://x/"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: dialects}
spec:
  broker: default
  subscriber: {uri: "http://x/"}
  filters:
    - prefix: {source: /orders/}
    - suffix: {subject: .png}
    - any: [{exact: {type: order.created}}, {exact: {type: order.updated}}]
    - not: {exact: {region: us}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: cesql}
spec:
  broker: default
  subscriber: {uri: "http://x/"}
  filters:
    - cesql: "type = 'order.created' AND source LIKE '/orders/%' AND priority > 2 AND EXISTS subject"
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: catch-all}
spec: {broker: default, subscriber: {uri: "http://x/"}}
"#;

#[test]
fn matching_does_not_allocate() {
    let config = Config::load(CONFIG, "alloc.yaml").unwrap();
    let filters: Vec<Filter> = config
        .triggers()
        .iter()
        .map(|t| Filter::from_trigger(&config, t).unwrap())
        .collect();
    let index = TriggerIndex::build(filters);
    let events: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"specversion":"1.0","id":"{i}","source":"/orders/{i}","type":"order.{}","subject":"img-{i}.png","priority":{},"traced":true,"region":"{}"}}"#,
                if i % 2 == 0 { "created" } else { "updated" },
                i % 5,
                if i % 3 == 0 { "us" } else { "eu" }
            )
        })
        .collect();
    let batch = decode_batched(
        Bytes::from(format!("[{}]", events.join(","))),
        &DecodeLimits::default(),
    )
    .unwrap()
    .batch;
    let mut scratch = MatchScratch::new();
    let mut out = Vec::with_capacity(16);
    // Warm up: the scratch space grows to the index's size.
    for view in batch.iter() {
        out.clear();
        index.matches(&view, &mut scratch, &mut out);
    }
    let before = ALLOCS.with(Cell::get);
    let mut matched = 0;
    for _ in 0..5 {
        for view in batch.iter() {
            out.clear();
            index.matches(&view, &mut scratch, &mut out);
            matched += out.len();
        }
    }
    let allocations = ALLOCS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "matching allocated {allocations} times");
    // Every trigger matched something, so every path was exercised.
    assert!(matched > 5 * 200, "{matched}");
}
