//! Finding (and if need be building) the `triggerfish` binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `triggerfish` binary: `$TRIGGERFISH_BIN` if set, else the one in the target directory
/// this test executable was built in (`target/debug/triggerfish` next to
/// `target/debug/deps/<test>`).
///
/// Without `$TRIGGERFISH_BIN`, the binary is brought up to date once per test process with
/// `cargo build -p triggerfish-router --bin triggerfish`: `cargo test -p triggerfish-tests`
/// does not rebuild another package's binary, and a stale one would test yesterday's router.
/// When cargo is up to date that costs a fraction of a second. After a `cargo test
/// --workspace` build it does not: that build unifies features across the workspace and its
/// dev-dependencies, which `cargo build -p` does not reproduce, so the router is compiled a
/// second time. `scripts/dev test` avoids that by passing its build's binary in
/// `$TRIGGERFISH_BIN`.
pub fn triggerfish() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TRIGGERFISH_BIN") {
            // Absolute: the router runs in a temporary working directory.
            let bin = std::fs::canonicalize(&bin).unwrap_or_else(|e| {
                panic!("TRIGGERFISH_BIN={}: {e}", PathBuf::from(&bin).display())
            });
            assert!(
                bin.is_file(),
                "TRIGGERFISH_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let bin = profile_dir.join(format!("triggerfish{}", std::env::consts::EXE_SUFFIX));
        build(profile_dir);
        assert!(
            bin.is_file(),
            "{} is missing after cargo build",
            bin.display()
        );
        bin
    })
}

/// Runs `cargo build` for the binary into the target directory that holds `profile_dir`.
fn build(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root");
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let mut cmd = Command::new(cargo);
    // `cargo test` sets these for the test process. Some build scripts (ring's) track
    // CARGO_MANIFEST_DIR, so passing them on would make this build and a `cargo build` from a
    // shell invalidate each other, rebuilding half the tree each time.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_set_by_cargo_for_crates(name) {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "triggerfish-router",
            "--bin",
            "triggerfish",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    let status = cmd.status().expect("running cargo build");
    assert!(
        status.success(),
        "cargo build -p triggerfish-router --bin triggerfish failed: {status}"
    );
}

/// Whether cargo sets `name` for the crates it compiles and runs (so that a test process has
/// it), as opposed to configuration a user sets for cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`).
fn is_set_by_cargo_for_crates(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}
