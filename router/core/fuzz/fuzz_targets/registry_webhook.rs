//! Registry webhooks: detection and both parsers never panic; events are image pushes with a
//! subject.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::sources::{encode_batch, registry};

fuzz_target!(|data: &[u8]| {
    let _ = registry::detect(Some(registry::DISTRIBUTION_MEDIA_TYPE), data);
    let _ = registry::detect(Some("application/json"), data);
    for format in [registry::Format::Distribution, registry::Format::Acr] {
        let Ok(events) = registry::parse(format, data) else { continue };
        for e in &events {
            assert_eq!(e.ty, registry::TYPE);
            assert!(e.subject.as_deref().is_some_and(|s| !s.is_empty()));
        }
        let limits = DecodeLimits { max_event_bytes: usize::MAX, max_batch_events: usize::MAX };
        let _ = decode_batched(encode_batch(&events), &limits);
    }
});
