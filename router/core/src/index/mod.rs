//! The compiled trigger index: all triggers of a broker, matched against an event at once.
//!
//! Each trigger's filter yields a set of *alternatives* (see
//! [`Filter::index_alternatives`]): string constraints of which at least one holds for every
//! event the filter passes. The trigger is registered under each of them, per attribute, in
//! - a hash map from exact value to triggers,
//! - a byte trie of prefixes, and
//! - a byte trie of reversed suffixes.
//!
//! Matching an event probes each indexed attribute once (one hash lookup and two trie walks
//! bounded by the value's length), collects the triggers found as candidates, adds the few
//! triggers that could not be indexed (after a cheap check that their required attributes are
//! present), and evaluates the full filter of each candidate in config order. A trigger whose
//! filter is nothing more than its alternatives is not evaluated again. The cost depends on the
//! number of candidates, not on the number of triggers.
//!
//! Matching allocates nothing: scratch space lives in a [`MatchScratch`] the caller reuses.
//!
//! What this module does not do: decide what happens to a match (delivery queues), or hold
//! more than the filters (trigger names and subscribers live with the runtime).

use std::collections::BTreeMap;
use std::ops::Range;

use ahash::AHashMap;

use crate::event::EventView;
use crate::filter::{AttrKey, Constraint, Filter, MatchKind};

/// Position of a trigger in the index: its index in the list the index was built from.
pub type TriggerId = u32;

/// All triggers of a broker, compiled for matching.
#[derive(Debug)]
pub struct TriggerIndex {
    triggers: Vec<Entry>,
    attrs: Vec<AttrIndex>,
    postings: Vec<TriggerId>,
    /// Triggers the index cannot narrow down, in order.
    scan: Vec<TriggerId>,
}

#[derive(Debug)]
struct Entry {
    filter: Filter,
    /// The filter is exactly the disjunction of the constraints it is registered under, so a
    /// hit in the index is a match.
    decided_by_index: bool,
    /// For scanned triggers: attributes that must be present for the filter to pass.
    required: Vec<AttrKey>,
}

#[derive(Debug)]
struct AttrIndex {
    attr: AttrKey,
    exact: AHashMap<Box<str>, Range<u32>>,
    prefix: Trie,
    suffix: Trie,
}

/// Reusable scratch space for [`TriggerIndex::matches`].
#[derive(Debug, Default)]
pub struct MatchScratch {
    seen: Vec<u32>,
    generation: u32,
    candidates: Vec<TriggerId>,
}

impl MatchScratch {
    /// Empty scratch space; it grows to the size of the largest index it is used with.
    pub fn new() -> MatchScratch {
        MatchScratch::default()
    }

    fn start(&mut self, triggers: usize) {
        if self.seen.len() < triggers {
            self.seen.resize(triggers, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped around: forget every mark made 2^32 matches ago.
            self.seen.fill(0);
            self.generation = 1;
        }
        self.candidates.clear();
    }

    #[inline]
    fn add(&mut self, id: TriggerId) {
        let mark = &mut self.seen[id as usize];
        if *mark != self.generation {
            *mark = self.generation;
            self.candidates.push(id);
        }
    }
}

impl TriggerIndex {
    /// Compiles the filters of a broker's triggers, in config order.
    pub fn build(filters: impl IntoIterator<Item = Filter>) -> TriggerIndex {
        let mut builders: BTreeMap<AttrKey, AttrBuilder> = BTreeMap::new();
        let mut triggers = Vec::new();
        let mut scan = Vec::new();
        for (id, filter) in filters.into_iter().enumerate() {
            let id = id as TriggerId;
            let alternatives = filter.index_alternatives();
            let decided_by_index = alternatives
                .as_ref()
                .is_some_and(|alts| is_exactly(&filter, alts));
            let required = match &alternatives {
                Some(alts) => {
                    for c in alts {
                        builders.entry(c.attr.clone()).or_default().add(c, id);
                    }
                    Vec::new()
                }
                None => {
                    scan.push(id);
                    filter.required_attributes()
                }
            };
            triggers.push(Entry {
                filter,
                decided_by_index,
                required,
            });
        }
        let mut postings = Vec::new();
        let attrs = builders
            .into_iter()
            .map(|(attr, b)| b.finish(attr, &mut postings))
            .collect();
        TriggerIndex {
            triggers,
            attrs,
            postings,
            scan,
        }
    }

    /// Number of triggers.
    pub fn len(&self) -> usize {
        self.triggers.len()
    }

    /// Whether the index holds no triggers.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// The filter of trigger `id`.
    pub fn filter(&self, id: TriggerId) -> Option<&Filter> {
        self.triggers.get(id as usize).map(|e| &e.filter)
    }

    /// Number of triggers the index cannot narrow down (evaluated for every event).
    pub fn scanned(&self) -> usize {
        self.scan.len()
    }

    /// Appends the ids of the triggers whose filters pass `event` to `out`, in ascending
    /// (config) order. Allocates nothing once `scratch` and `out` have grown to size.
    pub fn matches(
        &self,
        event: &EventView<'_>,
        scratch: &mut MatchScratch,
        out: &mut Vec<TriggerId>,
    ) {
        scratch.start(self.triggers.len());
        for attr in &self.attrs {
            let Some(value) = attr.attr.get(event) else {
                continue;
            };
            value.with_canonical_str(|v| {
                if !attr.exact.is_empty()
                    && let Some(r) = attr.exact.get(v)
                {
                    for &id in &self.postings[r.start as usize..r.end as usize] {
                        scratch.add(id);
                    }
                }
                if !attr.prefix.is_empty() {
                    attr.prefix.walk(v.bytes(), |r| {
                        for &id in &self.postings[r] {
                            scratch.add(id);
                        }
                    });
                }
                if !attr.suffix.is_empty() {
                    attr.suffix.walk(v.bytes().rev(), |r| {
                        for &id in &self.postings[r] {
                            scratch.add(id);
                        }
                    });
                }
            });
        }
        for &id in &self.scan {
            let entry = &self.triggers[id as usize];
            if entry.required.iter().all(|k| k.get(event).is_some()) {
                scratch.add(id);
            }
        }
        scratch.candidates.sort_unstable();
        for &id in &scratch.candidates {
            let entry = &self.triggers[id as usize];
            if entry.decided_by_index || entry.filter.matches(event) {
                out.push(id);
            }
        }
    }
}

/// Whether `filter` passes exactly the events that satisfy one of `alts`.
fn is_exactly(filter: &Filter, alts: &[Constraint]) -> bool {
    match filter {
        Filter::Constraints(cs) => cs.len() == 1 && alts.len() == 1 && cs[0] == alts[0],
        Filter::Any(fs) => {
            fs.len() == alts.len()
                && fs.iter().zip(alts).all(
                    |(f, a)| matches!(f, Filter::Constraints(cs) if cs.len() == 1 && cs[0] == *a),
                )
        }
        _ => false,
    }
}

#[derive(Default)]
struct AttrBuilder {
    exact: BTreeMap<Box<str>, Vec<TriggerId>>,
    prefix: TrieBuilder,
    suffix: TrieBuilder,
}

impl AttrBuilder {
    fn add(&mut self, c: &Constraint, id: TriggerId) {
        match c.kind {
            MatchKind::Exact => self.exact.entry(c.value.clone()).or_default().push(id),
            MatchKind::Prefix => self.prefix.insert(c.value.bytes(), id),
            MatchKind::Suffix => self.suffix.insert(c.value.bytes().rev(), id),
        }
    }

    fn finish(self, attr: AttrKey, postings: &mut Vec<TriggerId>) -> AttrIndex {
        let mut exact = AHashMap::with_capacity(self.exact.len());
        for (value, mut ids) in self.exact {
            ids.dedup();
            let start = postings.len() as u32;
            postings.extend(ids);
            exact.insert(value, start..postings.len() as u32);
        }
        AttrIndex {
            attr,
            exact,
            prefix: self.prefix.finish(postings),
            suffix: self.suffix.finish(postings),
        }
    }
}

/// A byte trie flattened into arrays: nodes, their sorted outgoing edges, and trigger ranges
/// into the index's shared postings list.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<TrieNode>,
    edges: Vec<(u8, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct TrieNode {
    edges: (u32, u32),
    postings: (u32, u32),
}

impl Trie {
    /// Whether no string is stored.
    fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Walks the trie along `bytes`, calling `hit` with the postings of every node passed
    /// (every stored string that is a prefix of `bytes`).
    #[inline]
    fn walk(&self, bytes: impl Iterator<Item = u8>, mut hit: impl FnMut(Range<usize>)) {
        let Some(mut node) = self.nodes.first().copied() else {
            return;
        };
        for b in bytes {
            let edges = &self.edges[node.edges.0 as usize..node.edges.1 as usize];
            let Ok(i) = edges.binary_search_by_key(&b, |e| e.0) else {
                return;
            };
            node = self.nodes[edges[i].1 as usize];
            if node.postings.0 != node.postings.1 {
                hit(node.postings.0 as usize..node.postings.1 as usize);
            }
        }
    }
}

#[derive(Default)]
struct TrieBuilder {
    nodes: Vec<(BTreeMap<u8, usize>, Vec<TriggerId>)>,
}

impl TrieBuilder {
    fn insert(&mut self, bytes: impl Iterator<Item = u8>, id: TriggerId) {
        if self.nodes.is_empty() {
            self.nodes.push(Default::default());
        }
        let mut node = 0;
        for b in bytes {
            let next = self.nodes.len();
            let child = *self.nodes[node].0.entry(b).or_insert(next);
            if child == next {
                self.nodes.push(Default::default());
            }
            node = child;
        }
        let ids = &mut self.nodes[node].1;
        if ids.last() != Some(&id) {
            ids.push(id);
        }
    }

    fn finish(self, postings: &mut Vec<TriggerId>) -> Trie {
        let mut trie = Trie {
            nodes: Vec::with_capacity(self.nodes.len()),
            edges: Vec::new(),
        };
        for (children, ids) in &self.nodes {
            let start = trie.edges.len() as u32;
            trie.edges
                .extend(children.iter().map(|(&b, &c)| (b, c as u32)));
            let p = postings.len() as u32;
            postings.extend(ids);
            trie.nodes.push(TrieNode {
                edges: (start, trie.edges.len() as u32),
                postings: (p, postings.len() as u32),
            });
        }
        trie
    }
}

#[cfg(test)]
mod tests;
