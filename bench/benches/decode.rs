//! Decoding CloudEvents: Triggerfish's zero-copy codecs against the official SDK's path, in the
//! same run. Baselines: `serde_json::from_slice::<Vec<cloudevents::Event>>` (batched),
//! `serde_json::from_slice::<cloudevents::Event>` (structured), and the SDK's HTTP binding
//! `cloudevents::binding::http::to_event` (binary).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use triggerfish_bench::{batch_body, binary_event, structured_event};
use triggerfish_core::event::{DecodeLimits, decode_batched, decode_binary, decode_structured};

fn batched(c: &mut Criterion) {
    let body = batch_body(100);
    let limits = DecodeLimits::default();
    for (unit, throughput) in [
        ("events", Throughput::Elements(100)),
        ("bytes", Throughput::Bytes(body.len() as u64)),
    ] {
        let mut g = c.benchmark_group(format!("decode/batched-100/{unit}"));
        g.throughput(throughput);
        g.bench_function(BenchmarkId::new("triggerfish", "simd-json views"), |b| {
            b.iter(|| {
                let d = decode_batched(black_box(body.clone()), &limits).expect("valid batch");
                black_box(d.batch.len())
            })
        });
        g.bench_function(
            BenchmarkId::new("cloudevents-sdk", "serde_json Vec<Event>"),
            |b| {
                b.iter(|| {
                    let v: Vec<cloudevents::Event> =
                        serde_json::from_slice(black_box(&body)).expect("valid batch");
                    black_box(v.len())
                })
            },
        );
        g.finish();
    }
}

fn structured(c: &mut Criterion) {
    let body = Bytes::from(structured_event(42));
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("decode/structured");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("triggerfish", "simd-json views"), |b| {
        b.iter(|| {
            black_box(
                decode_structured(black_box(body.clone()), &limits)
                    .expect("valid event")
                    .len(),
            )
        })
    });
    g.bench_function(
        BenchmarkId::new("cloudevents-sdk", "serde_json Event"),
        |b| {
            b.iter(|| {
                let e: cloudevents::Event =
                    serde_json::from_slice(black_box(&body)).expect("valid event");
                black_box(e)
            })
        },
    );
    g.finish();
}

fn binary(c: &mut Criterion) {
    let (headers, body) = binary_event(42);
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("decode/binary");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("triggerfish", "header views"), |b| {
        b.iter(|| {
            black_box(
                decode_binary(black_box(&headers), body.clone(), &limits)
                    .expect("valid event")
                    .len(),
            )
        })
    });
    g.bench_function(
        BenchmarkId::new("cloudevents-sdk", "http binding to_event"),
        |b| {
            b.iter(|| {
                let e = cloudevents::binding::http::to_event(black_box(&headers), body.to_vec())
                    .expect("valid event");
                black_box(e)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, batched, structured, binary);
criterion_main!(benches);
