//! GitHub deliveries: signature checks and mapping never panic, and a payload signed with a
//! key verifies with that key only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerfish_core::event::{DecodeLimits, decode_batched};
use triggerfish_core::sources::{encode_batch, github};

fuzz_target!(|data: &[u8]| {
    let (header, body) = data.split_at(data.len().min(71));
    let _ = github::verify_signature(b"secret", body, Some(header));
    let signature = github::sign(b"secret", body);
    assert!(github::verify_signature(b"secret", body, Some(signature.as_bytes())).is_ok());
    assert!(github::verify_signature(b"other", body, Some(signature.as_bytes())).is_err());
    for form in [false, true] {
        let Ok(payload) = github::payload_of(body, form) else { continue };
        if let Ok(delivery) = github::map_delivery("push", "d-1", &payload) {
            let limits = DecodeLimits { max_event_bytes: usize::MAX, max_batch_events: 1 };
            let _ = decode_batched(encode_batch(&[delivery.event]), &limits);
        }
    }
});
