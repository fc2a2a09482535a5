//! Field paths into a YAML document: `spec.filters[1].exact`.

use std::fmt;
use std::str::FromStr;

/// A path from the root of one YAML document to a field in it, such as `spec.filters[1].exact`.
///
/// Errors name fields by path, and the loader finds the line and column of a path in the
/// source. Keys that are not plain identifiers print quoted, so every path prints unambiguously:
/// `metadata.annotations["kafka.eventing.knative.dev/delivery.order"]`. The root prints as an
/// empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A key of a mapping.
    Key(String),
    /// An index into a sequence, from 0.
    Index(usize),
}

impl FieldPath {
    /// The root of a document.
    pub fn root() -> FieldPath {
        FieldPath::default()
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: impl Into<String>) -> FieldPath {
        self.child(Segment::Key(key.into()))
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> FieldPath {
        self.child(Segment::Index(index))
    }

    /// This path extended by one segment.
    pub fn child(&self, segment: Segment) -> FieldPath {
        let mut segments = Vec::with_capacity(self.segments.len() + 1);
        segments.extend_from_slice(&self.segments);
        segments.push(segment);
        FieldPath { segments }
    }

    /// The path one step up, or `None` at the root.
    pub fn parent(&self) -> Option<FieldPath> {
        let (_, init) = self.segments.split_last()?;
        Some(FieldPath {
            segments: init.to_vec(),
        })
    }

    /// The segments from the root down.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether this is the root of the document.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.segments.push(segment);
    }
}

impl From<Vec<Segment>> for FieldPath {
    fn from(segments: Vec<Segment>) -> FieldPath {
        FieldPath { segments }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if is_plain_key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    f.write_str("[\"")?;
                    for c in key.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"]")?;
                }
            }
        }
        Ok(())
    }
}

/// Keys that print bare: ASCII letters, digits, `_` and `-`, not empty.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The error of [`FieldPath::from_str`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?} at byte {at}")]
pub struct FieldPathError {
    /// The text that did not parse.
    pub path: String,
    /// The byte offset of the first character that did not fit.
    pub at: usize,
}

impl FromStr for FieldPath {
    type Err = FieldPathError;

    /// Parses the form [`FieldPath`]'s `Display` writes: `spec.filters[2].cesql`,
    /// `metadata.annotations["a.b/c"]`. The empty string is the root.
    fn from_str(s: &str) -> Result<FieldPath, FieldPathError> {
        let err = |at: usize| FieldPathError {
            path: s.to_owned(),
            at,
        };
        let bytes = s.as_bytes();
        let mut path = FieldPath::root();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'[' if bytes.get(i + 1) == Some(&b'"') => {
                    let mut key = String::new();
                    let mut chars = s[i + 2..].char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((j, '"')) => break i + 2 + j,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, c)) => key.push(c),
                                None => return Err(err(s.len())),
                            },
                            Some((_, c)) => key.push(c),
                            None => return Err(err(s.len())),
                        }
                    };
                    if bytes.get(end + 1) != Some(&b']') {
                        return Err(err(end + 1));
                    }
                    path.push(Segment::Key(key));
                    i = end + 2;
                }
                b'[' => {
                    let close = s[i..].find(']').ok_or_else(|| err(i))? + i;
                    let index = s[i + 1..close].parse().map_err(|_| err(i + 1))?;
                    path.push(Segment::Index(index));
                    i = close + 1;
                }
                b'.' if i > 0 => {
                    i += 1;
                    if matches!(bytes.get(i), None | Some(b'.' | b'[')) {
                        return Err(err(i));
                    }
                }
                _ => {
                    let end = s[i..].find(['.', '[']).map_or(s.len(), |offset| offset + i);
                    if end == i {
                        return Err(err(i));
                    }
                    path.push(Segment::Key(s[i..end].to_owned()));
                    i = end;
                }
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_dots_indices_and_quoted_keys() {
        let path = FieldPath::root()
            .key("spec")
            .key("filters")
            .index(1)
            .key("exact");
        assert_eq!(path.to_string(), "spec.filters[1].exact");
        let path = FieldPath::root()
            .key("metadata")
            .key("annotations")
            .key("kafka.eventing.knative.dev/delivery.order");
        assert_eq!(
            path.to_string(),
            r#"metadata.annotations["kafka.eventing.knative.dev/delivery.order"]"#
        );
        assert_eq!(FieldPath::root().to_string(), "");
        assert_eq!(FieldPath::root().key(r#"a"b"#).to_string(), r#"["a\"b"]"#);
    }

    #[test]
    fn parses_what_it_displays() {
        for text in [
            "",
            "spec",
            "spec.filters[1].exact",
            "spec.filters[2].all[0].cesql",
            r#"metadata.annotations["kafka.eventing.knative.dev/delivery.order"]"#,
            r#"a["x\"y"].b"#,
            "[3]",
        ] {
            let path: FieldPath = text.parse().unwrap();
            assert_eq!(path.to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for text in ["spec..x", "a[", "a[x]", r#"a["x"#, ".a"] {
            assert!(text.parse::<FieldPath>().is_err(), "{text}");
        }
    }

    #[test]
    fn parent_walks_up() {
        let path: FieldPath = "spec.filters[1]".parse().unwrap();
        assert_eq!(path.parent().unwrap().to_string(), "spec.filters");
        assert_eq!(FieldPath::root().parent(), None);
    }
}
