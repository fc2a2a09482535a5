//! Matching events against a broker's triggers: the compiled index against the naive baseline
//! (a linear scan evaluating every trigger on an owned `cloudevents::Event`), in the same run,
//! at 10, 100, 1,000 and 10,000 triggers of a realistic mix (`trigger_mix_config`). Also the
//! time to build the index, which every config reload pays.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use triggerfish_bench::{events_for_mix, naive, trigger_mix_config};
use triggerfish_core::config::Config;
use triggerfish_core::event::{DecodeLimits, EventBatch, decode_batched};
use triggerfish_core::filter::Filter;
use triggerfish_core::index::{MatchScratch, TriggerIndex};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn compile(config: &Config) -> Vec<Filter> {
    config
        .triggers()
        .iter()
        .map(|t| Filter::from_trigger(config, t).expect("valid filter"))
        .collect()
}

fn events(n: usize, count: usize) -> EventBatch {
    decode_batched(events_for_mix(n, count), &DecodeLimits::default())
        .expect("valid batch")
        .batch
}

fn matching(c: &mut Criterion) {
    for n in SIZES {
        let config = Config::load(&trigger_mix_config(n), "mix.yaml").expect("valid config");
        let index = TriggerIndex::build(compile(&config));
        let batch = events(n, 1000);
        let mut g = c.benchmark_group(format!("match/{n}-triggers"));
        g.throughput(Throughput::Elements(batch.len() as u64));
        let mut scratch = MatchScratch::new();
        let mut out = Vec::with_capacity(64);
        g.bench_function(BenchmarkId::new("triggerfish", "index"), |b| {
            b.iter(|| {
                let mut total = 0;
                for view in batch.iter() {
                    out.clear();
                    index.matches(&view, &mut scratch, &mut out);
                    total += out.len();
                }
                black_box(total)
            })
        });
        // The baseline is slow at large sizes: give it fewer events and samples.
        let naive_count = if n >= 1_000 { 100 } else { 1000 };
        let sdk: Vec<cloudevents::Event> =
            serde_json::from_slice(&events_for_mix(n, naive_count)).expect("valid batch");
        let triggers = naive::triggers(&config);
        g.throughput(Throughput::Elements(sdk.len() as u64));
        if n >= 1_000 {
            g.sample_size(10);
        }
        g.bench_function(
            BenchmarkId::new("naive", "linear scan on cloudevents::Event"),
            |b| {
                b.iter(|| {
                    let mut total = 0;
                    for e in &sdk {
                        total += naive::scan(&triggers, e).len();
                    }
                    black_box(total)
                })
            },
        );
        g.finish();
    }
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("index/build");
    g.sample_size(10);
    for n in [1_000, 10_000] {
        let config = Config::load(&trigger_mix_config(n), "mix.yaml").expect("valid config");
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(TriggerIndex::build(compile(&config)).len()))
        });
    }
    g.finish();
}

criterion_group!(benches, matching, build);
criterion_main!(benches);
