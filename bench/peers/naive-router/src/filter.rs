//! Knative trigger filters evaluated directly on the SDK's owned `cloudevents::Event`, one
//! trigger after another.
//!
//! - `filter.attributes`: every listed attribute must equal the value exactly; `""` only
//!   requires the attribute to be present.
//! - `filters` (SubscriptionsAPI): `exact`, `prefix`, `suffix` on string forms of attributes,
//!   and `all`, `any`, `not`. The list is an implicit `all`.

use std::borrow::Cow;

use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Event};

use crate::config::{FilterConfig, TriggerConfig};

/// Whether the trigger's filter passes the event.
pub fn matches(trigger: &TriggerConfig, event: &Event) -> bool {
    if !trigger.filters.is_empty() {
        return trigger.filters.iter().all(|f| eval(f, event));
    }
    trigger
        .attributes
        .iter()
        .all(|(name, want)| match attribute(event, name) {
            Some(got) => want.is_empty() || *got == **want,
            None => false,
        })
}

fn eval(filter: &FilterConfig, event: &Event) -> bool {
    match filter {
        FilterConfig::Exact(m) => m
            .iter()
            .all(|(k, v)| attribute(event, k).is_some_and(|a| *a == **v)),
        FilterConfig::Prefix(m) => m
            .iter()
            .all(|(k, v)| attribute(event, k).is_some_and(|a| a.starts_with(v.as_str()))),
        FilterConfig::Suffix(m) => m
            .iter()
            .all(|(k, v)| attribute(event, k).is_some_and(|a| a.ends_with(v.as_str()))),
        FilterConfig::All(fs) => fs.iter().all(|f| eval(f, event)),
        FilterConfig::Any(fs) => fs.iter().any(|f| eval(f, event)),
        FilterConfig::Not(f) => !eval(f, event),
        // Rejected when the config is read.
        FilterConfig::Cesql => false,
    }
}

/// The string form of a context attribute or extension, borrowed where the SDK stores a
/// string.
fn attribute<'a>(event: &'a Event, name: &str) -> Option<Cow<'a, str>> {
    Some(match name {
        "specversion" => Cow::Owned(event.specversion().to_string()),
        "id" => Cow::Borrowed(event.id()),
        "source" => Cow::Borrowed(event.source().as_str()),
        "type" => Cow::Borrowed(event.ty()),
        "subject" => Cow::Borrowed(event.subject()?),
        "datacontenttype" => Cow::Borrowed(event.datacontenttype()?),
        "dataschema" => Cow::Borrowed(event.dataschema()?.as_str()),
        "time" => Cow::Owned(event.time()?.to_rfc3339()),
        _ => match event.extension(name)? {
            ExtensionValue::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn event(ty: &str, ext: Option<&str>) -> Event {
        let mut json = serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "/orders", "type": ty,
        });
        if let Some(e) = ext {
            json["region"] = e.into();
        }
        serde_json::from_value(json).expect("valid event")
    }

    fn trigger(spec: &str) -> TriggerConfig {
        let yaml = format!(
            "kind: Broker\nmetadata: {{name: default}}\n---\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  subscriber: {{uri: http://x/}}\n{spec}"
        );
        Config::parse(&yaml)
            .expect("valid config")
            .triggers
            .remove(0)
    }

    #[test]
    fn attributes_filter() {
        let t = trigger("  filter:\n    attributes: {type: a.b, region: \"\"}\n");
        assert!(matches(&t, &event("a.b", Some("eu"))));
        assert!(!matches(&t, &event("a.b", None)), "region must be present");
        assert!(!matches(&t, &event("a.c", Some("eu"))));
        assert!(
            matches(&trigger(""), &event("x", None)),
            "no filter passes all"
        );
    }

    #[test]
    fn subscriptions_api_filters() {
        let t = trigger(
            "  filters:\n    - prefix: {type: com.}\n    - any:\n      - suffix: {type: .created}\n      - exact: {region: us}\n    - not: {exact: {source: /blocked}}\n",
        );
        assert!(matches(&t, &event("com.order.created", None)));
        assert!(matches(&t, &event("com.order.deleted", Some("us"))));
        assert!(!matches(&t, &event("com.order.deleted", Some("eu"))));
        assert!(!matches(&t, &event("org.order.created", None)));
    }

    #[test]
    fn cesql_is_refused() {
        let yaml = "kind: Broker\nmetadata: {name: default}\n---\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: default\n  subscriber: {uri: http://x/}\n  filters: [{cesql: \"true\"}]\n";
        assert!(Config::parse(yaml).is_err());
    }
}
