//! Object keys that are safe to pass on: a worker may join a key to a local directory, so a key
//! that climbs out of it (`../`), is absolute, or holds control characters is refused. And keys
//! percent-encoded for records and URIs, as OSS encodes them.

use std::fmt;

/// What [`encode_key`] percent-encodes: everything but unreserved characters and `/`.
const KEY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `key` percent-encoded as OSS encodes keys in its notifications, and as a key goes into an
/// `s3://bucket/key` URI: every byte but unreserved characters and `/` (`a b%.mp4` is
/// `a%20b%25.mp4`). Percent-decoding gives the key back.
pub fn encode_key(key: &str) -> impl fmt::Display + '_ {
    percent_encoding::utf8_percent_encode(key, KEY_ENCODE)
}

/// The longest key, in bytes: OSS's and S3's limit.
pub const MAX_KEY_BYTES: usize = 1023;

/// Why an object key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The record has no key, or an empty one.
    #[error("the object key is missing or empty")]
    Missing,
    /// The key starts with `/`.
    #[error("the object key {0:?} is absolute")]
    Absolute(String),
    /// A segment of the key is `..`.
    #[error("the object key {0:?} has a \"..\" segment")]
    DotDot(String),
    /// The key holds a control character (NUL, newline, ...).
    #[error("the object key {0:?} holds a control character")]
    Control(String),
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("the object key is {0} bytes long; the limit is 1023")]
    TooLong(usize),
}

/// Checks an object key (already URL-decoded).
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Missing);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.starts_with('/') || key.starts_with('\\') {
        return Err(KeyError::Absolute(key.to_owned()));
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control(key.to_owned()));
    }
    if key.split(['/', '\\']).any(|segment| segment == "..") {
        return Err(KeyError::DotDot(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_leave_the_bucket() {
        assert!(check_key("media/a b.mp4").is_ok());
        assert!(check_key("a..b/c..").is_ok());
        assert_eq!(check_key(""), Err(KeyError::Missing));
        assert!(matches!(
            check_key("../etc/passwd"),
            Err(KeyError::DotDot(_))
        ));
        assert!(matches!(check_key("a/../../b"), Err(KeyError::DotDot(_))));
        assert!(matches!(check_key("a\\..\\b"), Err(KeyError::DotDot(_))));
        assert!(matches!(check_key("a/.."), Err(KeyError::DotDot(_))));
        assert!(matches!(
            check_key("/etc/passwd"),
            Err(KeyError::Absolute(_))
        ));
        assert!(matches!(check_key("a\nb"), Err(KeyError::Control(_))));
        assert!(matches!(
            check_key(&"k".repeat(1024)),
            Err(KeyError::TooLong(1024))
        ));
    }
}
