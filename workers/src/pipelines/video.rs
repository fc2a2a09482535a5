//! The video pipeline: sample frames at an interval (the first frame, then the first frame at
//! or after each multiple of the interval, 1 s by default), write a JPEG thumbnail of each
//! (`thumbs/0000.jpg`, …) and one sprite sheet of them (`sprite.jpg`, a grid), read the text
//! on each sampled frame with PP-OCRv4 (`text.json`), and run the audio pipeline on the sound
//! track when there is one (`speech.json`) — all in one decoding pass.
//!
//! Text is reported per frame and as tracks: the same text in consecutive sampled frames is
//! one track with the time it was first and last seen, the box where it was first seen, and
//! its mean confidence.
//!
//! The sprite sheet holds at most `sprite_max_tiles` tiles: a long video's sheet uses every
//! n-th sample, n chosen from the probed duration (and doubled if the duration was wrong).
//! Thumbnails are encoded and stored as they are made, so memory does not grow with the
//! video's length beyond the sprite's tiles and the text found.
//!
//! A file with audio but no video gets the audio part only; this is not an error.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::decode::{self, DecodePlan, DecodeSink, SampledFrame, Source, VideoSampling};
use crate::infer::geometry::Point;
use crate::infer::ocr::{Ocr, TextLine};
use crate::limits::Deadline;
use crate::pipelines::audio::{SpeechReport, VadStream};
use crate::pipelines::{Artifacts, Models, Options, PipelineError, SUMMARY_ITEMS};
use crate::raster::Bgr;

/// The streams the video pipeline decodes.
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    /// The video stream, if any.
    pub video: Option<usize>,
    /// The audio stream, if any.
    pub audio: Option<usize>,
}

/// Text seen across consecutive sampled frames.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TextTrack {
    /// The text.
    pub text: String,
    /// Mean confidence over the frames it was read in.
    pub confidence: f32,
    /// Where it was first seen, clockwise from top-left, in pixels of the frame.
    #[serde(rename = "box")]
    pub bbox: [Point; 4],
    /// When it was first seen, in seconds.
    pub start: f64,
    /// When it was last seen, in seconds.
    pub end: f64,
    /// In how many sampled frames.
    pub frames: usize,
}

/// The text of one sampled frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameText {
    /// Sample number.
    pub index: usize,
    /// Time in seconds.
    pub time: f64,
    /// Lines read, in reading order.
    pub lines: Vec<TextLine>,
}

/// `text.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TextReport {
    /// Seconds between samples.
    pub frame_interval: f64,
    /// Merged text, by first appearance.
    pub tracks: Vec<TextTrack>,
    /// Per sampled frame.
    pub frames: Vec<FrameText>,
}

/// The sprite sheet's layout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpriteInfo {
    /// Tiles per row.
    pub columns: usize,
    /// Rows.
    pub rows: usize,
    /// Tile width in pixels.
    pub tile_width: usize,
    /// Tile height in pixels.
    pub tile_height: usize,
    /// The time of each tile, row by row.
    pub times: Vec<f64>,
}

/// The video part of a [`super::Summary`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoBrief {
    /// Frames sampled (= thumbnails written).
    pub frames_sampled: usize,
    /// Seconds between samples.
    pub frame_interval: f64,
    /// The sprite sheet, when any frame was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sprite: Option<SpriteInfo>,
    /// Number of text tracks.
    pub text_track_count: usize,
    /// The first text tracks (at most [`SUMMARY_ITEMS`]); all are in `text.json`.
    pub text: Vec<TextTrack>,
}

/// What [`run`] returns.
pub(crate) struct VideoOutput {
    pub artifacts: BTreeMap<String, String>,
    pub media_seconds: f64,
    pub speech: Option<SpeechReport>,
    pub brief: Option<VideoBrief>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    source: &mut Source,
    streams: Streams,
    models: &mut Models,
    options: &Options,
    artifacts: &mut dyn Artifacts,
    deadline: &Deadline,
    duration: Option<f64>,
    progress: &mut dyn FnMut(f64),
) -> Result<VideoOutput, PipelineError> {
    let Models { vad, ocr } = models;
    let vad = match streams.audio {
        Some(_) => Some(VadStream::new(
            vad.as_mut()
                .ok_or(PipelineError::MissingModel("Silero VAD"))?,
        )),
        None => None,
    };
    let ocr = match (streams.video, options.ocr) {
        (Some(_), true) => Some(
            ocr.as_mut()
                .ok_or(PipelineError::MissingModel("PP-OCRv4"))?,
        ),
        _ => None,
    };
    let interval = options.frame_interval.as_secs_f64().max(0.001);
    let expected = duration.map(|d| (d / interval).floor() as usize + 1);
    let mut sink = VideoSink {
        vad,
        ocr,
        artifacts,
        names: BTreeMap::new(),
        tracker: TextTracker::default(),
        frames: Vec::new(),
        sprite: SpriteBuilder::new(options, expected),
        sampled: 0,
        options,
        deadline,
        duration,
        progress,
    };
    let plan = DecodePlan {
        audio: streams.audio,
        video: streams.video.map(|stream| VideoSampling {
            stream,
            interval: options.frame_interval,
            thumb_width: options.thumb_width,
        }),
    };
    let stats = decode::run_overlapped(source, &plan, &options.limits, deadline, &mut sink)?;
    let VideoSink {
        vad,
        artifacts,
        mut names,
        tracker,
        frames,
        sprite,
        sampled,
        ..
    } = sink;
    let speech = match vad {
        Some(vad) => {
            let report = vad.finish(&options.vad)?;
            let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
            names.insert(
                "speech.json".into(),
                artifacts.put("speech.json", "application/json", json)?,
            );
            Some(report)
        }
        None => None,
    };
    let brief = if streams.video.is_some() {
        let tracks = tracker.finish();
        let sprite_info = match sprite.finish(options) {
            Some((image, info)) => {
                let jpeg = image.to_jpeg(options.jpeg_quality)?;
                names.insert(
                    "sprite.jpg".into(),
                    artifacts.put("sprite.jpg", "image/jpeg", jpeg)?,
                );
                Some(info)
            }
            None => None,
        };
        if options.ocr {
            let report = TextReport {
                frame_interval: interval,
                tracks: tracks.clone(),
                frames,
            };
            let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
            names.insert(
                "text.json".into(),
                artifacts.put("text.json", "application/json", json)?,
            );
        }
        Some(VideoBrief {
            frames_sampled: sampled,
            frame_interval: interval,
            sprite: sprite_info,
            text_track_count: tracks.len(),
            text: tracks.into_iter().take(SUMMARY_ITEMS).collect(),
        })
    } else {
        None
    };
    Ok(VideoOutput {
        artifacts: names,
        media_seconds: stats.video_seconds.max(stats.audio_seconds),
        speech,
        brief,
    })
}

struct VideoSink<'a, 'm> {
    vad: Option<VadStream<'m>>,
    ocr: Option<&'m mut Ocr>,
    artifacts: &'a mut dyn Artifacts,
    names: BTreeMap<String, String>,
    tracker: TextTracker,
    frames: Vec<FrameText>,
    sprite: SpriteBuilder,
    sampled: usize,
    options: &'a Options,
    deadline: &'a Deadline,
    duration: Option<f64>,
    progress: &'a mut dyn FnMut(f64),
}

impl DecodeSink for VideoSink<'_, '_> {
    type Error = PipelineError;

    fn audio(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        if let Some(vad) = self.vad.as_mut() {
            vad.push(samples)?;
        }
        Ok(())
    }

    fn frame(&mut self, frame: SampledFrame<'_>) -> Result<(), PipelineError> {
        let name = format!("thumbs/{:04}.jpg", frame.index);
        let jpeg = frame.thumb.to_jpeg(self.options.jpeg_quality)?;
        let uri = self.artifacts.put(&name, "image/jpeg", jpeg)?;
        self.names.insert(name, uri);
        self.sprite.add(frame.time, frame.thumb);
        self.sampled += 1;
        if let Some(ocr) = self.ocr.as_mut() {
            let lines = ocr.read(frame.image, self.deadline)?;
            self.tracker.push(frame.index, frame.time, &lines);
            self.frames.push(FrameText {
                index: frame.index,
                time: frame.time,
                lines,
            });
        }
        Ok(())
    }

    fn progress(&mut self, media_seconds: f64) {
        if let Some(d) = self.duration.filter(|d| *d > 0.0) {
            (self.progress)((media_seconds / d).min(1.0));
        }
    }
}

/// Merges the same text across consecutive sampled frames.
#[derive(Default)]
struct TextTracker {
    /// Tracks seen in the last sampled frame, with their confidence sum.
    open: Vec<(TextTrack, f32)>,
    last_index: Option<usize>,
    done: Vec<(TextTrack, f32)>,
}

impl TextTracker {
    fn push(&mut self, index: usize, time: f64, lines: &[TextLine]) {
        let consecutive = self.last_index.is_some_and(|last| last + 1 == index);
        let mut open = std::mem::take(&mut self.open);
        if !consecutive {
            self.done.append(&mut open);
        }
        let mut next = Vec::with_capacity(lines.len());
        for line in lines {
            // The open track with this text whose box is closest.
            let found = open
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| t.text == line.text)
                .min_by(|(_, (a, _)), (_, (b, _))| {
                    centre_distance(&a.bbox, &line.bbox)
                        .total_cmp(&centre_distance(&b.bbox, &line.bbox))
                })
                .map(|(i, _)| i);
            match found {
                Some(i) => {
                    let (mut track, sum) = open.swap_remove(i);
                    track.end = time;
                    track.frames += 1;
                    next.push((track, sum + line.confidence));
                }
                None => next.push((
                    TextTrack {
                        text: line.text.clone(),
                        confidence: line.confidence,
                        bbox: line.bbox,
                        start: time,
                        end: time,
                        frames: 1,
                    },
                    line.confidence,
                )),
            }
        }
        self.done.append(&mut open);
        self.open = next;
        self.last_index = Some(index);
    }

    fn finish(mut self) -> Vec<TextTrack> {
        self.done.append(&mut self.open);
        let mut tracks: Vec<TextTrack> = self
            .done
            .into_iter()
            .map(|(mut t, sum)| {
                t.confidence = sum / t.frames as f32;
                t
            })
            .collect();
        tracks.sort_by(|a, b| {
            a.start
                .total_cmp(&b.start)
                .then(a.bbox[0][1].total_cmp(&b.bbox[0][1]))
                .then(a.bbox[0][0].total_cmp(&b.bbox[0][0]))
        });
        tracks
    }
}

fn centre_distance(a: &[Point; 4], b: &[Point; 4]) -> f32 {
    let centre = |p: &[Point; 4]| {
        (
            p.iter().map(|q| q[0]).sum::<f32>() / 4.0,
            p.iter().map(|q| q[1]).sum::<f32>() / 4.0,
        )
    };
    let (ca, cb) = (centre(a), centre(b));
    (ca.0 - cb.0).hypot(ca.1 - cb.1)
}

/// Collects sprite tiles, keeping at most `max` of them evenly spread.
struct SpriteBuilder {
    tiles: Vec<(f64, Bgr)>,
    stride: usize,
    seen: usize,
    max: usize,
    tile_width: usize,
}

impl SpriteBuilder {
    fn new(options: &Options, expected: Option<usize>) -> SpriteBuilder {
        let max = options.sprite_max_tiles.max(1) as usize;
        let stride = expected.map_or(1, |n| n.div_ceil(max).max(1));
        SpriteBuilder {
            tiles: Vec::new(),
            stride,
            seen: 0,
            max,
            tile_width: options.sprite_tile_width.max(2) as usize,
        }
    }

    fn add(&mut self, time: f64, thumb: &Bgr) {
        let n = self.seen;
        self.seen += 1;
        if !n.is_multiple_of(self.stride) {
            return;
        }
        let w = self.tile_width.min(thumb.width()).max(1);
        let h = (thumb.height() * w / thumb.width().max(1)).max(1);
        self.tiles.push((time, thumb.resize_linear(w, h)));
        if self.tiles.len() > self.max {
            // More samples than the duration promised: keep every other tile.
            let mut i = 0;
            self.tiles.retain(|_| {
                i += 1;
                (i - 1) % 2 == 0
            });
            self.stride *= 2;
        }
    }

    fn finish(self, options: &Options) -> Option<(Bgr, SpriteInfo)> {
        let first = self.tiles.first()?;
        let (tw, th) = (first.1.width(), first.1.height());
        let columns = (options.sprite_columns.max(1) as usize).min(self.tiles.len());
        let rows = self.tiles.len().div_ceil(columns);
        let mut sheet = Bgr::filled(tw * columns, th * rows, [0, 0, 0]);
        for (i, (_, tile)) in self.tiles.iter().enumerate() {
            sheet.paste(tile, (i % columns) * tw, (i / columns) * th);
        }
        let info = SpriteInfo {
            columns,
            rows,
            tile_width: tw,
            tile_height: th,
            times: self.tiles.iter().map(|(t, _)| *t).collect(),
        };
        Some((sheet, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, x: f32) -> TextLine {
        TextLine {
            text: text.into(),
            confidence: 0.9,
            bbox: [[x, 0.0], [x + 10.0, 0.0], [x + 10.0, 5.0], [x, 5.0]],
        }
    }

    #[test]
    fn text_merges_across_consecutive_frames_only() {
        let mut t = TextTracker::default();
        t.push(0, 0.0, &[line("HELLO", 0.0), line("A", 50.0)]);
        t.push(1, 1.0, &[line("HELLO", 1.0)]);
        t.push(2, 2.0, &[line("HELLO", 1.0), line("A", 50.0)]);
        t.push(3, 3.0, &[]);
        t.push(4, 4.0, &[line("HELLO", 0.0)]);
        let tracks = t.finish();
        let summary: Vec<(&str, f64, f64, usize)> = tracks
            .iter()
            .map(|t| (t.text.as_str(), t.start, t.end, t.frames))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("HELLO", 0.0, 2.0, 3),
                ("A", 0.0, 0.0, 1),
                ("A", 2.0, 2.0, 1),
                ("HELLO", 4.0, 4.0, 1),
            ]
        );
    }

    #[test]
    fn the_sprite_keeps_at_most_max_tiles() {
        let options = Options {
            sprite_max_tiles: 4,
            sprite_columns: 2,
            sprite_tile_width: 8,
            ..Options::default()
        };
        // The duration was unknown: stride starts at 1 and doubles.
        let mut s = SpriteBuilder::new(&options, None);
        let thumb = Bgr::filled(16, 8, [1, 2, 3]);
        for i in 0..10 {
            s.add(f64::from(i), &thumb);
        }
        let (sheet, info) = s.finish(&options).unwrap();
        assert!(info.times.len() <= 4, "{:?}", info.times);
        assert_eq!((info.tile_width, info.tile_height), (8, 4));
        assert_eq!(sheet.width(), 16);
        assert_eq!(info.times[0], 0.0);
    }
}
