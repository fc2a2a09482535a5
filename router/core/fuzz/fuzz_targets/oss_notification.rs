//! OSS notifications: never panics; an accepted notification maps one event per record, each
//! with a safe key, that encodes to valid CloudEvents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::sources::{encode_batch, oss};

fuzz_target!(|data: &[u8]| {
    let Ok(events) = oss::parse_notification(data) else { return };
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e.source, oss::SOURCE);
        assert!(e.ty.starts_with(oss::TYPE_PREFIX));
        let subject = e.subject.as_deref().expect("OSS events have a subject");
        assert!(!subject.contains("/../"), "{subject}");
    }
    let limits = DecodeLimits { max_event_bytes: usize::MAX, max_batch_events: usize::MAX };
    let decoded = decode_batched(encode_batch(&events), &limits).expect("our encoding is a JSON array");
    assert_eq!(decoded.batch.len() + decoded.rejected.len(), events.len());
});
