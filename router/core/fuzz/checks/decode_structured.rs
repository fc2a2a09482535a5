//! Structured-mode decoding: never panics; what we accept re-encodes and decodes to the same
//! event; when the SDK accepts the same bytes, it agrees on the required attributes.

use bytes::Bytes;
use triggerfish_core::event::{DecodeLimits, EncodeOptions, decode_structured, encode_structured};

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let limits = DecodeLimits::default();
    let Ok(batch) = decode_structured(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let view = batch
        .get(0)
        .expect("a decoded structured body holds one event");
    let again = decode_structured(encode_structured(&view, &EncodeOptions::default()), &limits)
        .expect("our own encoding of an accepted event decodes");
    let view2 = again.get(0).expect("one event");
    assert_eq!(
        (view.id(), view.source(), view.ty()),
        (view2.id(), view2.source(), view2.ty())
    );
    assert_eq!(view.data().to_bytes(), view2.data().to_bytes());
    if let Ok(sdk) = serde_json::from_slice::<cloudevents::Event>(data) {
        use cloudevents::AttributesReader as _;
        assert_eq!(sdk.id(), view.id());
        assert_eq!(sdk.ty(), view.ty());
    }
}
