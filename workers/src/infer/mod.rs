//! ONNX inference: the process-wide ONNX Runtime environment, session building, and the
//! model registry that worker threads build their own sessions from.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`) from the library that
//! [`crate::native`] found, exactly once per process: `ort` allows one environment per
//! process, so every pool shares it. Sessions are not shared: each worker thread builds its
//! own from the [`ModelRegistry`] when it starts and reuses them for every job it runs, so a
//! session is only ever used from one thread and never waits on a lock.
//!
//! The models and their pre- and post-processing live in [`vad`] (Silero VAD) and [`ocr`]
//! (PP-OCRv4 detection and recognition).
//!
//! What this module does not do: decode media (see [`crate::decode`]) or decide what a
//! pipeline does with the model outputs (see [`crate::pipelines`]).

pub mod geometry;
pub mod ocr;
pub mod vad;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::native::{Locator, Model, NativeError};

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// NVIDIA CUDA, when the loaded ONNX Runtime library has it (the `onnxruntime-gpu`
    /// wheel's) and a GPU is present. Otherwise sessions fall back to the CPU with a warning,
    /// so that one config serves nodes with and without GPUs.
    Cuda,
}

/// An inference failure.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The library or a model could not be found.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// The library was found but could not be loaded (not a library, wrong version).
    #[error("could not load ONNX Runtime from {path}: {message}")]
    LoadRuntime {
        /// The library.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        message: String,
    },
    /// The process-wide environment could not be created.
    #[error("could not create the ONNX Runtime environment: {0}")]
    Environment(String),
    /// A model file could not be turned into a session.
    #[error("could not load model {path}: {message}")]
    LoadModel {
        /// The model file.
        path: PathBuf,
        /// What ONNX Runtime said.
        message: String,
    },
    /// A model loaded but does not have the inputs, outputs or metadata the pipeline needs.
    #[error("model {path} is not the expected {model}: {message}")]
    WrongModel {
        /// Which model was expected.
        model: Model,
        /// The model file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A run failed.
    #[error("{model} inference failed: {message}")]
    Run {
        /// Which model.
        model: Model,
        /// What ONNX Runtime said.
        message: String,
    },
}

impl InferError {
    pub(crate) fn run(model: Model, e: impl std::fmt::Display) -> InferError {
        InferError::Run {
            model,
            message: e.to_string(),
        }
    }
}

/// The one environment of the process, and the library it came from.
static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads ONNX Runtime from `library` (once per process) and returns the environment.
///
/// A later call with another path gets the environment already loaded, with a warning: a
/// process cannot hold two ONNX Runtime libraries.
pub fn environment(library: &Path) -> Result<Environment, InferError> {
    // Held only while loading, once per process; later calls clone an `Arc`.
    let mut slot = ENVIRONMENT.lock();
    if let Some((loaded, env)) = slot.as_ref() {
        if loaded != library {
            tracing::warn!(
                loaded = %loaded.display(),
                requested = %library.display(),
                "ONNX Runtime is already loaded from another library; using it"
            );
        }
        return Ok(env.clone());
    }
    let builder = ort::init_from(library).map_err(|e| InferError::LoadRuntime {
        path: library.to_path_buf(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("triggerfish")
        .with_telemetry(false)
        .build()
        .map_err(|e| InferError::Environment(e.to_string()))?;
    *slot = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

/// How a session is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionSettings {
    /// Threads inside one operator (ONNX Runtime's intra-op pool).
    pub intra_threads: usize,
    /// CPU or CUDA.
    pub provider: ExecutionProvider,
}

/// Builds a session for `model` from `path`.
pub(crate) fn build_session(
    env: &Environment,
    model: Model,
    path: &Path,
    settings: SessionSettings,
) -> Result<Session, InferError> {
    let load_error = |e: &dyn std::fmt::Display| InferError::LoadModel {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let builder = || -> Result<ort::session::builder::SessionBuilder, InferError> {
        Session::builder(env)
            .map_err(|e| load_error(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load_error(&e))?
            .with_intra_threads(settings.intra_threads.max(1))
            .map_err(|e| load_error(&e))?
            .with_inter_threads(1)
            .map_err(|e| load_error(&e))?
            // Spinning threads burn the cores other workers need; jobs are throughput-bound.
            .with_intra_op_spinning(false)
            .map_err(|e| load_error(&e))
    };
    if settings.provider == ExecutionProvider::Cuda {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        let attempt = builder()?
            .with_execution_providers([cuda])
            .map_err(|e| load_error(&e))
            .and_then(|mut b| b.commit_from_file(path).map_err(|e| load_error(&e)));
        match attempt {
            Ok(session) => return Ok(session),
            Err(e) => tracing::warn!(
                %model,
                error = %e,
                "CUDA execution provider unavailable; running on the CPU"
            ),
        }
    }
    builder()?
        .commit_from_file(path)
        .map_err(|e| load_error(&e))
}

/// The models a pool uses and how to build sessions for them. Shared by a pool's threads;
/// each builds its own sessions.
#[derive(Clone, Debug)]
pub struct ModelRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    env: EnvHandle,
    vad: Option<PathBuf>,
    det: Option<PathBuf>,
    rec: Option<PathBuf>,
    settings: SessionSettings,
}

/// `Environment` is not `Debug`.
struct EnvHandle(Environment);

impl std::fmt::Debug for EnvHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Environment")
    }
}

/// Which models a registry must provide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelNeeds {
    /// Silero VAD.
    pub vad: bool,
    /// PP-OCRv4 detection and recognition.
    pub ocr: bool,
}

impl ModelRegistry {
    /// Locates ONNX Runtime and the needed models, loads the runtime, and checks that each
    /// model file exists. Sessions are built later, per thread ([`Self::vad`], [`Self::ocr`]).
    ///
    /// `intra_threads` is how many threads one session may use inside an operator; a pool
    /// of N threads on C cores passes about C / N.
    pub fn load(
        locator: &Locator,
        needs: ModelNeeds,
        provider: ExecutionProvider,
        intra_threads: usize,
    ) -> Result<ModelRegistry, InferError> {
        let find = |needed: bool, model: Model| -> Result<Option<PathBuf>, InferError> {
            needed
                .then(|| locator.model(model))
                .transpose()
                .map_err(InferError::from)
        };
        let vad = find(needs.vad, Model::SileroVad)?;
        let det = find(needs.ocr, Model::OcrDetection)?;
        let rec = find(needs.ocr, Model::OcrRecognition)?;
        let library = locator.ort_library()?;
        let env = environment(&library)?;
        Ok(ModelRegistry {
            inner: Arc::new(RegistryInner {
                env: EnvHandle(env),
                vad,
                det,
                rec,
                settings: SessionSettings {
                    intra_threads: intra_threads.max(1),
                    provider,
                },
            }),
        })
    }

    /// Builds a Silero VAD session. The model is tiny and sequential: one intra-op thread is
    /// fastest (more threads only add synchronisation), as silero's own wrapper sets.
    pub fn vad(&self) -> Result<vad::Vad, InferError> {
        let path = self.path(self.inner.vad.as_deref(), Model::SileroVad)?;
        let settings = SessionSettings {
            intra_threads: 1,
            ..self.inner.settings
        };
        let session = build_session(&self.inner.env.0, Model::SileroVad, path, settings)?;
        vad::Vad::new(session, path)
    }

    /// Builds the PP-OCRv4 detection and recognition sessions.
    pub fn ocr(&self) -> Result<ocr::Ocr, InferError> {
        let det_path = self.path(self.inner.det.as_deref(), Model::OcrDetection)?;
        let rec_path = self.path(self.inner.rec.as_deref(), Model::OcrRecognition)?;
        let s = self.inner.settings;
        let det = build_session(&self.inner.env.0, Model::OcrDetection, det_path, s)?;
        let rec = build_session(&self.inner.env.0, Model::OcrRecognition, rec_path, s)?;
        ocr::Ocr::new(det, det_path, rec, rec_path)
    }

    fn path<'a>(&self, path: Option<&'a Path>, model: Model) -> Result<&'a Path, InferError> {
        path.ok_or_else(|| {
            InferError::Native(NativeError::ModelNotFound {
                model,
                searched: Vec::new(),
            })
        })
    }
}

/// Checks that a session has the named inputs and outputs, in this order for inputs.
pub(crate) fn check_io(
    session: &Session,
    model: Model,
    path: &Path,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<(), InferError> {
    let have_in: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let have_out: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let outputs_ok = outputs.iter().all(|o| have_out.contains(o));
    if have_in != inputs || !outputs_ok {
        return Err(InferError::WrongModel {
            model,
            path: path.to_path_buf(),
            message: format!(
                "expected inputs {inputs:?} and outputs {outputs:?}, found inputs {have_in:?} and outputs {have_out:?}"
            ),
        });
    }
    Ok(())
}
