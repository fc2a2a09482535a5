//! Validation rules shared by every decoder (spec "Type System" and "Context Attributes").
//!
//! Decoders call [`validate_event`] once per event with its spec-defined attributes. The checks allocate
//! only to build an error.

use super::attr::{KnownAttr, SpecVersion};
use super::error::DecodeErrorKind;

/// Checks one decoded event: required attributes present and non-empty, typed attributes
/// well-formed, and no disallowed characters in the spec's context attributes.
///
/// Extension values are not checked for control characters. The spec's `String` type forbids
/// them, but the CloudEvents conformance vectors themselves send an extension holding a
/// multi-line JSON string, and every SDK accepts it; rejecting it would break existing
/// producers for no routing benefit (extensions are never parsed as URIs or timestamps, and
/// every encoder escapes controls on the way out).
pub(crate) fn validate_event(
    version: SpecVersion,
    known: &[Option<&str>; KnownAttr::COUNT],
) -> Result<(), DecodeErrorKind> {
    for attr in [KnownAttr::Id, KnownAttr::Source, KnownAttr::Type] {
        match known[attr as usize] {
            None => return Err(DecodeErrorKind::MissingAttribute(attr.name())),
            Some("") => return Err(DecodeErrorKind::EmptyAttribute(attr.name())),
            Some(_) => {}
        }
    }
    for attr in KnownAttr::ALL {
        let Some(value) = known[attr as usize] else {
            continue;
        };
        check_chars(attr.name_in(version), value)?;
        match attr {
            KnownAttr::Source => check_uri(attr.name(), value, UriKind::Reference)?,
            KnownAttr::Time => check_timestamp(attr.name(), value)?,
            KnownAttr::DataSchema => {
                let kind = match version {
                    SpecVersion::V10 => UriKind::Absolute,
                    SpecVersion::V03 => UriKind::Reference,
                };
                if value.is_empty() {
                    return Err(DecodeErrorKind::EmptyAttribute(attr.name()));
                }
                check_uri(attr.name_in(version), value, kind)?;
            }
            KnownAttr::Subject | KnownAttr::DataContentType if value.is_empty() => {
                return Err(DecodeErrorKind::EmptyAttribute(attr.name()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rejects the characters the spec's `String` type disallows: controls U+0000–001F and
/// U+007F–009F, and Unicode noncharacters. (Surrogates cannot occur in valid UTF-8.)
pub(crate) fn check_chars(attribute: &str, value: &str) -> Result<(), DecodeErrorKind> {
    let bytes = value.as_bytes();
    let ascii_bad = |b: &u8| *b < 0x20 || *b == 0x7f;
    let needs_scan = bytes.iter().any(|b| ascii_bad(b) || *b >= 0xC2);
    if !needs_scan {
        return Ok(());
    }
    for c in value.chars() {
        let cp = c as u32;
        let disallowed = cp < 0x20
            || (0x7f..=0x9f).contains(&cp)
            || (0xFDD0..=0xFDEF).contains(&cp)
            || (cp & 0xFFFE) == 0xFFFE;
        if disallowed {
            return Err(DecodeErrorKind::DisallowedCharacter {
                attribute: attribute.to_owned(),
                codepoint: cp,
            });
        }
    }
    Ok(())
}

/// Checks an RFC 3339 timestamp (`time`).
pub(crate) fn check_timestamp(attribute: &str, value: &str) -> Result<(), DecodeErrorKind> {
    if chrono::DateTime::parse_from_rfc3339(value).is_ok() {
        Ok(())
    } else {
        Err(DecodeErrorKind::InvalidTimestamp {
            attribute: attribute.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Which RFC 3986 production a value must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UriKind {
    /// `URI`: absolute, with a scheme.
    Absolute,
    /// `URI-reference`: a URI or a relative reference.
    Reference,
}

/// Checks a value against RFC 3986's `URI` or `URI-reference` grammar at the character level:
/// only unreserved, reserved and well-formed `%XX` characters, a well-formed scheme when one is
/// present, and no colon in the first segment of a relative reference.
pub(crate) fn check_uri(
    attribute: &str,
    value: &str,
    kind: UriKind,
) -> Result<(), DecodeErrorKind> {
    if is_uri(value.as_bytes(), kind) {
        Ok(())
    } else {
        Err(DecodeErrorKind::InvalidUri {
            attribute: attribute.to_owned(),
            expected: match kind {
                UriKind::Absolute => "URI",
                UriKind::Reference => "URI-reference",
            },
            value: value.to_owned(),
        })
    }
}

fn is_uri(b: &[u8], kind: UriKind) -> bool {
    // Characters allowed anywhere in a URI: unreserved, gen-delims, sub-delims, and '%'.
    fn allowed(c: u8) -> bool {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'/'
                    | b'?'
                    | b'#'
                    | b'['
                    | b']'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !allowed(c) {
            return false;
        }
        if c == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    // The first ':' before any '/', '?' or '#' ends a scheme.
    let first_delim = b
        .iter()
        .position(|&c| matches!(c, b':' | b'/' | b'?' | b'#'));
    let has_scheme = matches!(first_delim, Some(p) if b[p] == b':');
    if has_scheme {
        let p = first_delim.unwrap_or(0);
        let scheme = &b[..p];
        let scheme_ok = !scheme.is_empty()
            && scheme[0].is_ascii_alphabetic()
            && scheme
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        // A relative reference whose first segment has a colon is not a URI-reference either,
        // so an invalid scheme fails both kinds.
        return scheme_ok;
    }
    kind == UriKind::Reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_references() {
        for ok in [
            "/mycontext/subcontext",
            "//github.com/cloudevents/cloudeventsconformance/yaml/v1.yaml",
            "https://example.com/a?b=c#d",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "acs.oss",
            "a%20b",
            "http://[::1]:8080/",
        ] {
            assert!(is_uri(ok.as_bytes(), UriKind::Reference), "{ok}");
        }
        for bad in ["a b", "a%2", "a%zz", "1http://x", ":x", "é", "a\"b", "a%"] {
            assert!(!is_uri(bad.as_bytes(), UriKind::Reference), "{bad}");
        }
        assert!(is_uri(b"https://example.com/schema", UriKind::Absolute));
        assert!(!is_uri(b"/relative", UriKind::Absolute));
    }

    #[test]
    fn disallowed_characters() {
        assert!(check_chars("x", "plain ascii ~").is_ok());
        assert!(check_chars("x", "Euro € 😀").is_ok());
        for (bad, cp) in [
            ("a\u{0}b", 0),
            ("tab\t", 9),
            ("\u{7f}", 0x7f),
            ("\u{85}", 0x85),
            ("\u{FDD0}", 0xFDD0),
            ("\u{FFFF}", 0xFFFF),
            ("\u{1FFFE}", 0x1FFFE),
        ] {
            assert_eq!(
                check_chars("x", bad),
                Err(DecodeErrorKind::DisallowedCharacter {
                    attribute: "x".into(),
                    codepoint: cp
                })
            );
        }
    }

    #[test]
    fn timestamps() {
        assert!(check_timestamp("time", "2018-04-05T03:56:24Z").is_ok());
        assert!(check_timestamp("time", "2018-04-26T14:48:09.123+02:00").is_ok());
        assert!(check_timestamp("time", "2018-04-05 03:56:24").is_err());
        assert!(check_timestamp("time", "yesterday").is_err());
        assert!(check_timestamp("time", "2018-02-30T00:00:00Z").is_err());
    }
}
