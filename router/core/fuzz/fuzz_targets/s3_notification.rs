//! S3 notifications: never panics; accepted records map to events whose encoding decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::sources::{encode_batch, s3};

fuzz_target!(|data: &[u8]| {
    let Ok(events) = s3::parse_notification(data) else { return };
    for e in &events {
        assert!(e.ty.starts_with(s3::TYPE_PREFIX));
    }
    let limits = DecodeLimits { max_event_bytes: usize::MAX, max_batch_events: usize::MAX };
    let decoded = decode_batched(encode_batch(&events), &limits).expect("our encoding is a JSON array");
    assert_eq!(decoded.batch.len() + decoded.rejected.len(), events.len());
});
