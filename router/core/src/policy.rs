//! Event policies: who may send what to which brokers (Knative's `EventPolicy`).
//!
//! [`Policies::build`] compiles a config's `EventPolicy` resources per broker: each policy's
//! filters go into one [`TriggerIndex`] per broker (the same compiled index triggers use), and
//! its senders into patterns. [`Policies::allows`] then decides an event:
//!
//! - a broker that no policy targets follows the default (`allow-all`, `allow-same-namespace`,
//!   `deny-all`);
//! - otherwise the event is allowed when any policy targeting the broker has a sender pattern
//!   matching the sender's identity **and** filters the event passes.
//!
//! Identities are strings such as `system:serviceaccount:shop:checkout`; an anonymous sender
//! (no authentication configured) is the empty string, which only the pattern `*` matches.
//! `allow-same-namespace` allows identities `system:serviceaccount:<broker namespace>:...`.
//!
//! What this module does not do: authenticate. The router turns credentials into identities.

use std::collections::HashMap;

use crate::config::{Config, ConfigError, CustomSpec, DefaultPolicy};
use crate::event::EventView;
use crate::filter::Filter;
use crate::index::{MatchScratch, TriggerIndex};

/// A sender pattern from `from[].sub`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sender {
    Exact(String),
    Prefix(String),
}

impl Sender {
    fn parse(sub: &str) -> Sender {
        match sub.strip_suffix('*') {
            Some(prefix) => Sender::Prefix(prefix.to_owned()),
            None => Sender::Exact(sub.to_owned()),
        }
    }

    fn matches(&self, identity: &str) -> bool {
        match self {
            Sender::Exact(s) => s == identity,
            Sender::Prefix(p) => identity.starts_with(p.as_str()),
        }
    }
}

/// The policies of one broker.
struct BrokerPolicies {
    /// Policy `i`'s filters are trigger `i` of the index.
    index: TriggerIndex,
    senders: Vec<Vec<Sender>>,
    names: Vec<String>,
}

/// Every broker's policies.
pub struct Policies {
    default: DefaultPolicy,
    brokers: HashMap<String, BrokerPolicies>,
}

/// The verdict on one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed, by the named policy (or by the default when `None`).
    Allowed(Option<String>),
    /// Not allowed.
    Denied,
}

impl Policies {
    /// Compiles the config's policies.
    pub fn build(config: &Config) -> Result<Policies, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut per_broker: HashMap<String, Vec<(String, Filter, Vec<Sender>)>> = HashMap::new();
        for resource in config.custom() {
            let CustomSpec::EventPolicy(spec) = &resource.spec else {
                continue;
            };
            let filter = match Filter::from_filters(config, &resource.id, &resource.filters) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(*e);
                    continue;
                }
            };
            let senders: Vec<Sender> = spec
                .from
                .iter()
                .filter_map(|f| f.sub.as_deref())
                .map(Sender::parse)
                .collect();
            let ns = resource.meta.namespace.as_str();
            for broker in config.brokers().iter().filter(|b| b.meta.namespace == ns) {
                let targeted = spec.to.is_empty()
                    || spec.to.iter().any(|t| match (&t.reference, &t.selector) {
                        (Some(r), _) => r.name == broker.meta.name,
                        (None, Some(s)) => s
                            .match_labels
                            .iter()
                            .all(|(k, v)| broker.meta.labels.get(k) == Some(v)),
                        (None, None) => false,
                    });
                if targeted {
                    per_broker
                        .entry(format!("{ns}/{}", broker.meta.name))
                        .or_default()
                        .push((resource.meta.name.clone(), filter.clone(), senders.clone()));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let brokers = per_broker
            .into_iter()
            .map(|(broker, policies)| {
                let mut names = Vec::with_capacity(policies.len());
                let mut filters = Vec::with_capacity(policies.len());
                let mut senders = Vec::with_capacity(policies.len());
                for (name, filter, from) in policies {
                    names.push(name);
                    filters.push(filter);
                    senders.push(from);
                }
                (
                    broker,
                    BrokerPolicies {
                        index: TriggerIndex::build(filters),
                        senders,
                        names,
                    },
                )
            })
            .collect();
        Ok(Policies {
            default: config.server().auth.default_policy,
            brokers,
        })
    }

    /// No policies, and a default that allows everyone.
    pub fn allow_all() -> Policies {
        Policies {
            default: DefaultPolicy::AllowAll,
            brokers: HashMap::new(),
        }
    }

    /// Whether any policy targets broker `namespace/name`.
    pub fn has_policies(&self, broker: &str) -> bool {
        self.brokers.contains_key(broker)
    }

    /// Decides whether `identity` may send `event` to broker `namespace/name`. `scratch` and
    /// `matched` are reused buffers.
    pub fn allows(
        &self,
        broker: &str,
        identity: &str,
        event: &EventView<'_>,
        scratch: &mut MatchScratch,
        matched: &mut Vec<u32>,
    ) -> Verdict {
        let Some(policies) = self.brokers.get(broker) else {
            return match self.default {
                DefaultPolicy::AllowAll => Verdict::Allowed(None),
                DefaultPolicy::DenyAll => Verdict::Denied,
                DefaultPolicy::AllowSameNamespace => {
                    let ns = broker.split('/').next().unwrap_or_default();
                    let same = identity
                        .strip_prefix("system:serviceaccount:")
                        .and_then(|rest| rest.split_once(':'))
                        .is_some_and(|(sender_ns, _)| sender_ns == ns);
                    if same {
                        Verdict::Allowed(None)
                    } else {
                        Verdict::Denied
                    }
                }
            };
        };
        matched.clear();
        policies.index.matches(event, scratch, matched);
        for &id in matched.iter() {
            let i = id as usize;
            if policies.senders[i].iter().any(|s| s.matches(identity)) {
                return Verdict::Allowed(Some(policies.names[i].clone()));
            }
        }
        Verdict::Denied
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::{DecodeLimits, decode_structured};

    fn config(server_auth: &str, policies: &str) -> Config {
        let text = format!(
            "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nspec:\n  auth: {{{server_auth}}}\n---\n\
             apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: orders, namespace: shop, labels: {{tier: gold}}}}\n---\n\
             apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: audit, namespace: shop}}\n---\n\
             apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: other, namespace: elsewhere}}\n{policies}"
        );
        Config::load(&text, "p.yaml").unwrap()
    }

    fn verdict(p: &Policies, broker: &str, identity: &str, ty: &str) -> bool {
        let b = decode_structured(
            Bytes::from(format!(
                r#"{{"specversion":"1.0","id":"1","source":"/s","type":"{ty}"}}"#
            )),
            &DecodeLimits::default(),
        )
        .unwrap();
        let mut scratch = MatchScratch::new();
        let mut matched = Vec::new();
        matches!(
            p.allows(
                broker,
                identity,
                &b.get(0).unwrap(),
                &mut scratch,
                &mut matched
            ),
            Verdict::Allowed(_)
        )
    }

    const SA: &str = "system:serviceaccount:shop:checkout";

    #[test]
    fn defaults_apply_to_brokers_without_policies() {
        let p = Policies::build(&config("", "")).unwrap();
        assert!(
            verdict(&p, "shop/orders", "", "t"),
            "allow-all is the default"
        );
        let p = Policies::build(&config("defaultPolicy: deny-all", "")).unwrap();
        assert!(!verdict(&p, "shop/orders", SA, "t"));
        let p = Policies::build(&config("defaultPolicy: allow-same-namespace", "")).unwrap();
        assert!(verdict(&p, "shop/orders", SA, "t"));
        assert!(!verdict(&p, "elsewhere/other", SA, "t"));
        assert!(
            !verdict(&p, "shop/orders", "", "t"),
            "anonymous is in no namespace"
        );
        assert!(!verdict(
            &p,
            "shop/orders",
            "system:serviceaccount:shopx:a",
            "t"
        ));
    }

    #[test]
    fn policies_with_refs_selectors_wildcards_and_filters() {
        let policies = "---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: checkout, namespace: shop}\n\
            spec:\n  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}]\n  from: [{sub: \"system:serviceaccount:shop:*\"}]\n  filters: [{prefix: {type: order.}}]\n\
            ---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: gold, namespace: shop}\n\
            spec:\n  to: [{selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {tier: gold}}}]\n  from: [{sub: \"admin\"}]\n";
        let p = Policies::build(&config("defaultPolicy: deny-all", policies)).unwrap();
        assert!(verdict(&p, "shop/orders", SA, "order.created"));
        assert!(
            !verdict(&p, "shop/orders", SA, "payment.made"),
            "filters restrict what"
        );
        assert!(
            !verdict(
                &p,
                "shop/orders",
                "system:serviceaccount:other:x",
                "order.created"
            ),
            "wildcard is a prefix"
        );
        assert!(
            verdict(&p, "shop/orders", "admin", "anything"),
            "selector by label, no filters"
        );
        assert!(
            !verdict(&p, "shop/audit", "admin", "anything"),
            "audit has no gold label, no policy: default deny"
        );
        assert!(
            !verdict(&p, "shop/orders", "", "order.created"),
            "anonymous matches no pattern but *"
        );
    }

    #[test]
    fn an_empty_to_targets_every_broker_of_the_namespace_and_star_admits_anyone() {
        let policies = "---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {name: all, namespace: shop}\n\
            spec:\n  from: [{sub: \"*\"}]\n  filters: [{cesql: \"type = 'ok'\"}]\n";
        let p = Policies::build(&config("defaultPolicy: deny-all", policies)).unwrap();
        assert!(verdict(&p, "shop/orders", "", "ok"));
        assert!(verdict(&p, "shop/audit", "anyone", "ok"));
        assert!(!verdict(&p, "shop/audit", "anyone", "nope"));
        assert!(
            !verdict(&p, "elsewhere/other", "anyone", "ok"),
            "other namespaces keep the default"
        );
    }

    /// Every combination of default, policy presence and match, sender and event: the
    /// verdict equals the rule "no policy for the broker → default; else any policy matching
    /// sender and event".
    #[test]
    fn every_combination_of_default_policy_sender_and_event() {
        let defaults = [
            ("allow-all", DefaultPolicy::AllowAll),
            ("allow-same-namespace", DefaultPolicy::AllowSameNamespace),
            ("deny-all", DefaultPolicy::DenyAll),
        ];
        // (policy documents, sender pattern, filter type) — None: no policy.
        let policy_sets: [Option<(&str, &str)>; 4] = [
            None,
            Some(("system:serviceaccount:shop:*", "")),
            Some(("system:serviceaccount:shop:checkout", "order.")),
            Some(("*", "order.")),
        ];
        let senders = [
            SA,
            "system:serviceaccount:shop:billing",
            "system:serviceaccount:elsewhere:checkout",
            "",
            "alice@example.com",
        ];
        let types = ["order.created", "payment.made"];
        let mut cases = 0;
        for (default_text, default) in defaults {
            for set in policy_sets {
                let docs = match set {
                    None => String::new(),
                    Some((from, prefix)) => {
                        let filters = if prefix.is_empty() {
                            String::new()
                        } else {
                            format!("  filters: [{{prefix: {{type: {prefix}}}}}]\n")
                        };
                        format!(
                            "---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: p, namespace: shop}}\n\
                             spec:\n  to: [{{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}}}]\n  from: [{{sub: \"{from}\"}}]\n{filters}"
                        )
                    }
                };
                let p = Policies::build(&config(&format!("defaultPolicy: {default_text}"), &docs))
                    .unwrap();
                for broker in ["shop/orders", "shop/audit", "elsewhere/other"] {
                    for sender in senders {
                        for ty in types {
                            let targeted = set.is_some() && broker == "shop/orders";
                            let expected = if targeted {
                                let (from, prefix) = set.unwrap_or_default();
                                let sender_ok = match from.strip_suffix('*') {
                                    Some(p) => sender.starts_with(p),
                                    None => sender == from,
                                };
                                sender_ok && ty.starts_with(prefix)
                            } else {
                                match default {
                                    DefaultPolicy::AllowAll => true,
                                    DefaultPolicy::DenyAll => false,
                                    DefaultPolicy::AllowSameNamespace => {
                                        let ns = broker.split('/').next().unwrap();
                                        sender.starts_with(&format!("system:serviceaccount:{ns}:"))
                                    }
                                }
                            };
                            assert_eq!(
                                verdict(&p, broker, sender, ty),
                                expected,
                                "default {default_text}, policy {set:?}, broker {broker}, sender {sender:?}, type {ty}"
                            );
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 3 * 4 * 3 * 5 * 2);
    }

    #[test]
    fn invalid_policies_fail_to_load() {
        let bad = |spec: &str| {
            let text = format!(
                "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: b}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: p}}\nspec:\n{spec}"
            );
            Config::load(&text, "p.yaml")
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("  from: []\n").contains("from"));
        assert!(bad("  from: [{sub: \"a*b*\"}]\n").contains("at most one `*`"));
        assert!(
            bad("  from: [{ref: {apiVersion: v1, kind: ServiceAccount, name: x}}]\n")
                .contains("not supported")
        );
        assert!(
            bad("  to: [{ref: {apiVersion: v1, kind: Service, name: x}}]\n  from: [{sub: a}]\n")
                .contains("apply to brokers")
        );
        assert!(bad("  from: [{sub: a}]\n  filters: [{exact: {type: \"\"}}]\n").contains("empty"));
    }
}
