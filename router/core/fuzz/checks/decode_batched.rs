//! Batched-mode decoding: never panics; accepted and rejected events add up to the array's
//! length; every accepted event survives a batched re-encode.

use bytes::Bytes;
use triggerfish_core::event::{DecodeLimits, EncodeOptions, decode_batched, encode_batched};

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let limits = DecodeLimits::default();
    let Ok(decoded) = decode_batched(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(items.len(), decoded.batch.len() + decoded.rejected.len());
    }
    let again = decode_batched(
        encode_batched(decoded.batch.iter(), &EncodeOptions::default()),
        &limits,
    )
    .expect("our own encoding decodes");
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    assert_eq!(again.batch.len(), decoded.batch.len());
    for (a, b) in decoded.batch.iter().zip(again.batch.iter()) {
        assert_eq!(
            (a.id(), a.source(), a.ty(), a.subject()),
            (b.id(), b.source(), b.ty(), b.subject())
        );
    }
}
