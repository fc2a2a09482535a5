//! Loading ONNX Runtime: a file that is not the library, or no library at all, is an error
//! that says what to do, never `ort`'s "dlopen failed" panic; the right library still loads
//! afterwards. (Its own test binary: the runtime is loaded once per process.)
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use triggerfish_workers::infer::{ExecutionProvider, InferError, ModelNeeds, ModelRegistry};
use triggerfish_workers::native::Locator;

#[test]
fn a_bad_library_is_an_error_and_the_good_one_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a shared library").unwrap();
    let locator = Locator::with_env(Some(bogus.clone()), None, |_| None);
    let needs = ModelNeeds {
        vad: false,
        ocr: false,
    };
    match ModelRegistry::load(&locator, needs, ExecutionProvider::Cpu, 1) {
        Err(InferError::LoadRuntime { path, .. }) => assert_eq!(path, bogus),
        other => panic!("expected LoadRuntime, got {other:?}"),
    }
    // Nothing at all: the lookup error names the setup command.
    let empty = Locator::with_env(None, None, |name| {
        (name == "TRIGGERFISH_CACHE").then(|| dir.path().join("nothing").into_os_string())
    });
    let err = ModelRegistry::load(&empty, needs, ExecutionProvider::Cpu, 1).unwrap_err();
    assert!(err.to_string().contains("scripts/dev setup"), "{err}");
    // The real one, from the environment or the cache.
    let registry = ModelRegistry::load(
        &Locator::from_env(None, None),
        ModelNeeds {
            vad: true,
            ocr: false,
        },
        ExecutionProvider::Cpu,
        1,
    )
    .unwrap();
    let mut vad = registry.vad().unwrap();
    let p = vad.step(&[0.0; 512]).unwrap();
    assert!((0.0..0.1).contains(&p), "{p}");
}
