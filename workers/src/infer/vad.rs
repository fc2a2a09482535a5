//! Silero VAD (v5/v6 ONNX model, `silero_vad.onnx` from the `silero-vad` 6.2.3 wheel).
//!
//! The model takes 16 kHz mono f32 audio in windows of 512 samples and returns, per window,
//! the probability that it holds speech. It is recurrent: `state` (`f32[2,1,128]`) carries over
//! from one window to the next, and each window must be preceded by the **last 64 samples of
//! the previous window** (zeros before the first), so that `input` is f32[1, 576]. Without
//! that context the model barely fires; this is what silero's own `OnnxWrapper` does.
//!
//! [`Vad::step`] runs one window; the caller feeds windows in order and resets between
//! independent streams. Segmenting the probabilities into speech is
//! [`crate::pipelines::audio`]'s job.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use crate::infer::{InferError, check_io};
use crate::native::Model;

/// The sample rate the model takes.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per window.
pub const WINDOW: usize = 512;
/// Samples of the previous window prepended to each.
pub const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// One Silero VAD session and its recurrent state.
pub struct Vad {
    session: Session,
    /// `CONTEXT` samples of context, then the window.
    input: Box<[f32; CONTEXT + WINDOW]>,
    state: Box<[f32; STATE_LEN]>,
    sr: [i64; 1],
}

impl Vad {
    /// Wraps a session of the Silero VAD model, checking its inputs and outputs.
    pub fn new(session: Session, path: &Path) -> Result<Vad, InferError> {
        check_io(
            &session,
            Model::SileroVad,
            path,
            &["input", "state", "sr"],
            &["output", "stateN"],
        )?;
        Ok(Vad {
            session,
            input: Box::new([0.0; CONTEXT + WINDOW]),
            state: Box::new([0.0; STATE_LEN]),
            sr: [i64::from(SAMPLE_RATE)],
        })
    }

    /// Forgets the state and the context, for a new stream.
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }

    /// Runs one window of at most [`WINDOW`] samples (a shorter one is zero-padded, as the
    /// last window of a stream is) and returns its speech probability.
    pub fn step(&mut self, window: &[f32]) -> Result<f32, InferError> {
        let n = window.len().min(WINDOW);
        self.input[CONTEXT..CONTEXT + n].copy_from_slice(&window[..n]);
        self.input[CONTEXT + n..].fill(0.0);
        let err = |e: ort::Error| InferError::run(Model::SileroVad, e);
        let input = TensorRef::from_array_view(([1usize, CONTEXT + WINDOW], &self.input[..]))
            .map_err(err)?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..])).map_err(err)?;
        let sr = TensorRef::from_array_view(((), &self.sr[..])).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs![input, state, sr])
            .map_err(err)?;
        let missing = |name: &str| InferError::run(Model::SileroVad, format!("no output {name}"));
        let (_, prob) = outputs
            .get("output")
            .ok_or_else(|| missing("output"))?
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        let prob = *prob.first().ok_or_else(|| missing("output[0]"))?;
        let (_, next) = outputs
            .get("stateN")
            .ok_or_else(|| missing("stateN"))?
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        if next.len() != STATE_LEN {
            return Err(InferError::run(
                Model::SileroVad,
                format!("stateN has {} values, expected {STATE_LEN}", next.len()),
            ));
        }
        self.state.copy_from_slice(next);
        // The next window's context: the last CONTEXT samples of this (padded) window.
        self.input.copy_within(WINDOW.., 0);
        Ok(prob)
    }
}
