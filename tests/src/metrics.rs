//! Reading the Prometheus text the admin endpoint serves.

/// One scrape of `/metrics`.
#[derive(Clone, Debug)]
pub struct Metrics {
    text: String,
}

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The name, with its `_total` or `_bucket` suffix.
    pub name: String,
    /// Label names and values, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Metrics {
    /// Parses a scrape.
    pub fn new(text: String) -> Metrics {
        Metrics { text }
    }

    /// The raw text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every sample.
    pub fn samples(&self) -> Vec<Sample> {
        self.text.lines().filter_map(parse_line).collect()
    }

    /// The sum of the samples named `name` whose labels include all of `labels`; 0 when there
    /// is none (a counter that was never created reads as 0).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Like [`Metrics::get`], as a count.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels) as u64
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"`, with `\"` and `\\` escapes in values.
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    value.push(match escaped {
                        'n' => '\n',
                        other => other,
                    });
                }
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.push((name.trim_start_matches(',').to_owned(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_with_labels() {
        let m = Metrics::new(
            "# HELP x y\n# TYPE triggerfish_delivery_dropped counter\ntriggerfish_delivery_dropped_total{broker=\"default/default\",reason=\"ttl_exhausted\"} 3\ntriggerfish_delivery_dropped_total{broker=\"a/b\",reason=\"shutdown\"} 1\nplain 2.5\n# EOF\n".to_owned(),
        );
        assert_eq!(
            m.get(
                "triggerfish_delivery_dropped_total",
                &[("reason", "ttl_exhausted")]
            ),
            3.0
        );
        assert_eq!(m.get("triggerfish_delivery_dropped_total", &[]), 4.0);
        assert_eq!(m.get("plain", &[]), 2.5);
        assert_eq!(m.get("missing", &[]), 0.0);
    }
}
