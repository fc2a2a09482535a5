//! The example configs of `deploy/examples` that use sources load and build (with their
//! secret files in place).

use triggerfish_core::config::Config;
use triggerfish_router::plan::Plan;

fn build(name: &str) -> Plan {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{root}/deploy/examples/{name}")).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    for file in ["github-webhook", "registry-hook"] {
        std::fs::write(secrets.path().join(file), "example-secret\n").unwrap();
    }
    let text = text.replace("data/secrets/", &format!("{}/", secrets.path().display()));
    let config = Config::load(&text, name).unwrap_or_else(|e| panic!("{e}"));
    Plan::build(config).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn build_on_push_and_release_on_image_build() {
    assert_eq!(build("build-on-push.yaml").event_sources.len(), 1);
    assert_eq!(build("release-on-image.yaml").event_sources.len(), 1);
}

#[test]
fn the_quickstart_bucket_watch_example_builds_when_uncommented() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{root}/deploy/examples/quickstart.yaml")).unwrap();
    let (head, example) = text.split_once("# ---\n").unwrap();
    let example: String = example
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let example = example.replace(
        "directory: data/media",
        "directory: /tmp/triggerfish-example-media",
    );
    let config = Config::load(&format!("{head}---\n{example}"), "quickstart.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan::build(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.event_sources.len(), 1);
}
