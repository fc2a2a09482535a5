//! The matching benchmark compares like with like: on the benchmark's trigger mix, the index
//! and the naive scan return the same triggers for every event, and most events match.
#![allow(clippy::unwrap_used)]

use triggerfish_bench::{events_for_mix, naive, trigger_mix_config};
use triggerfish_core::config::Config;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::filter::Filter;
use triggerfish_core::index::{MatchScratch, TriggerIndex};

#[test]
fn index_and_naive_scan_agree_on_the_mix() {
    for n in [10, 100, 1000] {
        let config = Config::load(&trigger_mix_config(n), "mix.yaml").unwrap();
        let filters: Vec<Filter> = config
            .triggers()
            .iter()
            .map(|t| Filter::from_trigger(&config, t).unwrap())
            .collect();
        let index = TriggerIndex::build(filters);
        assert_eq!(
            index.scanned(),
            4,
            "only the four catch-all triggers are scanned"
        );
        let body = events_for_mix(n, 500);
        let batch = decode_batched(body.clone(), &DecodeLimits::default())
            .unwrap()
            .batch;
        let sdk: Vec<cloudevents::Event> = serde_json::from_slice(&body).unwrap();
        let triggers = naive::triggers(&config);
        let mut scratch = MatchScratch::new();
        let mut matched_some_indexed = 0;
        for (view, e) in batch.iter().zip(&sdk) {
            let mut got = Vec::new();
            index.matches(&view, &mut scratch, &mut got);
            let got: Vec<usize> = got.into_iter().map(|i| i as usize).collect();
            assert_eq!(got, naive::scan(&triggers, e), "n={n} event {}", view.id());
            if got.iter().any(|&i| i < n) {
                matched_some_indexed += 1;
            }
        }
        assert!(
            matched_some_indexed >= 200,
            "n={n}: only {matched_some_indexed} of 500 events hit an indexed trigger"
        );
    }
}
