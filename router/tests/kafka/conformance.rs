//! The Kafka vectors of the CloudEvents conformance suite
//! (`shared/data/cloudevents/conformance/features/kafka-protocol-binding.feature`), produced to
//! a real broker and read by a `KafkaSource`: every record passes through as the event the
//! feature file states, in binary and in structured mode.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Harness, Sink};
use crate::tansu::{Tansu, produce};

/// One scenario: the record, and the attributes and JSON data the event must have.
#[derive(Debug, Default)]
struct Scenario {
    name: String,
    payload: String,
    headers: Vec<(String, String)>,
    attributes: Vec<(String, String)>,
    data: serde_json::Value,
}

fn feature_file() -> PathBuf {
    let dir = match std::env::var_os("TRIGGERFISH_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    };
    let file = dir.join("cloudevents/conformance/features/kafka-protocol-binding.feature");
    assert!(
        file.is_file(),
        "{} not found; set TRIGGERFISH_SHARED_DATA",
        file.display()
    );
    file
}

/// Reads the feature file's scenarios, expanding outlines with their examples. Only what this
/// file uses is understood: doc strings, two-column tables, `<placeholders>`.
fn scenarios() -> Vec<Scenario> {
    let text = std::fs::read_to_string(feature_file()).unwrap();
    let mut lines = text.lines().peekable();
    let mut out = Vec::new();
    let mut current: Option<Scenario> = None;
    // Where the next doc string or table goes.
    let mut target = "";
    let mut examples: Vec<String> = Vec::new();
    let mut in_examples = false;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.starts_with("Scenario") {
            if let Some(s) = current.take() {
                push_expanded(&mut out, s, &examples);
            }
            examples.clear();
            in_examples = false;
            current = Some(Scenario {
                name: t.to_owned(),
                ..Scenario::default()
            });
            continue;
        }
        let Some(s) = current.as_mut() else { continue };
        if t.starts_with("Given a Kafka message with payload") {
            target = "payload";
        } else if t.starts_with("And Kafka headers") {
            target = "headers";
        } else if t.starts_with("Then the attributes are") {
            target = "attributes";
        } else if t.starts_with("And the data is equal to the following JSON") {
            target = "data";
        } else if t.starts_with("Examples") {
            in_examples = true;
        } else if t == "\"\"\"" {
            let mut doc = String::new();
            for l in lines.by_ref() {
                if l.trim() == "\"\"\"" {
                    break;
                }
                doc.push_str(l.trim());
                doc.push('\n');
            }
            match target {
                "payload" => s.payload = doc,
                "data" => s.data = serde_json::from_str(&doc).unwrap(),
                other => panic!("doc string after {other:?}"),
            }
        } else if t.starts_with('|') {
            let cells: Vec<String> = t
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if in_examples {
                if cells[0] != "contentType" {
                    examples.push(cells[0].clone());
                }
                continue;
            }
            if cells[0] == "key" {
                continue;
            }
            let pair = (cells[0].clone(), cells[1].clone());
            match target {
                "headers" => s.headers.push(pair),
                "attributes" => s.attributes.push(pair),
                other => panic!("table after {other:?}"),
            }
        }
    }
    if let Some(s) = current.take() {
        push_expanded(&mut out, s, &examples);
    }
    out
}

fn push_expanded(out: &mut Vec<Scenario>, s: Scenario, examples: &[String]) {
    if examples.is_empty() {
        out.push(s);
        return;
    }
    for value in examples {
        out.push(Scenario {
            name: format!("{} [{value}]", s.name),
            payload: s.payload.clone(),
            headers: s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.replace("<contentType>", value)))
                .collect(),
            attributes: s.attributes.clone(),
            data: s.data.clone(),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_vectors_pass_through() {
    let scenarios = scenarios();
    assert_eq!(
        scenarios.len(),
        3,
        "one binary scenario and a structured outline with two content types"
    );
    let tansu = Tansu::start().await;
    tansu.create_topic("vectors", 1).await;
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: vectors}}
spec:
  bootstrapServers: ["{addr}"]
  topics: [vectors]
  initialOffset: earliest
  clientConfig: {{session.timeout.ms: "6000"}}
  sink: {{uri: "{uri}"}}
"#,
        addr = tansu.addr,
        uri = sink.uri(),
    );
    let h = Harness::start(&yaml).await;
    let producer = tansu.producer();
    for s in &scenarios {
        let headers: Vec<(&str, &[u8])> = s
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        produce(
            &producer,
            "vectors",
            None,
            None,
            &headers,
            s.payload.trim().as_bytes(),
        )
        .await;
    }
    let got = sink.wait(scenarios.len(), Duration::from_secs(30)).await;
    assert_eq!(got.len(), scenarios.len());
    for s in &scenarios {
        // The vectors differ in how the record carries the event, not in the event: every
        // delivered event must be what every scenario expects.
        for r in &got {
            for (name, value) in &s.attributes {
                let actual = if name == "datacontenttype" {
                    r.headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                } else {
                    r.attr(name)
                };
                assert_eq!(
                    actual.as_deref(),
                    Some(value.as_str()),
                    "{}: {name}",
                    s.name
                );
            }
            assert_eq!(r.json(), s.data, "{}", s.name);
        }
    }
    h.shutdown().await;
}
