//! The config loader, and the build steps the router runs on a loaded config (its `plan`),
//! with core APIs only.
//!
//! The input is YAML text (invalid UTF-8 is replaced, so every input reaches the loader).
//! Invariants:
//!
//! - `Config::load` never panics; a rejected file has at least one error, and every error
//!   renders as `fuzz.yaml[:LINE:COLUMN]: ...` with a line within the file;
//! - a loaded config's version is the text's SHA-256, and it lists every resource once;
//! - compiling every trigger's filter and every broker's `TriggerIndex`, the `EventPolicy`
//!   resources, each `PingSource`'s schedule and each delivery policy never panics, and their
//!   errors render like the loader's;
//! - a broker's index selects exactly the triggers whose filters pass, for events built to
//!   satisfy each trigger's constraints (and the minimal event);
//! - a broker without policies follows the default policy, and an allowing policy exists;
//! - a schedule's next tick is later than the time asked about, missed ticks are ascending,
//!   and its events always decode (one event per tick);
//! - backoff delays respect `backoffMax` and the one-year cap, and a retry is numbered
//!   attempt + 1.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use http::StatusCode;
use sha2::{Digest, Sha256};
use triggerfish_core::config::{
    Config, ConfigError, CustomSpec, DefaultPolicy, Delivery, FieldPath, Kind, Resource,
};
use triggerfish_core::cron::recurring::Recurring;
use triggerfish_core::delivery::{Decision, MAX_DELAY, Outcome};
use triggerfish_core::event::EventView;
use triggerfish_core::filter::{AttrKey, Constraint, Filter, MatchKind};
use triggerfish_core::index::{MatchScratch, TriggerIndex};
use triggerfish_core::policy::{Policies, Verdict};

// `events.rs` is a module of the including crate (the fuzz target, or the replay test), so
// that a crate including two checks holds it once.
use crate::events::{Attr, MapEvent};

const FILE: &str = "fuzz.yaml";
/// Most events built per broker.
const MAX_EVENTS: usize = 24;

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = match Config::load(&text, FILE) {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(!errors.to_string().is_empty());
            for e in errors.iter() {
                check_error(e, &text);
            }
            return;
        }
    };
    assert_eq!(
        config.version(),
        format!("{:x}", Sha256::digest(text.as_bytes()))
    );
    assert_eq!(config.file_name(), FILE);
    let custom = config.custom().len();
    let server = usize::from(config.server_id().is_some());
    assert_eq!(
        config.resources().count(),
        config.brokers().len() + config.triggers().len() + custom + server
    );
    for resource in config.resources() {
        let id = match resource {
            Resource::Broker(b) => &b.id,
            Resource::Trigger(t) => &t.id,
            Resource::Custom(c) => &c.id,
            Resource::Server(_) => match config.server_id() {
                Some(id) => id,
                None => continue,
            },
        };
        if let Some(location) = config.locate(id, &FieldPath::root().key("spec")) {
            assert!(location.line >= 1 && location.column >= 1);
        }
        let _ = config.node(id, &FieldPath::root().key("metadata").key("name"));
    }

    let mut scratch = MatchScratch::new();
    let policies = match Policies::build(&config) {
        Ok(p) => Some(p),
        Err(errors) => {
            assert!(!errors.is_empty());
            errors.iter().for_each(|e| check_error(e, &text));
            None
        }
    };
    for broker in config.brokers() {
        let (ns, name) = (broker.meta.namespace.as_str(), broker.meta.name.as_str());
        let mut filters = Vec::new();
        for trigger in config.triggers_of(ns, name) {
            assert_eq!(trigger.broker, name);
            match Filter::from_trigger(&config, trigger) {
                Ok(f) => filters.push(f),
                Err(e) => check_error(&e, &text),
            }
            if let Some(delivery) = config.delivery_for(trigger) {
                check_delivery(delivery);
            }
        }
        if let Some(delivery) = &broker.delivery {
            check_delivery(delivery);
        }
        let index = TriggerIndex::build(filters.clone());
        assert_eq!(index.len(), filters.len());
        let key = format!("{ns}/{name}");
        let identities = identities(&config, ns);
        for event in events(&filters) {
            let Some(batch) = event.decode() else {
                continue;
            };
            let view = batch.get(0).expect("one event");
            check_index(&index, &filters, &view, &mut scratch);
            if let Some(policies) = &policies {
                for identity in &identities {
                    check_policy(&config, policies, &key, identity, &view, &mut scratch);
                }
            }
        }
    }
    for resource in config.custom() {
        if let Some(delivery) = &resource.delivery {
            check_delivery(delivery);
        }
        let CustomSpec::PingSource(spec) = &resource.spec else {
            continue;
        };
        match Recurring::from_ping_source(&resource.meta.namespace, &resource.meta.name, spec) {
            Ok(recurring) => check_recurring(&recurring),
            Err(invalid) => {
                assert!(!invalid.is_empty());
                for i in invalid {
                    check_error(&config.error_at(&resource.id, i.path, i.message), &text);
                }
            }
        }
    }
}

/// An error names the file, and its line is one of the file's.
fn check_error(e: &ConfigError, text: &str) {
    let rendered = e.to_string();
    assert!(rendered.starts_with(FILE), "{rendered}");
    assert_eq!(e.file(), FILE);
    if let Some(location) = e.location() {
        // YAML ends a line at `\r\n`, `\r` or `\n`.
        let lines = text.matches('\n').count() + text.matches('\r').count()
            - text.matches("\r\n").count()
            + 1;
        assert!(
            location.line >= 1 && location.line as usize <= lines && location.column >= 1,
            "{rendered}: line {} of {lines}",
            location.line
        );
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = s.to_string();
        source = s.source();
    }
}

/// The index selects exactly the filters that pass, in config order.
fn check_index(
    index: &TriggerIndex,
    filters: &[Filter],
    view: &EventView<'_>,
    scratch: &mut MatchScratch,
) {
    let mut out = Vec::new();
    index.matches(view, scratch, &mut out);
    let expected: Vec<u32> = (0..filters.len() as u32)
        .filter(|&i| filters[i as usize].matches(view))
        .collect();
    assert_eq!(
        out, expected,
        "the index disagrees with the filters {filters:#?} on {view:?}"
    );
}

fn check_policy(
    config: &Config,
    policies: &Policies,
    broker: &str,
    identity: &str,
    view: &EventView<'_>,
    scratch: &mut MatchScratch,
) {
    let mut matched = Vec::new();
    let verdict = policies.allows(broker, identity, view, scratch, &mut matched);
    if !policies.has_policies(broker) {
        match config.server().auth.default_policy {
            DefaultPolicy::AllowAll => assert_eq!(verdict, Verdict::Allowed(None)),
            DefaultPolicy::DenyAll => assert_eq!(verdict, Verdict::Denied),
            DefaultPolicy::AllowSameNamespace => {
                let ns = broker.split('/').next().unwrap_or_default();
                let same = identity
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(sender_ns, _)| sender_ns == ns);
                let expected = if same {
                    Verdict::Allowed(None)
                } else {
                    Verdict::Denied
                };
                assert_eq!(
                    verdict, expected,
                    "allow-same-namespace for {identity:?} on {broker}"
                );
            }
        }
    } else if let Verdict::Allowed(name) = &verdict {
        let name = name
            .as_deref()
            .expect("a broker with policies is allowed by one");
        let ns = broker.split('/').next().unwrap_or_default();
        assert!(
            config
                .custom_resource(Kind::EventPolicy, ns, name)
                .is_some(),
            "allowed by {name}, which is not an EventPolicy of {ns}"
        );
    }
}

/// Identities worth asking about: anonymous, the broker's namespace, another one, and each
/// policy's sender pattern (its wildcard filled in).
fn identities(config: &Config, ns: &str) -> Vec<String> {
    let mut out = vec![
        String::new(),
        format!("system:serviceaccount:{ns}:fuzz"),
        "system:serviceaccount:elsewhere:fuzz".to_owned(),
    ];
    for resource in config.custom() {
        if let CustomSpec::EventPolicy(spec) = &resource.spec {
            for sub in spec.from.iter().filter_map(|f| f.sub.as_deref()) {
                let identity = sub
                    .strip_suffix('*')
                    .map_or_else(|| sub.to_owned(), |p| format!("{p}x"));
                if out.len() < 8 && !out.contains(&identity) {
                    out.push(identity);
                }
            }
        }
    }
    out
}

/// The minimal event, and for each filter events that satisfy its necessary constraints and
/// each of its index alternatives, then all constraints at once.
fn events(filters: &[Filter]) -> Vec<MapEvent> {
    let mut out = vec![MapEvent::minimal()];
    let mut everything = MapEvent::minimal();
    for filter in filters {
        let necessary = filter.necessary_constraints();
        let mut base = MapEvent::minimal();
        necessary.iter().for_each(|c| satisfy(&mut base, c, false));
        necessary
            .iter()
            .for_each(|c| satisfy(&mut everything, c, true));
        for key in filter.required_attributes() {
            if !base.0.contains_key(key.name()) {
                base.set(key.name(), Attr::Str("v".into()));
            }
        }
        for alternative in filter.index_alternatives().unwrap_or_default() {
            let mut event = base.clone();
            satisfy(&mut event, &alternative, false);
            push(&mut out, event);
        }
        push(&mut out, base);
    }
    push(&mut out, everything);
    out
}

fn push(out: &mut Vec<MapEvent>, event: MapEvent) {
    if out.len() >= MAX_EVENTS {
        return;
    }
    if event.decode().is_none() {
        let clean = event.decodable();
        if !out.contains(&clean) {
            out.push(clean);
        }
    }
    if !out.contains(&event) {
        out.push(event);
    }
}

/// Sets the constraint's attribute to a value that satisfies it; `typed` gives an extension
/// whose value reads as an Integer or a Boolean that type.
fn satisfy(event: &mut MapEvent, c: &Constraint, typed: bool) {
    let value = match c.kind {
        MatchKind::Exact => c.value.to_string(),
        MatchKind::Prefix => format!("{}x", c.value),
        MatchKind::Suffix => format!("x{}", c.value),
    };
    let value = match (&c.attr, typed) {
        (AttrKey::Extension(_), true) => match value.as_str() {
            "true" => Attr::Bool(true),
            "false" => Attr::Bool(false),
            v => match v.parse::<i32>() {
                Ok(i) if i.to_string() == v => Attr::Int(i),
                _ => Attr::Str(value),
            },
        },
        _ => Attr::Str(value),
    };
    event.set(c.attr.name(), value);
}

fn check_delivery(delivery: &Delivery) {
    let policy = &delivery.policy;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for n in [0, 1, 2, 3, 10, 31, 32, 33, 64, 1000, u32::MAX] {
        for random in [0, u64::MAX / 3, u64::MAX] {
            let delay = policy.backoff(n, random);
            if let Some(max) = policy.backoff_max() {
                assert!(delay <= max, "backoff {delay:?} over backoffMax {max:?}");
            }
            assert!(
                delay <= MAX_DELAY,
                "backoff {delay:?} over the one-year cap"
            );
        }
        for outcome in [
            Outcome::status(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Response {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some("120"),
            },
        ] {
            match policy.next_attempt(n, &outcome, now, 7) {
                Decision::Retry {
                    after,
                    next_attempt,
                    ..
                } => {
                    assert_eq!(next_attempt, n.max(1) + 1);
                    assert!(after <= MAX_DELAY);
                }
                Decision::DeadLetter(d) => assert_eq!(d.attempts, n.max(1)),
                Decision::Succeeded => panic!("a 503 or 429 is not a success"),
            }
        }
    }
}

fn check_recurring(recurring: &Recurring) {
    let t0: DateTime<Utc> = Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid");
    let Some(tick) = recurring.next_after(t0) else {
        return;
    };
    assert!(tick > t0, "next tick {tick} not after {t0}");
    for late in [false, true] {
        let batch = recurring.event(tick, "fuzz-id", late);
        assert_eq!(
            batch.len(),
            1,
            "the event of a valid schedule decodes (late: {late})"
        );
    }
    let missed = recurring.missed(t0, t0 + chrono::Duration::hours(2));
    assert!(
        missed.windows(2).all(|w| w[0] < w[1]),
        "missed ticks ascend"
    );
    assert!(
        missed
            .iter()
            .all(|&t| t > t0 && t <= t0 + chrono::Duration::hours(2))
    );
}
