//! Knative trigger filters, compiled: `filter.attributes` and the SubscriptionsAPI dialects
//! (`exact`, `prefix`, `suffix`, `all`, `any`, `not`, `cesql`).
//!
//! A [`Filter`] is the runtime form of one trigger's filter. It cannot be invalid: building one
//! (see [`Filter::from_trigger`]) rejects what Knative would silently accept and then pass
//! every event through. Evaluation reads attributes straight from an [`EventView`] and allocates
//! nothing (CESQL string functions aside).
//!
//! Semantics, and where they differ from knative/eventing `pkg/eventfilter`:
//! - `filter.attributes`: every entry must match, exactly and case-sensitively; the value `""`
//!   means "present and non-empty". Knative's code builds a map in which the spec-defined
//!   attributes always exist (absent ones as empty strings), so there `subject: ""` matches an
//!   event without a subject; its documentation says "any value". We follow the documented
//!   meaning strictly: an absent attribute never matches.
//! - `exact`, `prefix`, `suffix`: every entry must match; a missing attribute fails. Integer
//!   and boolean extensions compare as their canonical strings (`42`, `true`); Knative's exact
//!   filter compares a Go `int32` with a string and never matches them.
//! - `time` compares as the RFC 3339 string the producer sent; Knative formats a Go
//!   `time.Time` (`2018-04-05 03:56:24 +0000 UTC`), which no user writes in a filter.
//! - `all` passes when every element passes; `any` when one does; `not` inverts.
//! - `cesql`: passes only when the expression evaluates to `true` without error (a missing
//!   attribute is an error, so it fails), as Knative does.
//! - Stricter than Knative, at load time: empty values in `exact`/`prefix`/`suffix`, empty
//!   `all`/`any` lists, and CESQL that does not compile are errors; Knative turns each into a
//!   filter that passes everything.
//!
//! `filter` and `filters` (Knative): a non-empty `filters` list replaces `filter.attributes`;
//! an empty one, with no `filter`, passes everything.
//!
//! What this module does not do: choose which triggers to evaluate. That is the
//! [`crate::index`]'s job; it calls [`Filter::matches`] only for candidates.

use crate::cesql::{Expression, Type};
use crate::config::{self, Config, ConfigError, FilterExpr, ResourceId, Trigger};
use crate::event::{AttrValue, EventView, KnownAttr};

/// An attribute a filter reads: a spec-defined one (fixed slot) or an extension (by name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrKey {
    /// A context attribute defined by the spec.
    Known(KnownAttr),
    /// An extension attribute.
    Extension(Box<str>),
}

impl AttrKey {
    /// The key for an attribute name. `schemaurl` (spec 0.3) is an alias of `dataschema`.
    pub fn new(name: &str) -> AttrKey {
        match KnownAttr::from_name(name) {
            Some(k) => AttrKey::Known(k),
            None if name == "schemaurl" => AttrKey::Known(KnownAttr::DataSchema),
            None => AttrKey::Extension(name.into()),
        }
    }

    /// The attribute's name.
    pub fn name(&self) -> &str {
        match self {
            AttrKey::Known(k) => k.name(),
            AttrKey::Extension(n) => n,
        }
    }

    /// Reads the attribute from an event.
    #[inline]
    pub fn get<'a>(&self, event: &EventView<'a>) -> Option<AttrValue<'a>> {
        match self {
            AttrKey::Known(k) => event.known(*k).map(AttrValue::Str),
            AttrKey::Extension(n) => event.extension(n),
        }
    }

    /// Calls `f` with the attribute's canonical string, or returns `None` when it is absent.
    #[inline]
    pub fn with_str<R>(&self, event: &EventView<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
        self.get(event).map(|v| v.with_canonical_str(f))
    }
}

/// How a string constraint compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKind {
    /// Equal.
    Exact,
    /// Starts with.
    Prefix,
    /// Ends with.
    Suffix,
}

impl MatchKind {
    /// Whether `value` satisfies the constraint `pattern`.
    #[inline]
    pub fn holds(self, value: &str, pattern: &str) -> bool {
        match self {
            MatchKind::Exact => value == pattern,
            MatchKind::Prefix => value.starts_with(pattern),
            MatchKind::Suffix => value.ends_with(pattern),
        }
    }
}

/// One `attribute: value` entry of a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// The attribute compared.
    pub attr: AttrKey,
    /// How it is compared.
    pub kind: MatchKind,
    /// The value compared against. Never empty.
    pub value: Box<str>,
}

impl Constraint {
    /// Whether the event satisfies the constraint (a missing attribute does not).
    #[inline]
    pub fn holds(&self, event: &EventView<'_>) -> bool {
        self.attr
            .with_str(event, |v| self.kind.holds(v, &self.value))
            .unwrap_or(false)
    }
}

/// A compiled trigger filter.
#[derive(Clone, Debug)]
pub enum Filter {
    /// No filter: every event passes (no `filter`, or an empty `filters` list).
    Everything,
    /// A conjunction of string constraints: `filter.attributes` with non-empty values, `exact`,
    /// `prefix` and `suffix` maps.
    Constraints(Vec<Constraint>),
    /// `filter.attributes` entries with the value `""`: each attribute must be present and
    /// non-empty.
    Present(Vec<AttrKey>),
    /// Every element passes (`filters` itself, and `all`).
    All(Vec<Filter>),
    /// At least one element passes.
    Any(Vec<Filter>),
    /// The element does not pass.
    Not(Box<Filter>),
    /// A CESQL expression that must evaluate to `true` without error.
    Cesql(Box<Expression>),
}

/// Why a CESQL filter was rejected at load time.
#[derive(Debug, thiserror::Error)]
pub enum CesqlFilterError {
    /// The expression does not compile.
    #[error(transparent)]
    Compile(#[from] crate::cesql::CompileError),
    /// The expression always yields an Integer or a String, never `true`.
    #[error("the expression yields {0:?}, but a filter must yield a Boolean")]
    NotBoolean(Type),
}

impl Filter {
    /// Compiles a trigger's `filter` / `filters` from the validated config. CESQL errors are
    /// reported with the file, line, trigger and field path, like every config error.
    pub fn from_trigger(config: &Config, trigger: &Trigger) -> Result<Filter, Box<ConfigError>> {
        if !trigger.filters.is_empty() {
            return Filter::from_filters(config, &trigger.id, &trigger.filters);
        }
        let mut constraints = Vec::new();
        let mut present = Vec::new();
        for (name, value) in &trigger.attributes {
            if value.is_empty() {
                present.push(AttrKey::new(name));
            } else {
                constraints.push(Constraint {
                    attr: AttrKey::new(name),
                    kind: MatchKind::Exact,
                    value: value.as_str().into(),
                });
            }
        }
        let mut parts = Vec::new();
        if !constraints.is_empty() {
            parts.push(Filter::Constraints(constraints));
        }
        if !present.is_empty() {
            parts.push(Filter::Present(present));
        }
        Ok(Filter::all(parts))
    }

    /// Compiles a validated `filters` list (an implicit `all`) of resource `id`: a trigger's,
    /// or an `EventPolicy`'s.
    pub fn from_filters(
        config: &Config,
        id: &ResourceId,
        filters: &[config::Filter],
    ) -> Result<Filter, Box<ConfigError>> {
        let compiled = filters
            .iter()
            .map(|f| Filter::from_config(config, id, f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter::all(compiled))
    }

    fn from_config(
        config: &Config,
        trigger: &ResourceId,
        filter: &config::Filter,
    ) -> Result<Filter, Box<ConfigError>> {
        let constraint = |attribute: &str, kind, value: &str| {
            Filter::Constraints(vec![Constraint {
                attr: AttrKey::new(attribute),
                kind,
                value: value.into(),
            }])
        };
        let many = |fs: &[config::Filter]| {
            fs.iter()
                .map(|f| Filter::from_config(config, trigger, f))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &filter.expr {
            FilterExpr::Exact { attribute, value } => {
                constraint(attribute, MatchKind::Exact, value)
            }
            FilterExpr::Prefix { attribute, value } => {
                constraint(attribute, MatchKind::Prefix, value)
            }
            FilterExpr::Suffix { attribute, value } => {
                constraint(attribute, MatchKind::Suffix, value)
            }
            FilterExpr::All(fs) => Filter::all(many(fs)?),
            FilterExpr::Any(fs) => Filter::Any(many(fs)?),
            FilterExpr::Not(f) => Filter::Not(Box::new(Filter::from_config(config, trigger, f)?)),
            FilterExpr::Cesql(src) => {
                let fail = |e: CesqlFilterError| {
                    Box::new(config.error_at(trigger, filter.path.key("cesql"), e))
                };
                let expr = Expression::compile(src).map_err(|e| fail(e.into()))?;
                match expr.static_type() {
                    Some(t) if t != Type::Boolean => {
                        return Err(fail(CesqlFilterError::NotBoolean(t)));
                    }
                    _ => Filter::Cesql(Box::new(expr)),
                }
            }
        })
    }

    /// Whether the event passes the filter.
    pub fn matches(&self, event: &EventView<'_>) -> bool {
        match self {
            Filter::Everything => true,
            Filter::Constraints(cs) => cs.iter().all(|c| c.holds(event)),
            Filter::Present(keys) => keys.iter().all(|k| {
                k.get(event)
                    .is_some_and(|v| !matches!(v, AttrValue::Str("")))
            }),
            Filter::All(fs) => fs.iter().all(|f| f.matches(event)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(event)),
            Filter::Not(f) => !f.matches(event),
            Filter::Cesql(e) => e.matches(event),
        }
    }

    /// Builds the conjunction of `filters`, flattening nested conjunctions and dropping
    /// `Everything`.
    pub fn all(filters: Vec<Filter>) -> Filter {
        let mut out = Vec::with_capacity(filters.len());
        let mut constraints = Vec::new();
        for f in filters {
            match f {
                Filter::Everything => {}
                Filter::All(inner) => match Filter::all(inner) {
                    Filter::All(v) => out.extend(v),
                    Filter::Constraints(c) => constraints.extend(c),
                    Filter::Everything => {}
                    other => out.push(other),
                },
                Filter::Constraints(c) => constraints.extend(c),
                other => out.push(other),
            }
        }
        if !constraints.is_empty() {
            out.insert(0, Filter::Constraints(constraints));
        }
        match out.len() {
            0 => Filter::Everything,
            1 => out.pop().unwrap_or(Filter::Everything),
            _ => Filter::All(out),
        }
    }

    /// The string constraints that every passing event satisfies, taken from the filter's
    /// top-level conjunction (including those a CESQL expression implies). The index uses
    /// them; an empty result means the filter cannot be indexed by any single constraint.
    pub fn necessary_constraints(&self) -> Vec<Constraint> {
        let mut out = Vec::new();
        self.collect_necessary(&mut out);
        out
    }

    fn collect_necessary(&self, out: &mut Vec<Constraint>) {
        match self {
            Filter::Constraints(cs) => out.extend(cs.iter().cloned()),
            Filter::All(fs) => fs.iter().for_each(|f| f.collect_necessary(out)),
            Filter::Cesql(e) => {
                for c in e.implied_constraints() {
                    let (kind, value) = match c.kind {
                        crate::cesql::ConstraintKind::Exact(v) => (MatchKind::Exact, v),
                        crate::cesql::ConstraintKind::Prefix(v) => (MatchKind::Prefix, v),
                        crate::cesql::ConstraintKind::Suffix(v) => (MatchKind::Suffix, v),
                    };
                    if !value.is_empty() || kind == MatchKind::Exact {
                        out.push(Constraint {
                            attr: AttrKey::Known(c.attribute),
                            kind,
                            value: value.into(),
                        });
                    }
                }
            }
            Filter::Everything | Filter::Present(_) | Filter::Any(_) | Filter::Not(_) => {}
        }
    }

    /// Attributes every passing event has: a cheap pre-check for filters the index cannot
    /// narrow down.
    pub fn required_attributes(&self) -> Vec<AttrKey> {
        let mut out = Vec::new();
        self.collect_required(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_required(&self, out: &mut Vec<AttrKey>) {
        match self {
            Filter::Constraints(cs) => out.extend(cs.iter().map(|c| c.attr.clone())),
            Filter::Present(keys) => out.extend(keys.iter().cloned()),
            Filter::All(fs) => fs.iter().for_each(|f| f.collect_required(out)),
            Filter::Cesql(e) => {
                out.extend(
                    e.implied_constraints()
                        .into_iter()
                        .map(|c| AttrKey::Known(c.attribute)),
                );
            }
            Filter::Everything | Filter::Any(_) | Filter::Not(_) => {}
        }
    }

    /// Alternatives for the index: constraints of which at least one holds for every passing
    /// event, or `None` when no such set is known. A conjunction picks its most selective
    /// option (one of its constraints, or the alternatives of one `any` inside it); `any`
    /// unions the alternatives of its elements.
    pub fn index_alternatives(&self) -> Option<Vec<Constraint>> {
        match self {
            Filter::Any(fs) => {
                let mut alts = Vec::new();
                for f in fs {
                    alts.extend(f.index_alternatives()?);
                }
                Some(alts)
            }
            Filter::All(fs) => {
                let singles = self.necessary_constraints().into_iter().map(|c| vec![c]);
                let anys = fs
                    .iter()
                    .filter(|f| matches!(f, Filter::Any(_)))
                    .filter_map(Filter::index_alternatives);
                singles.chain(anys).min_by_key(|alts| selectivity(alts))
            }
            Filter::Constraints(_) | Filter::Cesql(_) => self
                .necessary_constraints()
                .into_iter()
                .map(|c| vec![c])
                .min_by_key(|alts| selectivity(alts)),
            Filter::Everything | Filter::Present(_) | Filter::Not(_) => None,
        }
    }
}

/// Orders sets of alternatives from most to least selective: exact before prefix before
/// suffix, fewer alternatives first, longer values first.
fn selectivity(alts: &[Constraint]) -> (MatchKind, usize, std::cmp::Reverse<usize>) {
    let worst = alts
        .iter()
        .map(|c| c.kind)
        .max()
        .unwrap_or(MatchKind::Suffix);
    let shortest = alts.iter().map(|c| c.value.len()).min().unwrap_or(0);
    (worst, alts.len(), std::cmp::Reverse(shortest))
}

#[cfg(test)]
mod tests;
