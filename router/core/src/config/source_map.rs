//! Where each node of each YAML document sits in the source text.
//!
//! serde deserializes into typed structs and forgets positions, but errors found after that
//! (a filter with two dialects, a trigger whose broker does not exist, a CESQL expression that
//! does not compile) still need a line and column. The source map is built by a second pass
//! over the text with `saphyr-parser`'s event stream, which carries a span for every node, and
//! maps each [`FieldPath`] to the position of its key and of its value.
//!
//! It is best effort by design: both parsers follow YAML 1.2 and split documents at the same
//! `---` markers, but if they ever disagree, or the text does not scan, a lookup finds nothing
//! and the error is reported without a position rather than with a wrong one.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, Span};

use crate::config::path::{FieldPath, Segment};

/// A position in the source text: line and column, both from 1. Columns count characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The positions of one node: the key that names it (for mapping entries) and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLocation {
    /// Where the key starts, for an entry of a mapping.
    pub key: Option<Location>,
    /// Where the value starts: the first character of a scalar (its quote, if quoted), or of
    /// a collection.
    pub value: Location,
}

/// Node positions for every document of a source text, in document order.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceMap {
    documents: Vec<DocumentMap>,
}

/// Node positions of one document.
#[derive(Clone, Debug, Default)]
pub(crate) struct DocumentMap {
    nodes: HashMap<FieldPath, NodeLocation>,
}

impl SourceMap {
    /// Scans `source`. Stops quietly at the first scan error: whatever was mapped before it
    /// stays usable.
    pub(crate) fn build(source: &str) -> SourceMap {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        while let Some(Ok((event, span))) = parser.next_event() {
            builder.event(event, span);
        }
        SourceMap {
            documents: builder.documents,
        }
    }

    /// The map of document `index` (from 0, counting empty documents too).
    pub(crate) fn document(&self, index: usize) -> Option<&DocumentMap> {
        self.documents.get(index)
    }

    /// Takes the map of document `index` out, leaving an empty one: for a caller that moves
    /// each document's map to another `SourceMap` once.
    pub(crate) fn take(&mut self, index: usize) -> Option<DocumentMap> {
        self.documents.get_mut(index).map(std::mem::take)
    }

    /// Appends a document map; returns its index.
    pub(crate) fn push(&mut self, document: DocumentMap) -> usize {
        self.documents.push(document);
        self.documents.len() - 1
    }
}

impl DocumentMap {
    /// The part of this map below `base`, with paths from `base`: the map of one item of a
    /// `List` document, as if it were a document of its own.
    pub(crate) fn subtree(&self, base: &FieldPath) -> DocumentMap {
        let depth = base.segments().len();
        let nodes = self
            .nodes
            .iter()
            .filter(|(path, _)| path.segments().starts_with(base.segments()))
            .map(|(path, node)| {
                let mut relative = FieldPath::root();
                for segment in &path.segments()[depth..] {
                    relative.push(segment.clone());
                }
                (relative, *node)
            })
            .collect();
        DocumentMap { nodes }
    }

    /// The positions of the node at `path`, if it exists in the text.
    pub(crate) fn node(&self, path: &FieldPath) -> Option<NodeLocation> {
        self.nodes.get(path).copied()
    }

    /// Where an error about `path` should point: the key of the field if it has one, else its
    /// value; if `path` is not in the text (a missing field), the nearest ancestor that is.
    pub(crate) fn locate(&self, path: &FieldPath) -> Option<Location> {
        let mut path = path.clone();
        loop {
            if let Some(node) = self.node(&path) {
                return Some(node.key.unwrap_or(node.value));
            }
            path = path.parent()?;
        }
    }
}

#[derive(Default)]
struct Builder {
    documents: Vec<DocumentMap>,
    stack: Vec<Frame>,
}

/// An open collection while walking the event stream.
enum Frame {
    Mapping {
        path: FieldPath,
        /// The key just read, waiting for its value. `None` while a key is expected.
        key: Option<(Segment, Location)>,
        /// Inside a complex (non-scalar) key: nothing below it is recorded.
        ignored: bool,
    },
    Sequence {
        path: FieldPath,
        next: usize,
        ignored: bool,
    },
}

/// Where a node sits relative to its parent.
enum Slot {
    /// A value at this path.
    Value(FieldPath, Option<Location>),
    /// A mapping key (scalar keys become path segments, others are ignored).
    Key,
    /// Below a complex key.
    Ignored,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) {
        let at = Location {
            line: saturate(span.start.line()),
            column: saturate(span.start.col() + 1),
        };
        match event {
            Event::DocumentStart(_) => {
                self.stack.clear();
                self.documents.push(DocumentMap::default());
            }
            Event::Scalar(value, ..) => match self.slot() {
                Slot::Value(path, key) => self.record(path, key, at),
                Slot::Key => self.set_key(Segment::Key(value.into_owned()), at),
                Slot::Ignored => {}
            },
            Event::Alias(_) => match self.slot() {
                Slot::Value(path, key) => self.record(path, key, at),
                Slot::Key => self.set_key(Segment::Key(String::new()), at),
                Slot::Ignored => {}
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let (path, ignored) = match self.slot() {
                    Slot::Value(path, key) => {
                        self.record(path.clone(), key, at);
                        (path, false)
                    }
                    Slot::Key | Slot::Ignored => (FieldPath::root(), true),
                };
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping {
                            path,
                            key: None,
                            ignored,
                        }
                    } else {
                        Frame::Sequence {
                            path,
                            next: 0,
                            ignored,
                        }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let closed = self.stack.pop();
                // A collection used as a mapping key is complete: its mapping now wants the
                // value, which has no usable path either.
                if let Some(
                    Frame::Mapping { ignored: true, .. } | Frame::Sequence { ignored: true, .. },
                ) = closed
                    && let Some(Frame::Mapping {
                        key: key @ None,
                        ignored: false,
                        ..
                    }) = self.stack.last_mut()
                {
                    *key = Some((Segment::Key(String::new()), at));
                }
            }
            Event::DocumentEnd | Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }

    /// Works out where the next node goes, and advances the parent past it.
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value(FieldPath::root(), None),
            Some(Frame::Mapping { ignored: true, .. } | Frame::Sequence { ignored: true, .. }) => {
                Slot::Ignored
            }
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                None => Slot::Key,
                Some((segment, key_at)) => Slot::Value(path.child(segment), Some(key_at)),
            },
            Some(Frame::Sequence { path, next, .. }) => {
                let index = *next;
                *next += 1;
                Slot::Value(path.index(index), None)
            }
        }
    }

    fn set_key(&mut self, segment: Segment, at: Location) {
        if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
            *key = Some((segment, at));
        }
    }

    fn record(&mut self, path: FieldPath, key: Option<Location>, value: Location) {
        if let Some(document) = self.documents.last_mut() {
            // The first occurrence wins; the YAML loader rejects duplicate keys anyway.
            document
                .nodes
                .entry(path)
                .or_insert(NodeLocation { key, value });
        }
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, column: u32) -> Location {
        Location { line, column }
    }

    fn path(text: &str) -> FieldPath {
        text.parse().unwrap()
    }

    const SOURCE: &str = "\
apiVersion: eventing.knative.dev/v1
kind: Trigger
spec:
  filters:
    - exact:
        type: x
      # a comment
    - cesql: \"a = 'b'\"
  flow: {a: 1, b: [x, y]}
---
kind: Broker
";

    #[test]
    fn maps_keys_values_and_items() {
        let map = SourceMap::build(SOURCE);
        let doc = map.document(0).unwrap();
        assert_eq!(
            doc.node(&path("kind")),
            Some(NodeLocation {
                key: Some(at(2, 1)),
                value: at(2, 7)
            })
        );
        assert_eq!(doc.node(&path("spec.filters[0]")).unwrap().value, at(5, 7));
        assert_eq!(doc.node(&path("spec.filters[0]")).unwrap().key, None);
        assert_eq!(
            doc.locate(&path("spec.filters[0].exact.type")),
            Some(at(6, 9))
        );
        assert_eq!(
            doc.node(&path("spec.filters[1].cesql")).unwrap().value,
            at(8, 14)
        );
        assert_eq!(doc.locate(&path("spec.flow.b[1]")), Some(at(9, 23)));
        assert_eq!(doc.locate(&path("")), Some(at(1, 1)));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let map = SourceMap::build(SOURCE);
        let doc = map.document(0).unwrap();
        assert_eq!(doc.locate(&path("spec.broker")), Some(at(3, 1)));
        assert_eq!(doc.locate(&path("spec.filters[7].exact")), Some(at(4, 3)));
    }

    #[test]
    fn documents_are_counted_like_the_yaml_loader() {
        let map = SourceMap::build(SOURCE);
        assert_eq!(
            map.document(1).unwrap().locate(&path("kind")),
            Some(at(11, 1))
        );
        assert!(map.document(2).is_none());

        let map = SourceMap::build("---\n---\na: 1\n");
        assert!(map.document(0).unwrap().node(&path("a")).is_none());
        assert_eq!(map.document(1).unwrap().locate(&path("a")), Some(at(3, 1)));
    }

    #[test]
    fn complex_keys_and_aliases_do_not_confuse_paths() {
        let source = "? [a, b]\n: 1\nc: &x {d: 2}\ne: *x\nf: 3\n";
        let map = SourceMap::build(source);
        let doc = map.document(0).unwrap();
        assert_eq!(doc.locate(&path("c.d")), Some(at(3, 8)));
        assert_eq!(doc.locate(&path("e")), Some(at(4, 1)));
        assert_eq!(doc.locate(&path("f")), Some(at(5, 1)));
    }

    #[test]
    fn a_scan_error_keeps_what_was_mapped() {
        let map = SourceMap::build("a: 1\nb: [x\n");
        assert_eq!(map.document(0).unwrap().locate(&path("a")), Some(at(1, 1)));
    }
}
