//! The three pipelines, as plain synchronous functions of a local file: [`probe`] (what is
//! in the file), [`audio`] (where the speech is) and [`video`] (frames, thumbnails, a sprite
//! sheet, on-screen text, and the audio pipeline on its sound track).
//!
//! A pipeline reads a file, uses the models it is given, and writes artifacts through an
//! [`Artifacts`] implementation (the object store for jobs, a directory for `triggerfish
//! media run`). It returns a [`Summary`]. It runs on the calling thread: the pool calls it on
//! its own OS threads, never on an async runtime.
//!
//! What this module does not do: fetch inputs, build events, or retry.

pub mod audio;
pub mod probe;
pub mod video;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::decode::{self, DecodeError, ProbeInfo};
use crate::infer::ocr::{Ocr, OcrError};
use crate::infer::vad::Vad;
use crate::infer::{InferError, ModelNeeds, ModelRegistry};
use crate::limits::{Deadline, Limits, Stop};
use crate::raster::RasterError;

/// Which pipeline a pool runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Container, duration, streams, codecs.
    Probe,
    /// Speech segments from Silero VAD.
    Audio,
    /// Frames, thumbnails, sprite sheet, OCR, and the audio pipeline on the sound track.
    Video,
}

impl Pipeline {
    /// The name used in config and events.
    pub const fn name(self) -> &'static str {
        match self {
            Pipeline::Probe => "probe",
            Pipeline::Audio => "audio",
            Pipeline::Video => "video",
        }
    }

    /// The models this pipeline runs.
    pub const fn needs(self) -> ModelNeeds {
        match self {
            Pipeline::Probe => ModelNeeds {
                vad: false,
                ocr: false,
            },
            Pipeline::Audio => ModelNeeds {
                vad: true,
                ocr: false,
            },
            Pipeline::Video => ModelNeeds {
                vad: true,
                ocr: true,
            },
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pipeline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "probe" => Ok(Pipeline::Probe),
            "audio" => Ok(Pipeline::Audio),
            "video" => Ok(Pipeline::Video),
            other => Err(format!(
                "unknown pipeline {other:?}; expected probe, audio or video"
            )),
        }
    }
}

/// How a pipeline runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Size, duration, pixel and time limits.
    pub limits: Limits,
    /// Video: time between sampled frames (the first frame is always sampled).
    pub frame_interval: Duration,
    /// Video: thumbnail width in pixels.
    pub thumb_width: u32,
    /// Video: sprite sheet tile width in pixels.
    pub sprite_tile_width: u32,
    /// Video: sprite sheet columns.
    pub sprite_columns: u32,
    /// Video: most tiles in the sprite sheet; longer videos use every n-th sample.
    pub sprite_max_tiles: u32,
    /// JPEG quality of thumbnails and the sprite sheet.
    pub jpeg_quality: u8,
    /// Video: run OCR on sampled frames.
    pub ocr: bool,
    /// Speech segmentation thresholds.
    pub vad: audio::VadParams,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            frame_interval: Duration::from_secs(1),
            thumb_width: 320,
            sprite_tile_width: 160,
            sprite_columns: 10,
            sprite_max_tiles: 100,
            jpeg_quality: 85,
            ocr: true,
            vad: audio::VadParams::default(),
        }
    }
}

/// Where artifacts go. Returns the artifact's URI.
pub trait Artifacts {
    /// Stores `bytes` as `name` (relative, e.g. `thumbs/0001.jpg`).
    fn put(
        &mut self,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ArtifactError>;
}

/// An artifact could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("could not store artifact {name}: {message}")]
pub struct ArtifactError {
    /// The artifact's name.
    pub name: String,
    /// Why.
    pub message: String,
}

/// Artifacts written into a local directory (for `triggerfish media run` and tests).
#[derive(Debug)]
pub struct DirArtifacts {
    root: std::path::PathBuf,
}

impl DirArtifacts {
    /// Artifacts under `root`, created as needed.
    pub fn new(root: impl Into<std::path::PathBuf>) -> DirArtifacts {
        DirArtifacts { root: root.into() }
    }
}

impl Artifacts for DirArtifacts {
    fn put(
        &mut self,
        name: &str,
        _content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ArtifactError> {
        let path = self.root.join(name);
        let err = |e: std::io::Error| ArtifactError {
            name: name.to_owned(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::write(&path, bytes).map_err(err)?;
        Ok(crate::store::file_uri(&path))
    }
}

/// Why a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Decoding failed or a limit was hit.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A model failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// An artifact could not be written.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// An image could not be encoded.
    #[error(transparent)]
    Raster(#[from] RasterError),
    /// The pipeline was run without a model it needs.
    #[error("the {0} model is not loaded for this pipeline")]
    MissingModel(&'static str),
}

impl From<Stop> for PipelineError {
    fn from(stop: Stop) -> Self {
        PipelineError::Decode(DecodeError::Stopped(stop))
    }
}

impl From<OcrError> for PipelineError {
    fn from(e: OcrError) -> Self {
        match e {
            OcrError::Infer(e) => PipelineError::Infer(e),
            OcrError::Stopped(stop) => stop.into(),
        }
    }
}

/// The sessions one worker thread owns, built once and reused for every job.
#[derive(Default)]
pub struct Models {
    /// Silero VAD, for the audio and video pipelines.
    pub vad: Option<Vad>,
    /// PP-OCRv4, for the video pipeline.
    pub ocr: Option<Ocr>,
}

impl Models {
    /// Builds the sessions `pipeline` needs.
    pub fn load(registry: &ModelRegistry, pipeline: Pipeline) -> Result<Models, InferError> {
        let needs = pipeline.needs();
        Ok(Models {
            vad: needs.vad.then(|| registry.vad()).transpose()?,
            ocr: needs.ocr.then(|| registry.ocr()).transpose()?,
        })
    }
}

/// What a pipeline produced: a compact summary (the completed event's data) and where the
/// full results are.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Media duration in seconds, as probed (or decoded, when the container does not say).
    pub duration: Option<f64>,
    /// Seconds of media decoded.
    pub media_seconds: f64,
    /// The container and its main streams.
    pub media: MediaBrief,
    /// Speech, for the audio and video pipelines (absent when there is no audio track).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<SpeechBrief>,
    /// Frames and text, for the video pipeline (absent when there is no video track).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<video::VideoBrief>,
    /// Artifact name (`probe.json`, `thumbs/0000.jpg`, …) → URI.
    pub artifacts: BTreeMap<String, String>,
    /// Wall-clock seconds the pipeline took.
    pub elapsed_seconds: f64,
}

/// The gist of a [`ProbeInfo`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaBrief {
    /// The container.
    pub container: String,
    /// Streams in the file.
    pub streams: usize,
    /// The main video stream's codec, size and frame rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    /// The main audio stream's codec, rate and channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
}

impl MediaBrief {
    fn from_probe(p: &ProbeInfo, video: Option<usize>, audio: Option<usize>) -> MediaBrief {
        let stream = |i: Option<usize>| i.and_then(|i| p.streams.iter().find(|s| s.index == i));
        MediaBrief {
            container: p.container.clone(),
            streams: p.streams.len(),
            video: stream(video).map(|s| {
                let mut d = s.codec.clone();
                if let (Some(w), Some(h)) = (s.width, s.height) {
                    d.push_str(&format!(" {w}x{h}"));
                }
                if let Some(fps) = s.frame_rate {
                    d.push_str(&format!(" {fps:.3} fps"));
                }
                d
            }),
            audio: stream(audio).map(|s| {
                let mut d = s.codec.clone();
                if let Some(rate) = s.sample_rate {
                    d.push_str(&format!(" {rate} Hz"));
                }
                if let Some(ch) = s.channels {
                    d.push_str(&format!(" {ch} ch"));
                }
                d
            }),
        }
    }
}

/// The gist of a [`audio::SpeechReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechBrief {
    /// Seconds of audio analysed.
    pub duration: f64,
    /// Fraction of it in speech segments.
    pub speech_ratio: f64,
    /// Number of segments.
    pub segment_count: usize,
    /// The first segments (at most [`SUMMARY_ITEMS`]); all of them are in `speech.json`.
    pub segments: Vec<audio::SpeechSegment>,
}

/// Most list items a summary carries; the artifacts hold all of them.
pub const SUMMARY_ITEMS: usize = 50;

impl SpeechBrief {
    fn from_report(r: &audio::SpeechReport) -> SpeechBrief {
        SpeechBrief {
            duration: r.duration,
            speech_ratio: r.speech_ratio,
            segment_count: r.segments.len(),
            segments: r.segments.iter().take(SUMMARY_ITEMS).cloned().collect(),
        }
    }
}

/// Runs `pipeline` on the local file `path`.
///
/// `progress` is called with the fraction of the media timeline done (0 to 1) as decoding
/// advances; for `triggerfish media run`'s progress bar.
pub fn run(
    pipeline: Pipeline,
    path: &Path,
    options: &Options,
    models: &mut Models,
    artifacts: &mut dyn Artifacts,
    deadline: &Deadline,
    progress: &mut dyn FnMut(f64),
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let mut source = decode::open(path, &options.limits, deadline)?;
    let info = decode::probe(&source);
    let mut names = BTreeMap::new();
    let probe_json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    names.insert(
        "probe.json".to_owned(),
        artifacts.put("probe.json", "application/json", probe_json)?,
    );
    let audio_stream = source.best_audio();
    let video_stream = source.best_video();
    let media = MediaBrief::from_probe(&info, video_stream, audio_stream);
    let mut summary = Summary {
        pipeline,
        duration: info.duration,
        media_seconds: 0.0,
        media,
        speech: None,
        video: None,
        artifacts: BTreeMap::new(),
        elapsed_seconds: 0.0,
    };
    match pipeline {
        Pipeline::Probe => {
            summary.media_seconds = info.duration.unwrap_or(0.0);
            progress(1.0);
        }
        Pipeline::Audio => {
            let Some(stream) = audio_stream else {
                return Err(DecodeError::Unsupported("the file has no audio stream".into()).into());
            };
            let vad = models
                .vad
                .as_mut()
                .ok_or(PipelineError::MissingModel("Silero VAD"))?;
            let (report, seconds) = audio::run(
                &mut source,
                stream,
                vad,
                options,
                deadline,
                info.duration,
                progress,
            )?;
            let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
            names.insert(
                "speech.json".to_owned(),
                artifacts.put("speech.json", "application/json", json)?,
            );
            summary.media_seconds = seconds;
            summary.speech = Some(SpeechBrief::from_report(&report));
        }
        Pipeline::Video => {
            if video_stream.is_none() && audio_stream.is_none() {
                return Err(DecodeError::Unsupported(
                    "the file has neither a video nor an audio stream".into(),
                )
                .into());
            }
            let out = video::run(
                &mut source,
                video::Streams {
                    video: video_stream,
                    audio: audio_stream,
                },
                models,
                options,
                artifacts,
                deadline,
                info.duration,
                progress,
            )?;
            names.extend(out.artifacts);
            summary.media_seconds = out.media_seconds;
            summary.speech = out.speech.as_ref().map(SpeechBrief::from_report);
            summary.video = out.brief;
        }
    }
    if summary.duration.is_none() && summary.media_seconds > 0.0 {
        summary.duration = Some(summary.media_seconds);
    }
    summary.artifacts = names;
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
