//! Counts heap allocations with a counting global allocator: decoding a batch allocates a fixed
//! number of buffers per batch and none per event, and reading attributes and stamping the
//! broker's arrival time allocate nothing.
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use triggerfish_core::event::{
    ARRIVAL_EXTENSION, ArrivalTime, Attributes, DecodeLimits, decode_batched, decode_binary,
    decode_structured,
};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

#[allow(unsafe_code)]
// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (ALLOCS.with(Cell::get) - before, r)
}

fn event(i: usize) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"evt-{i:06}","source":"/orders/eu-west/{i}","type":"com.example.order.created","subject":"order-{i}","time":"2026-11-29T08:00:00Z","datacontenttype":"application/json","partitionkey":"customer-{k}","priority":{p},"traced":true,"data":{{"order":{i},"items":[{{"sku":"A-1","qty":2}},{{"sku":"B-7","qty":1}}],"note":"esc\"aped"}}}}"#,
        k = i % 17,
        p = i % 5
    )
}

fn batch(n: usize) -> Bytes {
    let events: Vec<String> = (0..n).map(event).collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

#[test]
fn batch_decoding_allocates_per_batch_not_per_event() {
    let limits = DecodeLimits::default();
    let (small, large) = (batch(100), batch(1000));
    // Warm the per-thread parser buffers to the largest size first.
    decode_batched(large.clone(), &limits).unwrap();
    let (a100, d100) = allocations(|| decode_batched(small.clone(), &limits).unwrap());
    let (a1000, d1000) = allocations(|| decode_batched(large.clone(), &limits).unwrap());
    assert_eq!(d100.batch.len(), 100);
    assert_eq!(d1000.batch.len(), 1000);
    assert!(d100.rejected.is_empty() && d1000.rejected.is_empty());
    assert_eq!(
        a100, a1000,
        "allocations must not grow with the number of events"
    );
    // The scratch copy of the body, the event table and the extension table.
    assert!(a100 <= 3, "{a100} allocations per batch");
}

#[test]
fn stamping_the_arrival_time_allocates_nothing() {
    let limits = DecodeLimits::default();
    let mut batch = decode_batched(batch(100), &limits).unwrap().batch;
    let at = ArrivalTime::from(std::time::SystemTime::now());
    let (n, ()) = allocations(|| batch.stamp_arrival(at));
    assert_eq!(n, 0, "stamping allocated {n} times");
    assert!(
        batch
            .iter()
            .all(|e| e.attribute(ARRIVAL_EXTENSION).is_some())
    );
}

#[test]
fn reading_attributes_allocates_nothing() {
    let limits = DecodeLimits::default();
    let decoded = decode_batched(batch(100), &limits).unwrap();
    let (n, total) = allocations(|| {
        let mut total = 0usize;
        for e in decoded.batch.iter() {
            total += e.id().len() + e.source().len() + e.ty().len();
            total += e.subject().map_or(0, str::len);
            total += e
                .attribute("priority")
                .map_or(0, |v| v.with_canonical_str(str::len));
            total += e.with_partition_key(str::len);
            total += e.extensions().count();
            total += e.data().to_bytes().len();
        }
        total
    });
    assert!(total > 0);
    assert_eq!(n, 0, "attribute reads allocated {n} times");
}

#[test]
fn single_event_decoding_allocation_count_is_constant() {
    let limits = DecodeLimits::default();
    let one = Bytes::from(event(1));
    decode_structured(one.clone(), &limits).unwrap();
    let (n, _) = allocations(|| decode_structured(one.clone(), &limits).unwrap());
    assert!(n <= 3, "{n} allocations for one structured event");

    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("ce-a", "x%20y"),
        ("content-type", "application/json"),
    ] {
        headers.insert(k, http::HeaderValue::from_static(v));
    }
    let body = Bytes::from_static(b"{\"a\":1}");
    let (n, _) = allocations(|| decode_binary(&headers, body.clone(), &limits).unwrap());
    // The decoded text buffer, the event table and the extension table.
    assert!(n <= 3, "{n} allocations for one binary event");
}
