//! Loader tests: what a valid file becomes, and the exact text of each error.

use std::num::NonZeroU32;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::delivery::DeliveryPolicy;

fn load(source: &str) -> Config {
    Config::load(source, "c.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

/// Every error line for `source`.
fn errors(source: &str) -> Vec<String> {
    match Config::load(source, "c.yaml") {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The only error for `source`.
fn error(source: &str) -> String {
    let mut errors = errors(source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.remove(0)
}

const BROKER: &str = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
";

/// `BROKER` followed by a trigger with `spec` (indented by two), starting at line 6.
fn with_trigger(spec: &str) -> String {
    format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n{spec}"
    )
}

const QUICKSTART: &str = r#"
# A Knative-style config: brokers and triggers, plus Triggerfish's Server.
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen:
    http: 0.0.0.0:8080
  shards: 2
  dataDir: /var/lib/tf
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: media
  annotations:
    eventing.knative.dev/broker.class: MTChannelBasedBroker
spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: config-br-default-channel
  delivery:
    retry: 10
    backoffDelay: PT0.2S
    deadLetterSink:
      ref:
        apiVersion: triggerfish.dev/v1alpha1
        kind: File
        name: failed
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: resize
  namespace: media
  annotations:
    kafka.eventing.knative.dev/delivery.order: ordered
spec:
  broker: default
  filter:
    attributes:
      type: oss:ObjectCreated:PutObject
      source: ""
  filters:
    - prefix: {subject: images/}
    - any:
        - suffix: {subject: .jpg}
        - not:
            cesql: "subject LIKE '%.tmp'"
  subscriber:
    ref:
      apiVersion: v1
      kind: Service
      name: resizer
    uri: /resize
  maxInFlight: 16
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: audit
  namespace: media
spec:
  broker: default
  subscriber:
    uri: "display:"
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT1S
    backoffMax: PT1M
    jitter: full
    timeout: PT5S
    retryAfterMax: PT30S
    format: json
"#;

#[test]
fn loads_a_knative_config() {
    let config = load(QUICKSTART);
    assert_eq!(config.file_name(), "c.yaml");
    assert_eq!(
        config.version(),
        format!("{:x}", Sha256::digest(QUICKSTART.as_bytes()))
    );
    assert_eq!(config.version().len(), 64);

    let server = config.server();
    assert_eq!(server.listen.http.to_string(), "0.0.0.0:8080");
    assert_eq!(server.listen.admin.to_string(), "127.0.0.1:9090");
    assert_eq!(server.shards.map(|n| n.get()), Some(2));

    let kinds: Vec<&str> = config
        .resources()
        .map(|r| match r {
            Resource::Broker(b) => b.name(),
            Resource::Trigger(t) => t.name(),
            Resource::Server(_) => "server",
            Resource::Custom(c) => c.meta.name.as_str(),
        })
        .collect();
    assert_eq!(kinds, ["server", "default", "resize", "audit"]);

    let broker = config.broker("media", "default").unwrap();
    let broker_delivery = broker.delivery.as_ref().unwrap();
    assert_eq!(broker_delivery.policy.retry(), 10);
    assert_eq!(
        broker_delivery.policy.backoff_delay(),
        Duration::from_millis(200)
    );
    assert_eq!(
        broker_delivery.dead_letter_sink,
        Some(Destination::File {
            path: "/var/lib/tf/sinks/media/failed.jsonl".into()
        })
    );

    let [resize, audit] = config.triggers() else {
        panic!("two triggers")
    };
    assert_eq!(
        resize.id,
        ResourceId::namespaced(Kind::Trigger, "media", "resize")
    );
    assert_eq!(resize.broker, "default");
    assert_eq!(resize.attributes["type"], "oss:ObjectCreated:PutObject");
    assert_eq!(resize.attributes["source"], "");
    assert_eq!(resize.delivery_order, DeliveryOrder::Ordered);
    assert_eq!(resize.max_in_flight, NonZeroU32::new(16).unwrap());
    assert_eq!(
        resize.subscriber.http_url().unwrap().as_str(),
        "http://resizer.media.svc.cluster.local/resize"
    );
    assert_eq!(resize.delivery, None);
    // No delivery of its own: the broker's applies.
    assert_eq!(config.delivery_for(resize), Some(broker_delivery));

    assert_eq!(resize.filters.len(), 2);
    assert_eq!(
        resize.filters[0].expr,
        FilterExpr::Prefix {
            attribute: "subject".into(),
            value: "images/".into()
        }
    );
    assert_eq!(resize.filters[0].path.to_string(), "spec.filters[0]");
    let FilterExpr::Any(any) = &resize.filters[1].expr else {
        panic!("any")
    };
    let FilterExpr::Not(not) = &any[1].expr else {
        panic!("not")
    };
    assert_eq!(not.expr, FilterExpr::Cesql("subject LIKE '%.tmp'".into()));
    assert_eq!(not.path.to_string(), "spec.filters[1].any[1].not");

    // The CESQL string can be located for compile errors.
    let cesql_path = not.path.key("cesql");
    assert_eq!(
        config.locate(&resize.id, &cesql_path),
        Some(Location {
            line: 50,
            column: 13
        })
    );
    assert_eq!(
        config.node(&resize.id, &cesql_path).unwrap().value,
        Location {
            line: 50,
            column: 20
        }
    );

    assert_eq!(audit.delivery_order, DeliveryOrder::Unordered);
    assert_eq!(audit.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(audit.subscriber, Destination::Display);
    let delivery = config.delivery_for(audit).unwrap();
    assert_eq!(delivery.format, DeliveryFormat::Json);
    assert_eq!(delivery.dead_letter_sink, None);
    let policy = &delivery.policy;
    assert_eq!(policy.retry(), 2);
    assert_eq!(policy.backoff_policy(), BackoffPolicy::Linear);
    assert_eq!(policy.backoff_max(), Some(Duration::from_secs(60)));
    assert_eq!(policy.jitter(), Jitter::Full);
    assert_eq!(policy.timeout(), Some(Duration::from_secs(5)));
    assert_eq!(policy.retry_after_max(), Some(Duration::from_secs(30)));
    assert_eq!(config.triggers_of("media", "default").count(), 2);
    assert_eq!(config.triggers_of("default", "default").count(), 0);
}

#[test]
fn the_embedded_default_is_what_its_yaml_says() {
    let embedded = Config::embedded_default();
    let loaded = Config::load(EMBEDDED_DEFAULT, EMBEDDED_FILE_NAME).unwrap();
    assert_eq!(embedded.brokers(), loaded.brokers());
    assert_eq!(embedded.triggers(), loaded.triggers());
    assert_eq!(embedded.server(), loaded.server());
    assert_eq!(embedded.version(), loaded.version());
    assert_eq!(embedded.server_id(), None);
    let broker = &embedded.brokers()[0];
    assert_eq!((broker.namespace(), broker.name()), ("default", "default"));
    assert_eq!(embedded.server().listen.http.to_string(), "127.0.0.1:8080");
    assert_eq!(embedded.server().listen.admin.to_string(), "127.0.0.1:9090");
    assert!(embedded.triggers().is_empty());
    assert_eq!(embedded.resources().count(), 1);
}

#[test]
fn empty_documents_and_kubectl_output_load() {
    let source = "# nothing\n---\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  uid: 0b7a\n  resourceVersion: \"12\"\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\nspec: {}\nstatus:\n  address: {url: http://x}\n---\n# trailing comment\n";
    let config = load(source);
    assert_eq!(config.brokers().len(), 1);
    let broker = &config.brokers()[0];
    // The first resource in the file; the empty documents before it count for nothing.
    assert_eq!(broker.document, 0);
    assert_eq!(
        config.locate(&broker.id, &"metadata.name".parse().unwrap()),
        Some(Location { line: 7, column: 3 })
    );
    let config = load("");
    assert!(config.brokers().is_empty());
    assert_eq!(config.server(), &ServerSpec::default());
}

/// `kubectl get brokers,triggers -o yaml` writes one `v1` `List`: its items load as
/// documents of their own, in file order with the documents around them, and errors point
/// into the list.
#[test]
fn a_kubectl_list_loads_item_by_item() {
    let list = r#"apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: eventing.knative.dev/v1
  kind: Broker
  metadata: {name: default, namespace: shop, uid: 0b7a}
  spec: {}
  status: {conditions: [{type: Ready, status: "True"}]}
- apiVersion: eventing.knative.dev/v1
  kind: Trigger
  metadata: {name: orders, namespace: shop}
  spec:
    broker: default
    subscriber: {uri: "display:"}
"#;
    let source = format!(
        "{list}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: after, namespace: shop}}
spec:
  broker: default
  subscriber: {{uri: \"display:\"}}
"
    );
    let config = load(&source);
    let names: Vec<&str> = config
        .resources()
        .map(|r| match r {
            crate::config::Resource::Broker(b) => b.meta.name.as_str(),
            crate::config::Resource::Trigger(t) => t.meta.name.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["default", "orders", "after"]);
    let orders = &config.triggers()[0];
    assert_eq!(
        config.locate(&orders.id, &"spec.subscriber".parse().unwrap()),
        Some(Location {
            line: 15,
            column: 5
        })
    );

    // An error in an item: its line in the list, its path from the item.
    let bad = list.replace(
        "broker: default\n",
        "broker: default\n    filter: {attributes: {Type: x}}\n",
    );
    let errors = errors(&bad);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            r#"c.yaml:15:27: Trigger "orders" in namespace "shop": spec.filter.attributes.Type"#
        ),
        "{errors:?}"
    );
    let e = error("apiVersion: v1\nkind: List\nitems: {}\n");
    assert!(
        e.contains("items: a List's items must be a sequence"),
        "{e}"
    );
}

#[test]
fn delivery_policy_defaults_to_one_attempt() {
    let config = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"display:\"}\n",
    ));
    let trigger = &config.triggers()[0];
    assert_eq!(config.delivery_for(trigger), None);
    assert_eq!(
        DeliveryPolicy::default().max_attempts(),
        1,
        "the dispatcher's policy without any delivery"
    );
}

#[test]
fn an_empty_trigger_delivery_keeps_the_brokers() {
    let source = format!(
        "{BROKER}spec:\n  delivery: {{retry: 3}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  subscriber: {{uri: \"display:\"}}\n  delivery: {{}}\n"
    );
    let config = load(&source);
    let trigger = &config.triggers()[0];
    assert_eq!(trigger.delivery, None);
    assert_eq!(config.delivery_for(trigger).unwrap().policy.retry(), 3);
}

#[test]
fn yaml_merge_keys_are_resolved() {
    let config = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"display:\"}\n  delivery:\n    <<: &defaults {retry: 4, backoffDelay: PT1S}\n    timeout: PT2S\n",
    ));
    let policy = &config.triggers()[0].delivery.as_ref().unwrap().policy;
    assert_eq!(policy.retry(), 4);
    assert_eq!(policy.backoff_delay(), Duration::from_secs(1));
    assert_eq!(policy.timeout(), Some(Duration::from_secs(2)));
}

#[test]
fn unknown_fields_are_rejected_with_a_suggestion() {
    assert_eq!(
        error(&with_trigger(
            "  brokr: default\n  subscriber: {uri: \"display:\"}\n"
        )),
        r#"c.yaml:11:3: Trigger "t" in namespace "default": spec: unknown field "brokr", did you mean "broker"?"#
    );
    assert_eq!(
        error(&with_trigger(
            "  broker: default\n  subscriber: {uri: \"display:\"}\n  delivery: {backofDelay: PT1S}\n"
        )),
        r#"c.yaml:13:14: Trigger "t" in namespace "default": spec.delivery: unknown field "backofDelay", did you mean "backoffDelay"?"#
    );
    assert_eq!(
        error(&with_trigger(
            "  broker: default\n  subscriber: {uri: \"display:\"}\n  sink: x\n"
        )),
        r#"c.yaml:13:3: Trigger "t" in namespace "default": spec: unknown field "sink"; expected one of: broker, filter, filters, subscriber, delivery, maxInFlight, rateLimit, batch"#
    );
    assert_eq!(
        error(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  namepace: x\n"
        ),
        r#"c.yaml:5:3: Broker "b" in namespace "default": metadata: unknown field "namepace", did you mean "namespace"?"#
    );
}

#[test]
fn required_fields() {
    assert_eq!(
        error(&with_trigger("  subscriber: {uri: \"display:\"}\n")),
        r#"c.yaml:10:1: Trigger "t" in namespace "default": spec: missing required field "broker""#
    );
    assert_eq!(
        error(&with_trigger(
            "  broker: \"\"\n  subscriber: {uri: \"display:\"}\n"
        )),
        r#"c.yaml:10:1: Trigger "t" in namespace "default": spec: missing required field "broker""#
    );
    assert_eq!(
        error(&with_trigger("  broker: default\n")),
        r#"c.yaml:10:1: Trigger "t" in namespace "default": spec: missing required field "subscriber""#
    );
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n"),
        r#"c.yaml:1:1: Trigger "t" in namespace "default": missing required field "spec""#
    );
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1\nkind: Broker\n"),
        r#"c.yaml:1:1: missing required field "metadata""#
    );
    assert_eq!(
        error("kind: Broker\nmetadata: {name: b}\n"),
        r#"c.yaml:1:1: missing required field "apiVersion""#
    );
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1\nmetadata: {name: b}\n"),
        r#"c.yaml:1:1: missing required field "kind""#
    );
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {namespace: x}\n"),
        r#"c.yaml:3:1: metadata: missing required field "name""#
    );
}

#[test]
fn kinds_and_api_versions() {
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1\nkind: Triger\nmetadata: {name: t}\n"),
        r#"c.yaml:2:1: kind: unsupported kind "Triger" in apiVersion "eventing.knative.dev/v1", did you mean "Trigger"?; supported kinds: Broker (eventing.knative.dev/v1), Trigger (eventing.knative.dev/v1), Server (triggerfish.dev/v1alpha1), Exec (triggerfish.dev/v1alpha1), PingSource (sources.knative.dev/v1), Scheduler (triggerfish.dev/v1alpha1), EventPolicy (eventing.knative.dev/v1alpha1), OssSource (triggerfish.dev/v1alpha1), S3Source (triggerfish.dev/v1alpha1), GitHubSource (triggerfish.dev/v1alpha1), RegistrySource (triggerfish.dev/v1alpha1), BucketWatch (triggerfish.dev/v1alpha1), WorkerPool (triggerfish.dev/v1alpha1), KafkaSource (sources.knative.dev/v1beta1), KafkaSink (eventing.knative.dev/v1alpha1), RocketMQSource (triggerfish.dev/v1alpha1), RocketMQSink (triggerfish.dev/v1alpha1)"#
    );
    assert_eq!(
        error("apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: p}\n"),
        r#"c.yaml:2:1: kind: unsupported kind "ContainerSource" in apiVersion "sources.knative.dev/v1"; supported kinds: Broker (eventing.knative.dev/v1), Trigger (eventing.knative.dev/v1), Server (triggerfish.dev/v1alpha1), Exec (triggerfish.dev/v1alpha1), PingSource (sources.knative.dev/v1), Scheduler (triggerfish.dev/v1alpha1), EventPolicy (eventing.knative.dev/v1alpha1), OssSource (triggerfish.dev/v1alpha1), S3Source (triggerfish.dev/v1alpha1), GitHubSource (triggerfish.dev/v1alpha1), RegistrySource (triggerfish.dev/v1alpha1), BucketWatch (triggerfish.dev/v1alpha1), WorkerPool (triggerfish.dev/v1alpha1), KafkaSource (sources.knative.dev/v1beta1), KafkaSink (eventing.knative.dev/v1alpha1), RocketMQSource (triggerfish.dev/v1alpha1), RocketMQSink (triggerfish.dev/v1alpha1)"#
    );
    assert_eq!(
        error("apiVersion: eventing.knative.dev/v1beta1\nkind: Trigger\nmetadata: {name: t}\n"),
        r#"c.yaml:1:1: apiVersion: Trigger is read with apiVersion "eventing.knative.dev/v1", found "eventing.knative.dev/v1beta1""#
    );
    assert_eq!(
        error("apiVersion: 1\nkind: Broker\n"),
        "c.yaml:1:1: apiVersion: apiVersion must be a string, found a number"
    );
    assert_eq!(
        error("- a\n- b\n"),
        "c.yaml:1:1: a document must be a mapping with apiVersion, kind, metadata and spec, found a sequence"
    );
}

#[test]
fn filter_dialects() {
    let source = with_trigger(
        "  broker: default\n  subscriber: {uri: \"display:\"}\n  filters:\n    - exact: {type: a}\n    - exact: {type: a}\n      prefix: {source: b}\n    - {}\n",
    );
    assert_eq!(
        errors(&source),
        [
            r#"c.yaml:15:7: Trigger "t" in namespace "default": spec.filters[1]: each filter must use exactly one dialect, found "exact" and "prefix""#,
            r#"c.yaml:17:7: Trigger "t" in namespace "default": spec.filters[2]: each filter must use exactly one dialect, found none; use one of exact, prefix, suffix, all, any, not or cesql"#,
        ]
    );
}

#[test]
fn filter_attributes_and_values() {
    let source = with_trigger(concat!(
        "  broker: default\n",
        "  subscriber: {uri: \"display:\"}\n",
        "  filter:\n",
        "    attributes:\n",
        "      Type: a\n",
        "      source: \"\"\n",
        "  filters:\n",
        "    - exact: {type: a, source: b}\n",
        "    - prefix: {my-ext: a}\n",
        "    - suffix: {subject: \"\"}\n",
        "    - all: []\n",
        "    - any:\n",
        "        - exact: {type: \"\"}\n",
        "    - not: {cesql: \" \"}\n",
        "    - exact: {}\n",
    ));
    assert_eq!(
        errors(&source),
        [
            r#"c.yaml:15:7: Trigger "t" in namespace "default": spec.filter.attributes.Type: attribute name "Type" is invalid: it must start with a lowercase letter and contain only lowercase letters and digits"#,
            r#"c.yaml:18:7: Trigger "t" in namespace "default": spec.filters[0].exact: "exact" takes exactly one attribute, found 2; combine several with "all""#,
            r#"c.yaml:19:16: Trigger "t" in namespace "default": spec.filters[1].prefix.my-ext: attribute name "my-ext" is invalid: it must start with a lowercase letter and contain only lowercase letters and digits"#,
            r#"c.yaml:20:16: Trigger "t" in namespace "default": spec.filters[2].suffix.subject: empty value for attribute "subject": an empty "suffix" matches every event, so it is rejected (Knative would let it pass everything)"#,
            r#"c.yaml:21:7: Trigger "t" in namespace "default": spec.filters[3].all: "all" needs at least one filter"#,
            r#"c.yaml:23:19: Trigger "t" in namespace "default": spec.filters[4].any[0].exact.type: empty value for attribute "type": an empty "exact" matches every event, so it is rejected (Knative would let it pass everything)"#,
            r#"c.yaml:24:13: Trigger "t" in namespace "default": spec.filters[5].not.cesql: empty CESQL expression"#,
            r#"c.yaml:25:7: Trigger "t" in namespace "default": spec.filters[6].exact: "exact" takes exactly one attribute, found 0; combine several with "all""#,
        ]
    );
}

#[test]
fn unknown_filter_fields_suggest() {
    assert_eq!(
        error(&with_trigger(
            "  broker: default\n  subscriber: {uri: \"display:\"}\n  filters:\n    - sql: \"a = 'b'\"\n"
        )),
        r#"c.yaml:14:7: Trigger "t" in namespace "default": spec.filters[0]: unknown field "sql"; expected one of: exact, prefix, suffix, all, any, not, cesql"#
    );
    assert_eq!(
        error(&with_trigger(
            "  broker: default\n  subscriber: {uri: \"display:\"}\n  filters:\n    - all:\n      - exakt: {type: a}\n"
        )),
        r#"c.yaml:15:9: Trigger "t" in namespace "default": spec.filters[0].all[0]: unknown field "exakt", did you mean "exact"?"#
    );
}

#[test]
fn triggers_need_their_broker() {
    assert_eq!(
        error(&with_trigger(
            "  broker: defualt\n  subscriber: {uri: \"display:\"}\n"
        )),
        r#"c.yaml:11:3: Trigger "t" in namespace "default": spec.broker: broker "defualt" is not defined in namespace "default", did you mean "default"?"#
    );
    // The broker must be in the trigger's namespace.
    let source = format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\n  namespace: media\nspec:\n  broker: default\n  subscriber: {{uri: \"display:\"}}\n"
    );
    assert_eq!(
        error(&source),
        r#"c.yaml:12:3: Trigger "t" in namespace "media": spec.broker: broker "default" is not defined in namespace "media""#
    );
}

#[test]
fn duplicates_and_servers() {
    let source = format!("{BROKER}---\n{BROKER}");
    assert_eq!(
        error(&source),
        r#"c.yaml:9:3: Broker "default" in namespace "default": metadata.name: defined twice; the first definition is at line 4"#
    );
    // Same name, other namespace or other kind: fine.
    load(&format!("{BROKER}---\n{BROKER}  namespace: other\n"));
    let server = "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nmetadata: {name: a}\n";
    let second = "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nmetadata: {name: b}\n";
    assert_eq!(
        error(&format!("{server}---\n{second}")),
        r#"c.yaml:6:1: Server "b": kind: a config may hold only one Server; the first is at line 2"#
    );
}

#[test]
fn names_follow_kubernetes_rules() {
    assert_eq!(
        errors(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: My_Broker\n  namespace: a.b\n"
        ),
        [
            r#"c.yaml:4:3: Broker "My_Broker" in namespace "a.b": metadata.name: "My_Broker" is not a valid name: it may contain only lowercase letters, digits, '-' and '.'"#,
            r#"c.yaml:5:3: Broker "My_Broker" in namespace "a.b": metadata.namespace: "a.b" is not a valid namespace: it must not contain '.'"#,
        ]
    );
}

#[test]
fn delivery_fields_are_typed() {
    let delivery = |fields: &str| {
        error(&with_trigger(&format!(
            "  broker: default\n  subscriber: {{uri: \"display:\"}}\n  delivery:\n{fields}"
        )))
    };
    assert_eq!(
        delivery("    backoffDelay: 10s\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.backoffDelay: "10s" is not an ISO-8601 duration: it must start with "P", e.g. PT0.2S or PT30S"#
    );
    assert_eq!(
        delivery("    timeout: P1M\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.timeout: months (M before T) are not supported because their length varies; write days instead, e.g. P30D, or PT1M for minutes"#
    );
    assert_eq!(
        delivery("    timeout: PT0S\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.timeout: must be more than zero: a zero timeout fails every attempt"#
    );
    assert_eq!(
        delivery("    retry: -1\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.retry: invalid value: integer `-1`, expected u32"#
    );
    assert_eq!(
        delivery("    backoffPolicy: expotential\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.backoffPolicy: unknown value "expotential", did you mean "exponential"?"#
    );
    assert_eq!(
        delivery("    jitter: random\n"),
        r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.jitter: unknown value "random"; expected one of: none, full"#
    );
    for depth in ["0", "1025"] {
        assert_eq!(
            delivery(&format!("    pipelining: {depth}\n")),
            format!(
                r#"c.yaml:14:5: Trigger "t" in namespace "default": spec.delivery.pipelining: {depth} requests per connection: expected 1 to 1024"#
            )
        );
    }
    assert_eq!(
        delivery("    deadLetterSink: {uri: /dlq}\n"),
        r#"c.yaml:14:22: Trigger "t" in namespace "default": spec.delivery.deadLetterSink.uri: "/dlq" is relative; without a ref, uri must be absolute, e.g. http://host/path"#
    );
}

#[test]
fn trigger_extensions_and_annotations() {
    assert_eq!(
        error(&with_trigger(
            "  broker: default\n  subscriber: {uri: \"display:\"}\n  maxInFlight: 0\n"
        )),
        r#"c.yaml:13:3: Trigger "t" in namespace "default": spec.maxInFlight: invalid value: integer `0`, expected a nonzero u32"#
    );
    let source = format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\n  annotations:\n    kafka.eventing.knative.dev/delivery.order: Ordered\nspec:\n  broker: default\n  subscriber: {{uri: \"display:\"}}\n"
    );
    assert_eq!(
        error(&source),
        r#"c.yaml:11:5: Trigger "t" in namespace "default": metadata.annotations["kafka.eventing.knative.dev/delivery.order"]: unknown value "Ordered", did you mean "ordered"?"#
    );
}

#[test]
fn server_values_are_typed_and_consistent() {
    let server = |spec: &str| {
        errors(&format!(
            "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nspec:\n{spec}"
        ))
    };
    assert_eq!(
        server("  listen: {http: localhost}\n"),
        [r#"c.yaml:4:12: Server "default": spec.listen.http: invalid socket address syntax"#]
    );
    assert_eq!(
        server("  limits: {maxEventBytes: 256kb}\n"),
        [
            r#"c.yaml:4:12: Server "default": spec.limits.maxEventBytes: unknown size unit "kb"; use B, KiB, MiB, GiB, TiB (or Ki, Mi, Gi, Ti), or KB, MB, GB, TB"#
        ]
    );
    assert_eq!(
        server(
            "  limits: {maxEventBytes: 8MiB}\n  queues:\n    trigger: {events: 10, bytes: 1MiB}\n"
        ),
        [
            r#"c.yaml:4:3: Server "default": spec.limits.maxRequestBytes: 4MiB is smaller than limits.maxEventBytes (8MiB), so no event would fit"#,
            r#"c.yaml:6:27: Server "default": spec.queues.trigger.bytes: 1MiB is smaller than limits.maxEventBytes (8MiB), so no event would fit"#,
        ]
    );
    // A batch is queued whole, and one key's events share a shard.
    assert_eq!(
        server("  queues:\n    shard: {events: 100, bytes: 1MiB}\n"),
        [
            r#"c.yaml:5:13: Server "default": spec.queues.shard.events: 100 is smaller than limits.maxBatchEvents (10000): a request whose events share a partition key goes to one shard whole, so one that large could never be queued"#,
            r#"c.yaml:5:26: Server "default": spec.queues.shard.bytes: 1MiB is smaller than limits.maxRequestBytes (4MiB): a request whose events share a partition key goes to one shard whole, so one that large could never be queued"#,
        ]
    );
    load(
        "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nspec:\n  queues:\n    shard: {events: 100, bytes: 1MiB}\n  limits: {maxBatchEvents: 100, maxRequestBytes: 1MiB}\n",
    );
    // A body is held whole while it is read.
    assert_eq!(
        server("  limits: {maxBufferedBytes: 1MiB}\n"),
        [
            r#"c.yaml:4:12: Server "default": spec.limits.maxBufferedBytes: 1MiB is below limits.maxRequestBytes (4MiB): a request of that size could never be read"#
        ]
    );
    assert_eq!(
        server("  shutdownGracePeriod: 30\n"),
        [
            r#"c.yaml:4:3: Server "default": spec.shutdownGracePeriod: invalid type: integer `30`, expected a string"#
        ]
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = errors(&format!("{BROKER}---\nkind: [Trigger\n"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("c.yaml:7:1: invalid YAML: did not find expected ',' or ']', while parsing a flow sequence at line 6 column 7"),
        "{}",
        errors[0]
    );
}

/// Without a final line break the YAML scanner reports the end of the text on the line after
/// the last one; the error points at the end of the last line instead (a `config_load` fuzz
/// finding).
#[test]
fn a_syntax_error_at_the_end_of_the_text_is_on_its_last_line() {
    let errors = errors(&format!("{BROKER}---\nkind: [Trigger"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("c.yaml:6:15: invalid YAML: did not find expected ',' or ']'"),
        "{}",
        errors[0]
    );
}

#[test]
fn every_document_is_checked_and_errors_come_in_file_order() {
    let source = format!(
        "{}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: u}}\nspec:\n  broker: nope\n  subscriber: {{uri: ftp://x}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Brokr\nmetadata: {{name: b}}\n",
        with_trigger("  brokr: default\n  subscriber: {uri: \"display:\"}\n")
    );
    let errors = errors(&source);
    let lines: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        lines,
        ["c.yaml:11:3", "c.yaml:19:3", "c.yaml:20:16", "c.yaml:23:1"],
        "{errors:#?}"
    );
}

#[test]
fn build_steps_report_in_the_same_shape() {
    let config = load(QUICKSTART);
    let server = config.server_id().unwrap().clone();
    let error = config.error_at(&server, "spec.shards".parse().unwrap(), "too many shards");
    assert_eq!(
        error.to_string(),
        r#"c.yaml:8:3: Server "default": spec.shards: too many shards"#
    );
    assert_eq!(error.document(), Some(0));
    assert!(matches!(error.kind(), ErrorKind::Build(_)));
    // An unknown resource still gives a usable message.
    let stranger = ResourceId::namespaced(Kind::Trigger, "x", "y");
    assert_eq!(
        config
            .error_at(&stranger, FieldPath::root(), "gone")
            .to_string(),
        r#"c.yaml: Trigger "y" in namespace "x": gone"#
    );
}

#[test]
fn max_in_flight_defaults_to_eight_batches_of_a_batched_http_subscriber() {
    const HTTP: &str = "http://sub.example/";
    const QUIC: &str = "quic://peer:8443/default/default";
    // (subscriber, extra spec, expected maxInFlight)
    let cases = [
        (HTTP, "batch: {maxEvents: 100}", 800),
        (HTTP, "batch: {maxEvents: 50}", 400),
        (HTTP, "batch: {}", 800),
        // Eight batches of 20 are fewer than the plain default.
        (HTTP, "batch: {maxEvents: 20}", 256),
        (HTTP, "batch: {maxEvents: 100}\n  maxInFlight: 300", 300),
        (HTTP, "maxInFlight: 8", 8),
        (HTTP, "", 256),
        // QUIC frames in flight do not follow maxInFlight.
        (QUIC, "batch: {maxEvents: 100}", 256),
    ];
    for (uri, extra, expected) in cases {
        let c = load(&with_trigger(&format!(
            "  broker: default\n  subscriber: {{uri: \"{uri}\"}}\n  {extra}\n"
        )));
        assert_eq!(
            c.triggers()[0].max_in_flight.get(),
            expected,
            "{uri} with {extra:?}"
        );
    }
    assert_eq!(DEFAULT_MAX_IN_FLIGHT.get(), 256);
}

#[test]
fn batch_on_an_http_subscriber_turns_on_batched_content_mode() {
    let c = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"https://sub.example/x\"}\n  batch: {maxEvents: 50, linger: PT0.01S}\n",
    ));
    let batch = c.triggers()[0].http_batch.expect("batched");
    assert_eq!(batch.max_events.get(), 50);
    assert_eq!(batch.linger, Duration::from_millis(10));

    let c = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"http://sub.example/\"}\n  batch: {}\n",
    ));
    assert_eq!(c.triggers()[0].http_batch, Some(Batching::default()));

    let c = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"http://sub.example/\"}\n",
    ));
    assert_eq!(
        c.triggers()[0].http_batch,
        None,
        "one event per request by default"
    );

    let c = load(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"quic://peer:8443/default/default\"}\n  batch: {maxEvents: 7}\n",
    ));
    assert_eq!(c.triggers()[0].http_batch, None, "QUIC keeps its own");
    let Destination::Quic(q) = &c.triggers()[0].subscriber else {
        panic!("not QUIC")
    };
    assert_eq!(q.batch.max_events.get(), 7);
}

#[test]
fn batch_elsewhere_or_too_large_is_an_error() {
    let e = error(&with_trigger(
        "  broker: default\n  subscriber:\n    ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: display}\n  batch: {maxEvents: 5}\n",
    ));
    assert!(
        e.contains("spec.batch: batch applies only to quic:// and HTTP(S) subscribers"),
        "{e}"
    );
    let e = error(&with_trigger(
        "  broker: default\n  subscriber: {uri: \"http://sub.example/\"}\n  batch: {maxEvents: 10001}\n",
    ));
    assert!(
        e.contains("spec.batch.maxEvents: 10001 is over the limit of 10000 events"),
        "{e}"
    );
}
