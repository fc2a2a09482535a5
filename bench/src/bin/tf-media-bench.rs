//! The Rust side of the media benchmark (`bench/media/run`): runs one pipeline stage on a
//! file and prints one JSON object with its timing and its outputs, for comparison with the
//! Python reference (`bench/media/reference.py`) in the same run.
//!
//! ```text
//! tf-media-bench vad FILE [--probs]      decode + resample + Silero VAD + segmentation
//! tf-media-bench video FILE [--interval S] [--no-ocr] [--frames]
//!                                        the video pipeline: sampled frames, thumbnails,
//!                                        sprite, OCR, VAD on the sound track;
//!                                        --frames adds the text read on each frame
//! tf-media-bench decode FILE             decode every audio and video frame, nothing else
//! ```
//!
//! Model sessions are built before the clock starts, as the Python reference loads its
//! models before its clock starts; each stage is timed once, end to end, on one worker
//! thread (ONNX Runtime may use `--threads` intra-op threads, default: all cores).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use triggerfish_workers::decode::{self, DecodePlan, DecodeSink, SampledFrame};
use triggerfish_workers::infer::{ExecutionProvider, ModelRegistry};
use triggerfish_workers::limits::{Deadline, Limits};
use triggerfish_workers::native::Locator;
use triggerfish_workers::pipelines::audio::{VadParams, VadStream};
use triggerfish_workers::pipelines::{self, ArtifactError, Artifacts, Models, Options, Pipeline};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cmd), Some(file)) = (args.first(), args.get(1)) else {
        bail!(
            "usage: tf-media-bench vad|video|decode FILE [--probs] [--interval S] [--no-ocr] [--threads N]"
        );
    };
    let file = PathBuf::from(file);
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads = match value("--threads") {
        Some(t) => t.parse().context("--threads")?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let out = match cmd.as_str() {
        "vad" => vad(&file, flag("--probs"), threads)?,
        "video" => {
            let interval = match value("--interval") {
                Some(s) => s.parse::<f64>().context("--interval")?,
                None => 1.0,
            };
            video(
                &file,
                interval,
                !flag("--no-ocr"),
                flag("--frames"),
                threads,
            )?
        }
        // Scratch check of the OpenCV-compatible resize: raw BGR of FILE's first frame resized
        // to W x H, written to OUT.
        "resize" => {
            let w: usize = args.get(2).context("W")?.parse()?;
            let h: usize = args.get(3).context("H")?.parse()?;
            let out = args.get(4).context("OUT")?;
            let limits = Limits::default();
            let deadline = Deadline::unbounded_after(Duration::from_secs(60));
            let mut source = decode::open(&file, &limits, &deadline)?;
            let stream = source.best_video().context("no video")?;
            struct First(Option<triggerfish_workers::raster::Bgr>);
            impl DecodeSink for First {
                type Error = anyhow::Error;
                fn audio(&mut self, _: &[f32]) -> anyhow::Result<()> {
                    Ok(())
                }
                fn frame(&mut self, f: SampledFrame<'_>) -> anyhow::Result<()> {
                    if self.0.is_none() {
                        self.0 = Some(f.image.clone());
                    }
                    Ok(())
                }
            }
            let mut first = First(None);
            let plan = DecodePlan {
                audio: None,
                video: Some(decode::VideoSampling {
                    stream,
                    interval: Duration::from_secs(1000),
                    thumb_width: 64,
                }),
            };
            decode::run(&mut source, &plan, &limits, &deadline, &mut first)?;
            let img = first.0.context("no frame")?;
            std::fs::write(out, img.resize_linear(w, h).data())?;
            json!({"ok": true})
        }
        "decode" => {
            let started = Instant::now();
            let stats = decode::decode_all(&file)?;
            json!({"seconds": started.elapsed().as_secs_f64(), "frames": stats.video_frames})
        }
        other => bail!("unknown command {other}"),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn registry(pipeline: Pipeline, threads: usize) -> anyhow::Result<ModelRegistry> {
    Ok(ModelRegistry::load(
        &Locator::from_env(None, None),
        pipeline.needs(),
        ExecutionProvider::Cpu,
        threads,
    )?)
}

/// Decode, resample and VAD, with the probabilities kept for comparison.
fn vad(file: &Path, probs: bool, threads: usize) -> anyhow::Result<serde_json::Value> {
    let mut models = Models::load(&registry(Pipeline::Audio, threads)?, Pipeline::Audio)?;
    let vad = models.vad.as_mut().context("no VAD")?;
    let started = Instant::now();
    let limits = Limits::default();
    let deadline = Deadline::unbounded_after(Duration::from_secs(3600));
    let mut source = decode::open(file, &limits, &deadline)?;
    let stream = source.best_audio().context("no audio stream")?;
    struct Sink<'v>(VadStream<'v>);
    impl DecodeSink for Sink<'_> {
        type Error = anyhow::Error;
        fn audio(&mut self, samples: &[f32]) -> anyhow::Result<()> {
            Ok(self.0.push(samples)?)
        }
        fn frame(&mut self, _: SampledFrame<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(VadStream::new(vad));
    let plan = DecodePlan {
        audio: Some(stream),
        video: None,
    };
    let stats = decode::run_overlapped(&mut source, &plan, &limits, &deadline, &mut sink)?;
    // The probabilities of the complete windows (the last, padded one is only in the report).
    let probabilities = sink.0.probabilities().to_vec();
    let report_full = sink.0.finish(&VadParams::default())?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "seconds": elapsed,
        "media_seconds": stats.audio_seconds,
        "realtime_factor": stats.audio_seconds / elapsed,
        "windows": report_full.duration / 0.032,
        "segments": report_full.segments.iter().map(|s| [s.start, s.end]).collect::<Vec<_>>(),
        "speech_ratio": report_full.speech_ratio,
        "probs": if probs { json!(probabilities) } else { json!(null) },
    }))
}

/// Keeps `text.json` (for the comparison), drops the rest (after it was encoded, as a store
/// would receive it).
#[derive(Default)]
struct Keep {
    text: Option<Vec<u8>>,
}

impl Artifacts for Keep {
    fn put(&mut self, name: &str, _: &str, bytes: Vec<u8>) -> Result<String, ArtifactError> {
        if name == "text.json" {
            self.text = Some(bytes);
        }
        Ok(format!("memory:{name}"))
    }
}

fn video(
    file: &Path,
    interval: f64,
    ocr: bool,
    frames: bool,
    threads: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut models = Models::load(&registry(Pipeline::Video, threads)?, Pipeline::Video)?;
    let options = Options {
        frame_interval: Duration::from_secs_f64(interval),
        ocr,
        ..Options::default()
    };
    let deadline = Deadline::unbounded_after(Duration::from_secs(3600));
    let mut keep = Keep::default();
    let started = Instant::now();
    let summary = pipelines::run(
        Pipeline::Video,
        file,
        &options,
        &mut models,
        &mut keep,
        &deadline,
        &mut |_| {},
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let v = summary.video.context("no video")?;
    let per_frame = match (frames, &keep.text) {
        (true, Some(text)) => serde_json::from_slice::<serde_json::Value>(text)?["frames"].take(),
        _ => serde_json::Value::Null,
    };
    Ok(json!({
        "frames": per_frame,
        "seconds": elapsed,
        "media_seconds": summary.media_seconds,
        "frames_sampled": v.frames_sampled,
        "frames_per_second": v.frames_sampled as f64 / elapsed,
        "text": v.text.iter().map(|t| json!({"text": t.text, "start": t.start, "end": t.end, "confidence": t.confidence, "box": t.bbox})).collect::<Vec<_>>(),
        "speech_segments": summary.speech.map(|s| s.segments.iter().map(|x| [x.start, x.end]).collect::<Vec<_>>()),
    }))
}
