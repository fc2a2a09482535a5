//! Helpers shared by the core crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared test data directory: `$TRIGGERFISH_SHARED_DATA`, else `../shared/data` beside the
/// repository. Panics with a clear message when it is missing, so no test passes vacuously.
pub fn shared_data() -> PathBuf {
    let dir = match std::env::var_os("TRIGGERFISH_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    assert!(
        dir.is_dir(),
        "shared test data not found at {}; set TRIGGERFISH_SHARED_DATA",
        dir.display()
    );
    dir
}
