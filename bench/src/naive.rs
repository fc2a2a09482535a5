//! The naive matching baseline: what a team writes with the official SDK. Triggers are kept in
//! a list and each event, an owned `cloudevents::Event`, is tested against every trigger in
//! turn, reading attributes as owned strings. Same semantics as Triggerfish's filters (CESQL
//! through the same engine, on the SDK event), none of the indexing.

use cloudevents::{AttributesReader, Event};
use triggerfish_core::cesql::Expression;
use triggerfish_core::config::{Config, FilterExpr, Trigger};
use triggerfish_core::event::{AttrValue, Attributes};

/// One trigger's filter, as the baseline evaluates it.
pub enum NaiveFilter {
    /// `filter.attributes` (`""` = present and non-empty).
    Attributes(Vec<(String, String)>),
    /// `exact`.
    Exact(String, String),
    /// `prefix`.
    Prefix(String, String),
    /// `suffix`.
    Suffix(String, String),
    /// `all`.
    All(Vec<NaiveFilter>),
    /// `any`.
    Any(Vec<NaiveFilter>),
    /// `not`.
    Not(Box<NaiveFilter>),
    /// `cesql`.
    Cesql(Expression),
}

/// Reads an attribute the way SDK users do: as an owned string.
fn attribute(e: &Event, name: &str) -> Option<String> {
    match name {
        "specversion" => Some(e.specversion().to_string()),
        "id" => Some(e.id().to_owned()),
        "type" => Some(e.ty().to_owned()),
        "source" => Some(e.source().to_string()),
        "subject" => e.subject().map(str::to_owned),
        "time" => e.time().map(|t| t.to_rfc3339()),
        "datacontenttype" => e.datacontenttype().map(str::to_owned),
        "dataschema" => e.dataschema().map(|u| u.to_string()),
        _ => e.extension(name).map(|v| v.to_string()),
    }
}

/// Lets the CESQL engine read an SDK event.
struct SdkAttributes<'a>(&'a Event);

impl Attributes for SdkAttributes<'_> {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        use cloudevents::event::ExtensionValue;
        let e = self.0;
        match name {
            "type" => Some(AttrValue::Str(e.ty())),
            "id" => Some(AttrValue::Str(e.id())),
            "subject" => e.subject().map(AttrValue::Str),
            "datacontenttype" => e.datacontenttype().map(AttrValue::Str),
            "specversion" => Some(AttrValue::Str(if e.specversion().as_str() == "0.3" {
                "0.3"
            } else {
                "1.0"
            })),
            _ => match e.extension(name) {
                Some(ExtensionValue::String(s)) => Some(AttrValue::Str(s)),
                Some(ExtensionValue::Boolean(b)) => Some(AttrValue::Bool(*b)),
                Some(ExtensionValue::Integer(i)) => i32::try_from(*i).ok().map(AttrValue::Int),
                None => None,
            },
        }
    }
}

impl NaiveFilter {
    /// Whether the event passes.
    pub fn matches(&self, e: &Event) -> bool {
        match self {
            NaiveFilter::Attributes(attrs) => attrs.iter().all(|(k, v)| match attribute(e, k) {
                Some(actual) => {
                    if v.is_empty() {
                        !actual.is_empty()
                    } else {
                        actual == *v
                    }
                }
                None => false,
            }),
            NaiveFilter::Exact(k, v) => attribute(e, k).is_some_and(|a| a == *v),
            NaiveFilter::Prefix(k, v) => attribute(e, k).is_some_and(|a| a.starts_with(v.as_str())),
            NaiveFilter::Suffix(k, v) => attribute(e, k).is_some_and(|a| a.ends_with(v.as_str())),
            NaiveFilter::All(fs) => fs.iter().all(|f| f.matches(e)),
            NaiveFilter::Any(fs) => fs.iter().any(|f| f.matches(e)),
            NaiveFilter::Not(f) => !f.matches(e),
            NaiveFilter::Cesql(x) => x.matches(&SdkAttributes(e)),
        }
    }

    /// The baseline filter of a trigger.
    pub fn of(trigger: &Trigger) -> NaiveFilter {
        if trigger.filters.is_empty() {
            return NaiveFilter::Attributes(
                trigger
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
        }
        NaiveFilter::All(
            trigger
                .filters
                .iter()
                .map(|f| Self::of_expr(&f.expr))
                .collect(),
        )
    }

    fn of_expr(expr: &FilterExpr) -> NaiveFilter {
        match expr {
            FilterExpr::Exact { attribute, value } => {
                NaiveFilter::Exact(attribute.clone(), value.clone())
            }
            FilterExpr::Prefix { attribute, value } => {
                NaiveFilter::Prefix(attribute.clone(), value.clone())
            }
            FilterExpr::Suffix { attribute, value } => {
                NaiveFilter::Suffix(attribute.clone(), value.clone())
            }
            FilterExpr::All(fs) => {
                NaiveFilter::All(fs.iter().map(|f| Self::of_expr(&f.expr)).collect())
            }
            FilterExpr::Any(fs) => {
                NaiveFilter::Any(fs.iter().map(|f| Self::of_expr(&f.expr)).collect())
            }
            FilterExpr::Not(f) => NaiveFilter::Not(Box::new(Self::of_expr(&f.expr))),
            FilterExpr::Cesql(src) => {
                NaiveFilter::Cesql(Expression::compile(src).expect("the config validated it"))
            }
            _ => NaiveFilter::All(Vec::new()),
        }
    }
}

/// Every trigger of a config, as a list of (name, filter).
pub fn triggers(config: &Config) -> Vec<(String, NaiveFilter)> {
    config
        .triggers()
        .iter()
        .map(|t| (t.name().to_owned(), NaiveFilter::of(t)))
        .collect()
}

/// The linear scan: indices of the triggers `e` matches, in order.
pub fn scan(triggers: &[(String, NaiveFilter)], e: &Event) -> Vec<usize> {
    triggers
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| f.matches(e))
        .map(|(i, _)| i)
        .collect()
}
