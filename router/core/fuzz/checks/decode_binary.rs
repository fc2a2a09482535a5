//! Binary-mode decoding from headers: the input is `name: value` lines, a blank line, then the
//! body. Never panics; what we accept re-encodes to headers that decode to the same event.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use triggerfish_core::event::{DecodeLimits, EncodeOptions, decode_binary, encode_binary};

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let limits = DecodeLimits::default();
    let Ok(batch) = decode_binary(&headers, Bytes::copy_from_slice(body), &limits) else {
        return;
    };
    let view = batch.get(0).expect("one event");
    let (h2, b2) = encode_binary(&view, &EncodeOptions::default());
    let again = decode_binary(&h2, b2, &limits).expect("our own encoding decodes");
    let view2 = again.get(0).expect("one event");
    assert_eq!(
        (view.id(), view.source(), view.ty()),
        (view2.id(), view2.source(), view2.ty())
    );
    assert_eq!(
        view.extensions().collect::<Vec<_>>(),
        view2.extensions().collect::<Vec<_>>()
    );
    assert_eq!(view.data().to_bytes(), view2.data().to_bytes());
}
