//! Reading validated UTF-8 out of a batch's text buffer without re-validating it.

use bytes::Bytes;

use super::batch::Span;

/// Returns the string at `span` of a batch's text buffer.
///
/// Every span stored in a batch was taken from a `&str` at decode time (simd-json validates and
/// unescapes strings in place; binary-mode values are UTF-8-checked after percent-decoding), and
/// buffers are immutable afterwards, so the bytes are valid UTF-8 and the span lies on character
/// boundaries. Re-validating on every attribute read would put an O(n) scan on the matching hot
/// path; debug builds still check.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn str_at(buf: &Bytes, span: Span) -> &str {
    let bytes = &buf[span.range()];
    debug_assert!(
        std::str::from_utf8(bytes).is_ok(),
        "span {span:?} is not UTF-8"
    );
    // SAFETY: see the function documentation: spans are only ever created from `&str` values
    // that point into this same, immutable buffer.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}
