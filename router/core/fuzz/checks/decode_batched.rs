//! Batched-mode decoding: never panics; accepted and rejected events add up to the array's
//! length; every accepted event survives a batched re-encode, also once stamped with an
//! arrival time (which then replaces any `knativearrivaltime` of its own).

use bytes::Bytes;
use triggerfish_core::event::{
    ARRIVAL_EXTENSION, ArrivalTime, AttrValue, DecodeLimits, EncodeOptions, decode_batched,
    encode_batched,
};

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
    let mut stamped = decoded.batch.clone();
    let at = ArrivalTime::from(std::time::SystemTime::UNIX_EPOCH);
    stamped.stamp_arrival(at);
    // The stamp makes each event larger on the wire.
    let grown = DecodeLimits {
        max_event_bytes: limits.max_event_bytes + 64,
        ..limits
    };
    let again = decode_batched(
        encode_batched(stamped.iter(), &EncodeOptions::default()),
        &grown,
    )
    .expect("our own encoding of stamped events decodes");
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    assert_eq!(again.batch.len(), decoded.batch.len());
    for (a, b) in decoded.batch.iter().zip(again.batch.iter()) {
        assert_eq!((a.id(), a.source(), a.ty()), (b.id(), b.source(), b.ty()));
        assert_eq!(a.data().to_bytes(), b.data().to_bytes());
        let arrivals: Vec<_> = b
            .extensions()
            .filter(|(name, _)| *name == ARRIVAL_EXTENSION)
            .collect();
        assert_eq!(arrivals, [(ARRIVAL_EXTENSION, AttrValue::Str(at.as_str()))]);
    }
}
