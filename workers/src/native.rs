//! Finding the native pieces the pipelines load at run time: the ONNX Runtime shared library
//! and the model files.
//!
//! Each is looked up in a fixed order, and the first hit wins:
//!
//! 1. an explicit path (from the `WorkerPool` config or a command-line flag);
//! 2. the environment: `TRIGGERFISH_ORT_LIB`, then `ORT_DYLIB_PATH`, for the library;
//!    `TRIGGERFISH_MODELS` (a directory) for the models;
//! 3. the cache that `scripts/dev setup` fills: `$TRIGGERFISH_CACHE`, else
//!    `$XDG_CACHE_HOME/triggerfish`, else `~/.cache/triggerfish`; the library is
//!    `onnxruntime/<version>/libonnxruntime.so.<version>` (the pinned version first, then the
//!    newest other), the models are in `models/`.
//!
//! A miss is a [`NativeError`] that lists every place looked at and names the command that
//! fetches the piece, never a panic: `ort` itself panics with "dlopen failed" when it is used
//! without a library, so nothing in this crate touches `ort` before [`locate_ort_library`] has
//! found one and [`crate::infer`] has loaded it.
//!
//! What this module does not do: download anything (the setup script does, with pinned
//! hashes), or check that a file is a valid library or model (loading does).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The ONNX Runtime version `scripts/dev setup` installs, preferred in the cache.
pub const PINNED_ORT_VERSION: &str = "1.31.1";

/// The command that installs the ONNX Runtime library and the models into the cache.
pub const SETUP_COMMAND: &str = "scripts/dev setup";

/// A model the pipelines use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Silero VAD (`silero_vad.onnx`, from the `silero-vad` 6.2.3 wheel).
    SileroVad,
    /// PP-OCRv4 text detection (`ch_PP-OCRv4_det_infer.onnx`, from `rapidocr-onnxruntime` 1.4.4).
    OcrDetection,
    /// PP-OCRv4 text recognition (`ch_PP-OCRv4_rec_infer.onnx`); its character list is in the
    /// model's metadata.
    OcrRecognition,
}

impl Model {
    /// Every model, in the order errors list them.
    pub const ALL: [Model; 3] = [Model::SileroVad, Model::OcrDetection, Model::OcrRecognition];

    /// The file name in the models directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            Model::SileroVad => "silero_vad.onnx",
            Model::OcrDetection => "ch_PP-OCRv4_det_infer.onnx",
            Model::OcrRecognition => "ch_PP-OCRv4_rec_infer.onnx",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// A native piece that could not be found.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No ONNX Runtime library at any of the places looked at.
    #[error(
        "ONNX Runtime library not found (looked at: {}); run `{SETUP_COMMAND}` to install it into the cache, or set TRIGGERFISH_ORT_LIB to a libonnxruntime.so",
        list(.searched)
    )]
    OrtLibraryNotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// A model file is missing.
    #[error(
        "model {model} not found (looked at: {}); run `{SETUP_COMMAND}` to install the models into the cache, or set TRIGGERFISH_MODELS to a directory that holds {model}",
        list(.searched)
    )]
    ModelNotFound {
        /// The model.
        model: Model,
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere: no explicit path, no environment variable, and no home directory for the cache".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where to look, with the environment injected so that lookups are testable without
/// changing the process environment.
#[derive(Clone, Debug, Default)]
pub struct Locator {
    ort_lib: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    env_ort_lib: Vec<(String, PathBuf)>,
    env_models: Option<PathBuf>,
    cache: Option<PathBuf>,
}

impl Locator {
    /// A locator that reads the process environment, with optional explicit paths (which take
    /// precedence over everything else).
    pub fn from_env(ort_lib: Option<PathBuf>, models_dir: Option<PathBuf>) -> Locator {
        Locator::with_env(ort_lib, models_dir, |name| std::env::var_os(name))
    }

    /// A locator over an explicit environment (`env(name)` returns a variable's value).
    pub fn with_env(
        ort_lib: Option<PathBuf>,
        models_dir: Option<PathBuf>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Locator {
        let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let env_ort_lib = ["TRIGGERFISH_ORT_LIB", "ORT_DYLIB_PATH"]
            .into_iter()
            .filter_map(|name| non_empty(name).map(|p| (name.to_owned(), p)))
            .collect();
        let cache = non_empty("TRIGGERFISH_CACHE")
            .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("triggerfish")))
            .or_else(|| non_empty("HOME").map(|h| h.join(".cache").join("triggerfish")));
        Locator {
            ort_lib,
            models_dir,
            env_ort_lib,
            env_models: non_empty("TRIGGERFISH_MODELS"),
            cache,
        }
    }

    /// The cache directory, if one could be determined.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// Finds the ONNX Runtime shared library.
    pub fn ort_library(&self) -> Result<PathBuf, NativeError> {
        let mut searched = Vec::new();
        let explicit = self
            .ort_lib
            .iter()
            .chain(self.env_ort_lib.iter().map(|(_, p)| p));
        for candidate in explicit {
            if candidate.is_file() {
                return Ok(candidate.clone());
            }
            searched.push(candidate.clone());
        }
        if let Some(cache) = &self.cache {
            let root = cache.join("onnxruntime");
            let pinned = root
                .join(PINNED_ORT_VERSION)
                .join(format!("libonnxruntime.so.{PINNED_ORT_VERSION}"));
            if pinned.is_file() {
                return Ok(pinned);
            }
            searched.push(pinned);
            // Any other version the cache holds, newest first.
            let mut others: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.to_owned();
                    let key = version
                        .split('.')
                        .map(|p| p.parse().ok())
                        .collect::<Option<Vec<u32>>>()?;
                    let lib = entry.path().join(format!("libonnxruntime.so.{version}"));
                    lib.is_file().then_some((key, lib))
                })
                .collect();
            others.sort();
            if let Some((_, lib)) = others.pop() {
                return Ok(lib);
            }
        }
        Err(NativeError::OrtLibraryNotFound { searched })
    }

    /// Finds one model: in the explicit directory, else `TRIGGERFISH_MODELS`, else the cache.
    pub fn model(&self, model: Model) -> Result<PathBuf, NativeError> {
        let mut searched = Vec::new();
        let dirs = [
            self.models_dir.clone(),
            self.env_models.clone(),
            self.cache.as_ref().map(|c| c.join("models")),
        ];
        for dir in dirs.into_iter().flatten() {
            let candidate = dir.join(model.file_name());
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate);
        }
        Err(NativeError::ModelNotFound { model, searched })
    }
}

/// Finds the ONNX Runtime library with the process environment; see the module docs.
pub fn locate_ort_library(explicit: Option<&Path>) -> Result<PathBuf, NativeError> {
    Locator::from_env(explicit.map(Path::to_path_buf), None).ort_library()
}

/// Finds a model with the process environment; see the module docs.
pub fn locate_model(model: Model, models_dir: Option<&Path>) -> Result<PathBuf, NativeError> {
    Locator::from_env(None, models_dir.map(Path::to_path_buf)).model(model)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn locator(
        explicit: Option<PathBuf>,
        models: Option<PathBuf>,
        env: &[(&str, &Path)],
    ) -> Locator {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned()))
            .collect();
        Locator::with_env(explicit, models, |name| env.get(name).cloned())
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn explicit_path_wins_then_env_then_cache() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = dir.path().join("explicit.so");
        let from_env = dir.path().join("env.so");
        let cache = dir.path().join("cache");
        let cached = cache.join("onnxruntime/1.31.1/libonnxruntime.so.1.31.1");
        touch(&explicit);
        touch(&from_env);
        touch(&cached);
        let env = [
            ("TRIGGERFISH_ORT_LIB", from_env.as_path()),
            ("TRIGGERFISH_CACHE", cache.as_path()),
        ];
        let l = locator(Some(explicit.clone()), None, &env);
        assert_eq!(l.ort_library().unwrap(), explicit);
        let l = locator(None, None, &env);
        assert_eq!(l.ort_library().unwrap(), from_env);
        let l = locator(None, None, &[("TRIGGERFISH_CACHE", cache.as_path())]);
        assert_eq!(l.ort_library().unwrap(), cached);
        // ORT_DYLIB_PATH, ort's own variable, is honoured too.
        let l = locator(None, None, &[("ORT_DYLIB_PATH", from_env.as_path())]);
        assert_eq!(l.ort_library().unwrap(), from_env);
    }

    #[test]
    fn a_missing_explicit_path_falls_through_but_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.so");
        let l = locator(Some(missing.clone()), None, &[("HOME", dir.path())]);
        let err = l.ort_library().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("scripts/dev setup"), "{text}");
        assert!(
            text.contains(".cache/triggerfish/onnxruntime/1.31.1"),
            "{text}"
        );
    }

    #[test]
    fn the_newest_other_cached_version_is_used_when_the_pinned_one_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("onnxruntime/1.9.0/libonnxruntime.so.1.9.0"));
        touch(
            &dir.path()
                .join("onnxruntime/1.32.0/libonnxruntime.so.1.32.0"),
        );
        let l = locator(None, None, &[("TRIGGERFISH_CACHE", dir.path())]);
        assert!(
            l.ort_library()
                .unwrap()
                .ends_with("libonnxruntime.so.1.32.0")
        );
    }

    #[test]
    fn models_resolve_by_directory_and_name_the_setup_command() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("m");
        touch(&models.join("silero_vad.onnx"));
        let l = locator(None, None, &[("TRIGGERFISH_MODELS", models.as_path())]);
        assert_eq!(
            l.model(Model::SileroVad).unwrap(),
            models.join("silero_vad.onnx")
        );
        let err = l.model(Model::OcrDetection).unwrap_err().to_string();
        assert!(err.contains("ch_PP-OCRv4_det_infer.onnx"), "{err}");
        assert!(err.contains("scripts/dev setup"), "{err}");
        // The explicit directory comes first.
        let other = dir.path().join("other");
        touch(&other.join("silero_vad.onnx"));
        let l = locator(
            None,
            Some(other.clone()),
            &[("TRIGGERFISH_MODELS", models.as_path())],
        );
        assert_eq!(
            l.model(Model::SileroVad).unwrap(),
            other.join("silero_vad.onnx")
        );
    }
}
