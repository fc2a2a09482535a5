//! The deployment files: every Kubernetes manifest under `deploy/kubernetes/` against the
//! Kubernetes schemas (strict), the KEDA ScaledObject against its schema, the configs in the
//! ConfigMaps through `triggerfish validate`, the NATS config through `nats-server -t`, and the
//! Dockerfile's few promises.
//!
//! The schemas come from `kubernetes-validate` (PyPI), which `scripts/dev setup` installs,
//! pinned, into `$TRIGGERFISH_CACHE/venv/k8s`; `deploy/kubernetes/validate.py` does the
//! checking and writes the ConfigMaps' configs out for the checks here.
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

/// Runs `validate.py` on the manifests in `dir`, writing the configs to `out`.
fn validate(dir: &Path, out: &Path) -> Output {
    Command::new(python())
        .arg(dir.join("validate.py"))
        .arg(out)
        .output()
        .unwrap()
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
    let o = validate(&workspace().join("deploy/kubernetes"), out.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resources valid"), "{}", text(&o));

    // The router's config, as the ConfigMap holds it, in the base and the GPU overlay.
    for variant in ["base", "gpu"] {
        let config = out
            .path()
            .join(variant)
            .join("triggerfish-config.config.yaml");
        let o = run_cli(
            out.path(),
            &["validate", "--config", config.to_str().unwrap()],
            None,
        );
        assert!(o.status.success(), "{variant}: {}", text(&o));
    }

    // The NATS config, with the variable the StatefulSet sets.
    let nats = out.path().join("base/nats-config.nats.conf");
    let o = Command::new(triggerfish_tests::nats::binary())
        .args(["-t", "-c"])
        .arg(&nats)
        .env("POD_NAME", "nats-0")
        .output()
        .unwrap();
    assert!(o.status.success(), "nats.conf: {}", text(&o));
}

#[test]
fn the_worker_config_is_valid() {
    let out = tempfile::tempdir().unwrap();
    let o = validate(&workspace().join("deploy/kubernetes"), out.path());
    assert!(o.status.success(), "{}", text(&o));
    for variant in ["base", "gpu"] {
        let config = out
            .path()
            .join(variant)
            .join("triggerfish-worker-config.worker.yaml");
        let o = run_cli(
            out.path(),
            &["validate", "--config", config.to_str().unwrap()],
            None,
        );
        assert!(o.status.success(), "{variant}: {}", text(&o));
    }
}

/// The validator is strict: a misspelt field, a wrong type or a broken reference fails.
#[test]
fn the_validator_rejects_broken_manifests() {
    let cases = [
        (
            "base/router.yaml",
            "livenessProbe:",
            "livenesProbe:",
            "livenesProbe",
        ),
        (
            "base/nats.yaml",
            "replicas: 3",
            "replicas: three",
            "replicas",
        ),
        (
            "base/worker-scaledobject.yaml",
            "lagThreshold:",
            "lagTreshold:",
            "lagThreshold",
        ),
        (
            "base/worker-scaledobject.yaml",
            "stream: TF_media_uploads",
            "stream: TF_media_upload",
            "stream",
        ),
        (
            "overlays/gpu/worker-gpu.yaml",
            "name: worker",
            "name: wroker",
            "containers",
        ),
    ];
    for (file, from, to, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&workspace().join("deploy/kubernetes"), dir.path());
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
