//! Config files for the router under test: Knative YAML from small builders.
//!
//! Snippets are YAML as a user writes it; the builders only indent them and join documents.
//!
//! ```
//! use triggerfish_tests::config::{Config, Trigger};
//! let yaml = Config::new()
//!     .broker("default", Some("retry: 2\nbackoffDelay: PT0.01S"))
//!     .trigger(Trigger::new("t", "http://127.0.0.1:1/").filter("filters:\n  - exact: {type: a}"))
//!     .render();
//! assert!(yaml.contains("kind: Trigger"));
//! ```

/// Indents every non-empty line of `text` by `n` spaces.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config file: a `Server` document, brokers and triggers.
#[derive(Clone, Debug)]
pub struct Config {
    server: Vec<String>,
    docs: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// An empty config. Its `Server` document sets a short `shutdownGracePeriod` (PT3S), so a
    /// router stopped at the end of a test never waits long for a stalled subscriber; a
    /// [`Config::server`] line that sets it wins.
    pub fn new() -> Config {
        Config {
            server: Vec::new(),
            docs: Vec::new(),
        }
    }

    /// Adds lines to the `Server` document's `spec` (YAML at the level of `spec`'s fields).
    pub fn server(mut self, spec: &str) -> Config {
        self.server.push(spec.to_owned());
        self
    }

    /// Adds broker `name` in namespace `default`, with a `spec.delivery` if given (YAML at the
    /// level of `delivery`'s fields).
    pub fn broker(mut self, name: &str, delivery: Option<&str>) -> Config {
        let mut doc = format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {name}\n  namespace: default\n"
        );
        if let Some(d) = delivery {
            doc.push_str(&format!("spec:\n  delivery:\n{}\n", indent(d, 4)));
        }
        self.docs.push(doc);
        self
    }

    /// Adds a trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Config {
        self.docs.push(trigger.render());
        self
    }

    /// Adds a document as written.
    pub fn raw(mut self, doc: &str) -> Config {
        self.docs.push(doc.to_owned());
        self
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let mut spec = self.server.join("\n");
        if !spec
            .lines()
            .any(|l| l.trim_start().starts_with("shutdownGracePeriod"))
        {
            if !spec.is_empty() {
                spec.push('\n');
            }
            spec.push_str("shutdownGracePeriod: PT3S");
        }
        let mut out = format!(
            "apiVersion: triggerfish.dev/v1alpha1\nkind: Server\nspec:\n{}\n",
            indent(&spec, 2)
        );
        for doc in &self.docs {
            out.push_str("---\n");
            out.push_str(doc);
            if !doc.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// A `Trigger` document in namespace `default`.
#[derive(Clone, Debug)]
pub struct Trigger {
    name: String,
    broker: String,
    subscriber: String,
    annotations: Vec<(String, String)>,
    spec: Vec<String>,
}

impl Trigger {
    /// A trigger of broker `default` delivering every event to `uri`.
    pub fn new(name: &str, uri: &str) -> Trigger {
        Trigger {
            name: name.to_owned(),
            broker: "default".to_owned(),
            subscriber: format!("uri: {uri}"),
            annotations: Vec::new(),
            spec: Vec::new(),
        }
    }

    /// Its broker (default: `default`).
    pub fn broker(mut self, broker: &str) -> Trigger {
        self.broker = broker.to_owned();
        self
    }

    /// Replaces the subscriber with a destination written in YAML (`ref: {...}`, say).
    pub fn subscriber(mut self, destination: &str) -> Trigger {
        self.subscriber = destination.to_owned();
        self
    }

    /// Adds a `filter:` or `filters:` block (YAML at the level of `spec`'s fields).
    pub fn filter(mut self, yaml: &str) -> Trigger {
        self.spec.push(yaml.to_owned());
        self
    }

    /// Adds `filter.attributes.type: ty`: the trigger passes events of that type.
    pub fn of_type(self, ty: &str) -> Trigger {
        self.filter(&format!("filter:\n  attributes:\n    type: {ty}"))
    }

    /// Sets `spec.delivery` (YAML at the level of `delivery`'s fields).
    pub fn delivery(mut self, yaml: &str) -> Trigger {
        self.spec.push(format!("delivery:\n{}", indent(yaml, 2)));
        self
    }

    /// Adds other `spec` fields (`maxInFlight: 1`, say).
    pub fn spec(mut self, yaml: &str) -> Trigger {
        self.spec.push(yaml.to_owned());
        self
    }

    /// Sets `kafka.eventing.knative.dev/delivery.order: ordered`.
    pub fn ordered(mut self) -> Trigger {
        self.annotations.push((
            "kafka.eventing.knative.dev/delivery.order".to_owned(),
            "ordered".to_owned(),
        ));
        self
    }

    /// The YAML document.
    pub fn render(&self) -> String {
        let mut doc = format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {}\n  namespace: default\n",
            self.name
        );
        if !self.annotations.is_empty() {
            doc.push_str("  annotations:\n");
            for (k, v) in &self.annotations {
                doc.push_str(&format!("    {k}: {v}\n"));
            }
        }
        doc.push_str(&format!("spec:\n  broker: {}\n", self.broker));
        for s in &self.spec {
            doc.push_str(&indent(s, 2));
            doc.push('\n');
        }
        doc.push_str(&format!("  subscriber:\n{}\n", indent(&self.subscriber, 4)));
        doc
    }
}
