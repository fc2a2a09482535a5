//! The audio pipeline: decode any input FFmpeg reads (a video's audio track included) to
//! 16 kHz mono, run Silero VAD over it, and segment the probabilities into speech the way
//! silero's `get_speech_timestamps` does.
//!
//! Segmenting is a port of `get_speech_timestamps_from_probs` from `silero-vad` 6.2.3 with
//! its defaults as this pipeline uses them: speech starts at probability ≥ 0.5 and ends below
//! 0.35, after at least 100 ms below; segments shorter than 250 ms are dropped; each segment
//! is padded by 30 ms (half the gap when two are closer than 60 ms). There is no maximum
//! segment length (silero's default, `inf`). It is a pure function of the probabilities, so
//! it is tested without a model.
//!
//! The VAD runs as audio is decoded ([`VadStream`]), in windows of 512 samples, keeping one
//! probability per window (32 ms): a one-hour file holds 112,500 floats, not its samples.

use serde::Serialize;

use crate::decode::{self, DecodePlan, DecodeSink, SampledFrame, Source};
use crate::infer::InferError;
use crate::infer::vad::{SAMPLE_RATE, Vad, WINDOW};
use crate::limits::Deadline;
use crate::pipelines::{Options, PipelineError};

/// Segmentation thresholds, silero's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VadParams {
    /// Speech starts at a probability at or above this.
    pub threshold: f32,
    /// Speech ends below this (silero: `threshold - 0.15`).
    pub neg_threshold: f32,
    /// Silence shorter than this does not end a segment, in ms.
    pub min_silence_ms: u32,
    /// Segments shorter than this are dropped, in ms.
    pub min_speech_ms: u32,
    /// Padding added to each side of a segment, in ms.
    pub speech_pad_ms: u32,
}

impl Default for VadParams {
    fn default() -> Self {
        VadParams {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_silence_ms: 100,
            min_speech_ms: 250,
            speech_pad_ms: 30,
        }
    }
}

/// A speech segment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechSegment {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// Mean speech probability of the windows that start inside the segment.
    pub mean_probability: f32,
}

/// What the audio pipeline found. Serialised as `speech.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechReport {
    /// Seconds of audio analysed.
    pub duration: f64,
    /// Seconds inside speech segments.
    pub speech_seconds: f64,
    /// `speech_seconds / duration` (0 for empty audio).
    pub speech_ratio: f64,
    /// The segments, in order.
    pub segments: Vec<SpeechSegment>,
    /// The model and the window it scores.
    pub model: &'static str,
    /// Seconds per probability window.
    pub window_seconds: f64,
}

/// Feeds decoded audio through the VAD window by window.
pub struct VadStream<'a> {
    vad: &'a mut Vad,
    pending: Vec<f32>,
    probs: Vec<f32>,
    samples: u64,
}

impl<'a> VadStream<'a> {
    /// A new stream; resets the model's state.
    pub fn new(vad: &'a mut Vad) -> VadStream<'a> {
        vad.reset();
        VadStream {
            vad,
            pending: Vec::with_capacity(WINDOW),
            probs: Vec::new(),
            samples: 0,
        }
    }

    /// Adds samples (16 kHz mono), running the model on each complete window.
    pub fn push(&mut self, mut samples: &[f32]) -> Result<(), InferError> {
        self.samples += samples.len() as u64;
        if !self.pending.is_empty() {
            let take = (WINDOW - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() < WINDOW {
                return Ok(());
            }
            let p = self.vad.step(&self.pending)?;
            self.probs.push(p);
            self.pending.clear();
        }
        let mut windows = samples.chunks_exact(WINDOW);
        for window in &mut windows {
            let p = self.vad.step(window)?;
            self.probs.push(p);
        }
        self.pending.extend_from_slice(windows.remainder());
        Ok(())
    }

    /// Runs the last, zero-padded window and segments the whole stream.
    pub fn finish(mut self, params: &VadParams) -> Result<SpeechReport, InferError> {
        if !self.pending.is_empty() {
            let p = self.vad.step(&self.pending)?;
            self.probs.push(p);
        }
        Ok(report(&self.probs, self.samples, params))
    }

    /// The probabilities of the complete windows so far, one per 512 samples.
    pub fn probabilities(&self) -> &[f32] {
        &self.probs
    }

    /// Seconds of audio pushed so far.
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(SAMPLE_RATE)
    }
}

/// Runs the audio pipeline on `stream` of `source`: returns the report and the seconds of
/// audio decoded.
pub(crate) fn run(
    source: &mut Source,
    stream: usize,
    vad: &mut Vad,
    options: &Options,
    deadline: &Deadline,
    duration: Option<f64>,
    progress: &mut dyn FnMut(f64),
) -> Result<(SpeechReport, f64), PipelineError> {
    let mut sink = AudioSink {
        vad: VadStream::new(vad),
        duration,
        progress,
    };
    let plan = DecodePlan {
        audio: Some(stream),
        video: None,
    };
    let stats = decode::run_overlapped(source, &plan, &options.limits, deadline, &mut sink)?;
    let report = sink.vad.finish(&options.vad)?;
    Ok((report, stats.audio_seconds))
}

struct AudioSink<'a, 'v> {
    vad: VadStream<'v>,
    duration: Option<f64>,
    progress: &'a mut dyn FnMut(f64),
}

impl DecodeSink for AudioSink<'_, '_> {
    type Error = PipelineError;

    fn audio(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        Ok(self.vad.push(samples)?)
    }

    fn frame(&mut self, _frame: SampledFrame<'_>) -> Result<(), PipelineError> {
        Ok(())
    }

    fn progress(&mut self, media_seconds: f64) {
        if let Some(d) = self.duration.filter(|d| *d > 0.0) {
            (self.progress)((media_seconds / d).min(1.0));
        }
    }
}

/// Builds the report from per-window probabilities over `samples` samples.
pub fn report(probs: &[f32], samples: u64, params: &VadParams) -> SpeechReport {
    let rate = f64::from(SAMPLE_RATE);
    let segments: Vec<SpeechSegment> = speech_timestamps(probs, samples, params)
        .into_iter()
        .map(|(start, end)| {
            let first = (start as usize).div_ceil(WINDOW);
            let last = (end as usize).div_ceil(WINDOW).min(probs.len());
            let inside = probs.get(first..last).unwrap_or(&[]);
            let mean = if inside.is_empty() {
                0.0
            } else {
                inside.iter().sum::<f32>() / inside.len() as f32
            };
            SpeechSegment {
                start: start as f64 / rate,
                end: end as f64 / rate,
                mean_probability: mean,
            }
        })
        .collect();
    let duration = samples as f64 / rate;
    let speech_seconds: f64 = segments.iter().map(|s| s.end - s.start).sum();
    SpeechReport {
        duration,
        speech_seconds,
        speech_ratio: if duration > 0.0 {
            (speech_seconds / duration).min(1.0)
        } else {
            0.0
        },
        segments,
        model: "silero-vad 6.2.3 (silero_vad.onnx)",
        window_seconds: WINDOW as f64 / rate,
    }
}

/// Speech segments as sample ranges `[start, end)`, from one probability per window of
/// [`WINDOW`] samples: silero's `get_speech_timestamps_from_probs` with
/// `max_speech_duration_s = inf`.
pub fn speech_timestamps(probs: &[f32], audio_len: u64, params: &VadParams) -> Vec<(u64, u64)> {
    let rate = u64::from(SAMPLE_RATE);
    let ms = |v: u32| rate * u64::from(v) / 1000;
    let min_speech = ms(params.min_speech_ms);
    let min_silence = ms(params.min_silence_ms);
    let pad = ms(params.speech_pad_ms);
    let window = WINDOW as u64;

    let mut speeches: Vec<(u64, u64)> = Vec::new();
    let mut triggered = false;
    let mut start = 0u64;
    // 0 means "none", as in silero (it can never be a real value: it is set on a window
    // after the one that triggered).
    let mut temp_end = 0u64;
    for (i, &p) in probs.iter().enumerate() {
        let cur = window * i as u64;
        if p >= params.threshold && temp_end != 0 {
            temp_end = 0;
        }
        if p >= params.threshold && !triggered {
            triggered = true;
            start = cur;
            continue;
        }
        if p < params.neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = cur;
            }
            if cur - temp_end < min_silence {
                continue;
            }
            if temp_end - start > min_speech {
                speeches.push((start, temp_end));
            }
            temp_end = 0;
            triggered = false;
        }
    }
    if triggered && audio_len.saturating_sub(start) > min_speech {
        speeches.push((start, audio_len));
    }
    // Padding: 30 ms each side, or half the gap when two segments are closer than 60 ms.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = speeches[0].0.saturating_sub(pad);
        }
        if i + 1 < n {
            let gap = speeches[i + 1].0.saturating_sub(speeches[i].1);
            if gap < 2 * pad {
                speeches[i].1 += gap / 2;
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(gap / 2);
            } else {
                speeches[i].1 = (speeches[i].1 + pad).min(audio_len);
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(pad);
            }
        } else {
            speeches[i].1 = (speeches[i].1 + pad).min(audio_len);
        }
    }
    speeches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(spec: &[(usize, f32)]) -> Vec<f32> {
        spec.iter()
            .flat_map(|&(n, p)| std::iter::repeat_n(p, n))
            .collect()
    }

    #[test]
    fn one_segment_is_padded() {
        // 10 windows of silence, 20 of speech, 10 of silence.
        let p = probs(&[(10, 0.01), (20, 0.9), (10, 0.01)]);
        let len = 40 * 512;
        let s = speech_timestamps(&p, len, &VadParams::default());
        // Start at window 10 minus 480 samples; end where silence started (window 30) plus
        // 480.
        assert_eq!(s, vec![(10 * 512 - 480, 30 * 512 + 480)]);
    }

    #[test]
    fn short_speech_and_short_silence() {
        // 5 windows = 160 ms of speech: dropped (< 250 ms).
        let p = probs(&[(10, 0.0), (5, 0.9), (20, 0.0)]);
        assert!(speech_timestamps(&p, 35 * 512, &VadParams::default()).is_empty());
        // A 2-window (64 ms) dip inside speech does not split it (< 100 ms).
        let p = probs(&[(10, 0.0), (20, 0.9), (2, 0.1), (20, 0.9), (10, 0.0)]);
        let s = speech_timestamps(&p, 62 * 512, &VadParams::default());
        assert_eq!(s.len(), 1);
        // A 10-window (320 ms) gap does.
        let p = probs(&[(10, 0.0), (20, 0.9), (10, 0.1), (20, 0.9), (10, 0.0)]);
        let s = speech_timestamps(&p, 70 * 512, &VadParams::default());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1, 30 * 512 + 480);
        assert_eq!(s[1].0, 40 * 512 - 480);
    }

    #[test]
    fn hysteresis_between_the_thresholds() {
        // 0.4 neither starts speech nor ends it.
        let p = probs(&[(5, 0.4), (20, 0.9), (20, 0.4), (10, 0.0)]);
        let s = speech_timestamps(&p, 55 * 512, &VadParams::default());
        assert_eq!(s, vec![(5 * 512 - 480, 45 * 512 + 480)]);
    }

    #[test]
    fn speech_to_the_end_and_the_report() {
        let p = probs(&[(10, 0.0), (30, 0.8)]);
        let len = 40 * 512 - 100;
        let s = speech_timestamps(&p, len, &VadParams::default());
        assert_eq!(s, vec![(10 * 512 - 480, len)]);
        let r = report(&p, len, &VadParams::default());
        assert_eq!(r.segments.len(), 1);
        assert!((r.segments[0].mean_probability - 0.8).abs() < 1e-6);
        assert!((r.speech_ratio - (len - 10 * 512 + 480) as f64 / len as f64).abs() < 1e-9);
        let empty = report(&[], 0, &VadParams::default());
        assert_eq!(empty.speech_ratio, 0.0);
        assert!(empty.segments.is_empty());
    }

    #[test]
    fn silence_must_last_five_windows_to_split() {
        // The silence check runs at the start of each window below 0.35: 4 windows (the
        // 4th sees 96 ms) do not split, 5 (128 ms) do.
        let p = probs(&[(10, 0.0), (20, 0.9), (4, 0.0), (20, 0.9), (10, 0.0)]);
        assert_eq!(
            speech_timestamps(&p, 64 * 512, &VadParams::default()).len(),
            1
        );
        let p = probs(&[(10, 0.0), (20, 0.9), (5, 0.0), (20, 0.9), (10, 0.0)]);
        let s = speech_timestamps(&p, 65 * 512, &VadParams::default());
        assert_eq!(
            s,
            vec![
                (10 * 512 - 480, 30 * 512 + 480),
                (35 * 512 - 480, 55 * 512 + 480)
            ]
        );
    }
}
