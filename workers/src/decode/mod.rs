//! Decoding with FFmpeg (`ffmpeg-next` over Debian's FFmpeg 5.1): open and probe a file, then
//! one demuxing pass that feeds a [`DecodeSink`] with 16 kHz mono f32 audio and with video
//! frames sampled at a fixed interval, as BGR images plus thumbnails.
//!
//! One pass serves both tracks: packets are routed to the audio or the video decoder as they
//! come, so a video's audio track costs no second read, and audio is streamed (a one-hour
//! file never sits in memory as samples).
//!
//! Sampling decodes only what it must. Frames are sampled at `0` (the first frame) and then
//! at the first frame at or after each multiple of the interval. Between samples the H.264 (or
//! other) decoder is told to skip non-reference frames whose timestamp is before the next
//! sample time: no later frame depends on them and none of them can be sampled, so the
//! sampled frames are bit-identical to a full decode, at a fraction of the cost. Only sampled
//! frames are converted to BGR.
//!
//! Hostile input is bounded here (see [`crate::limits`]): the declared frame size is checked
//! before FFmpeg opens a decoder ([`header`]), FFmpeg's own `max_pixels` refuses larger
//! frames, every decoded frame and every second of audio is counted against the limits, and
//! the job's deadline interrupts FFmpeg's I/O and is checked at every packet.
//!
//! What this module does not do: run models, write artifacts, or fetch objects.

pub mod header;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use ffmpeg::ChannelLayout;
use ffmpeg::codec;
use ffmpeg::format::{Pixel, Sample, sample};
use ffmpeg::media;
use ffmpeg::software::{resampling, scaling};
use ffmpeg::util::frame;
use ffmpeg_next as ffmpeg;
use serde::Serialize;

use crate::infer::vad::SAMPLE_RATE;
use crate::limits::{Deadline, Limit, Limits, Stop};
use crate::raster::Bgr;

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a format FFmpeg reads, or hold no stream the pipeline needs, or no
    /// decoder exists for the codec.
    #[error("unsupported format: {0}")]
    Unsupported(String),
    /// The format is recognised but the data is damaged: truncated, missing its index,
    /// undecodable.
    #[error("corrupt input: {0}")]
    Corrupt(String),
    /// A limit was exceeded.
    #[error("{limit} exceeded: {detail}")]
    Limit {
        /// Which limit.
        limit: Limit,
        /// What was found.
        detail: String,
    },
    /// The job's deadline passed, or its pool is shutting down.
    #[error("decoding stopped: {0:?}")]
    Stopped(Stop),
    /// The file could not be read.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl From<Stop> for DecodeError {
    fn from(stop: Stop) -> Self {
        DecodeError::Stopped(stop)
    }
}

/// Initialises FFmpeg once per process and quiets its logging: failures are reported
/// through [`DecodeError`], not on standard error.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ffmpeg::init() {
            tracing::error!(error = %e, "FFmpeg initialisation failed");
        }
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// What [`probe`] reports about a file. Serialised as `probe.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeInfo {
    /// FFmpeg's demuxer names, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    /// The demuxer's description.
    pub container_long_name: String,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Overall bit rate in bits per second, when known.
    pub bit_rate: Option<u64>,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Every stream, in file order.
    pub streams: Vec<StreamInfo>,
}

/// One stream of a [`ProbeInfo`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    /// Index in the file.
    pub index: usize,
    /// `video`, `audio`, `subtitle`, `data`, `attachment` or `unknown`.
    pub kind: &'static str,
    /// FFmpeg's codec name, e.g. `h264`.
    pub codec: String,
    /// The codec's description.
    pub codec_long_name: Option<String>,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Bit rate in bits per second, when known.
    pub bit_rate: Option<u64>,
    /// Frames, when the container says.
    pub frames: Option<u64>,
    /// Video: width in pixels.
    pub width: Option<u32>,
    /// Video: height in pixels.
    pub height: Option<u32>,
    /// Video: pixel format.
    pub pixel_format: Option<String>,
    /// Video: average frame rate in frames per second.
    pub frame_rate: Option<f64>,
    /// Audio: sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio: channels.
    pub channels: Option<u16>,
    /// Audio: sample format.
    pub sample_format: Option<String>,
    /// The `language` tag, when present.
    pub language: Option<String>,
}

/// An opened input file.
pub struct Source {
    input: ffmpeg::format::context::Input,
    path: PathBuf,
    size: u64,
}

impl Source {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The best audio stream's index, if any.
    pub fn best_audio(&self) -> Option<usize> {
        self.input
            .streams()
            .best(media::Type::Audio)
            .map(|s| s.index())
    }

    /// The best video stream's index, if any. Attached pictures (cover art) do not count.
    pub fn best_video(&self) -> Option<usize> {
        self.input
            .streams()
            .best(media::Type::Video)
            .filter(|s| {
                !s.disposition()
                    .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
            })
            .map(|s| s.index())
    }

    /// The container's duration in seconds, when known.
    pub fn duration(&self) -> Option<f64> {
        let d = self.input.duration();
        (d > 0).then(|| d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
    }
}

/// Opens `path`, checking what the header declares against `limits` before anything is
/// decoded. FFmpeg's I/O is interrupted when `deadline` passes.
pub fn open(path: &Path, limits: &Limits, deadline: &Deadline) -> Result<Source, DecodeError> {
    init();
    let io = |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limits.max_input_bytes {
        return Err(DecodeError::Limit {
            limit: Limit::MaxInputBytes,
            detail: format!("the input is {size} bytes, over {}", limits.max_input_bytes),
        });
    }
    let head = header::read_head(path).map_err(io)?;
    if let Some((w, h)) = header::declared_frame_size(path, &head) {
        check_pixels(w, h, limits, "the header declares")?;
    }
    deadline.check()?;
    let interrupt = deadline.clone();
    let input = ffmpeg::format::input_with_interrupt(path, move || interrupt.expired())
        .map_err(|e| open_error(e, &head, deadline))?;
    let source = Source {
        input,
        path: path.to_path_buf(),
        size,
    };
    if let Some(duration) = source.duration() {
        check_duration(duration, limits, "the container declares")?;
    }
    for stream in source.input.streams() {
        let tb = f64::from(stream.time_base());
        if stream.duration() > 0 && tb > 0.0 {
            check_duration(stream.duration() as f64 * tb, limits, "a stream declares")?;
        }
        if stream.parameters().medium() == media::Type::Video
            && let Some((w, h)) = video_size(&stream)
        {
            check_pixels(u64::from(w), u64::from(h), limits, "a video stream has")?;
        }
    }
    Ok(source)
}

fn open_error(e: ffmpeg::Error, head: &[u8], deadline: &Deadline) -> DecodeError {
    if let Err(stop) = deadline.check() {
        return DecodeError::Stopped(stop);
    }
    match e {
        ffmpeg::Error::Exit => DecodeError::Stopped(Stop::Deadline),
        ffmpeg::Error::DemuxerNotFound | ffmpeg::Error::DecoderNotFound => {
            DecodeError::Unsupported(format!("FFmpeg has no demuxer for it ({e})"))
        }
        // A file too short to hold any container header is a damaged (aborted) upload.
        _ if head.len() < 32 => DecodeError::Corrupt(format!(
            "{} bytes is too short to be media ({e})",
            head.len()
        )),
        _ if header::looks_like_media(head) => {
            DecodeError::Corrupt(format!("FFmpeg could not read the container: {e}"))
        }
        _ => DecodeError::Unsupported(format!(
            "the data is not a media format FFmpeg recognises ({e})"
        )),
    }
}

fn check_pixels(w: u64, h: u64, limits: &Limits, what: &str) -> Result<(), DecodeError> {
    let pixels = w.saturating_mul(h);
    if pixels > limits.max_pixels {
        return Err(DecodeError::Limit {
            limit: Limit::MaxPixels,
            detail: format!(
                "{what} {w}x{h} frames ({pixels} pixels), over {}",
                limits.max_pixels
            ),
        });
    }
    Ok(())
}

fn check_duration(seconds: f64, limits: &Limits, what: &str) -> Result<(), DecodeError> {
    if seconds > limits.max_duration.as_secs_f64() {
        return Err(DecodeError::Limit {
            limit: Limit::MaxDuration,
            detail: format!(
                "{what} {seconds:.3} s of media, over {:.3} s",
                limits.max_duration.as_secs_f64()
            ),
        });
    }
    Ok(())
}

/// Width and height of a video stream, from a (cheaply opened) decoder.
fn video_size(stream: &ffmpeg::format::stream::Stream<'_>) -> Option<(u32, u32)> {
    let ctx = codec::context::Context::from_parameters(stream.parameters()).ok()?;
    let video = ctx.decoder().video().ok()?;
    (video.width() > 0 && video.height() > 0).then(|| (video.width(), video.height()))
}

/// Describes the file: container, duration, streams and codecs.
pub fn probe(source: &Source) -> ProbeInfo {
    let format = source.input.format();
    let bit_rate = source.input.bit_rate();
    let streams = source
        .input
        .streams()
        .map(|stream| stream_info(&stream))
        .collect();
    ProbeInfo {
        container: format.name().to_owned(),
        container_long_name: format.description().to_owned(),
        duration: source.duration(),
        bit_rate: u64::try_from(bit_rate).ok().filter(|b| *b > 0),
        size_bytes: source.size,
        streams,
    }
}

fn stream_info(stream: &ffmpeg::format::stream::Stream<'_>) -> StreamInfo {
    let params = stream.parameters();
    let id = params.id();
    let codec = ffmpeg::decoder::find(id);
    let tb = f64::from(stream.time_base());
    let kind = match params.medium() {
        media::Type::Video => "video",
        media::Type::Audio => "audio",
        media::Type::Subtitle => "subtitle",
        media::Type::Data => "data",
        media::Type::Attachment => "attachment",
        _ => "unknown",
    };
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let mut info = StreamInfo {
        index: stream.index(),
        kind,
        codec: codec
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| format!("{id:?}").to_lowercase()),
        codec_long_name: codec.map(|c| c.description().to_owned()),
        duration: (stream.duration() > 0 && tb > 0.0).then(|| stream.duration() as f64 * tb),
        bit_rate: positive(params.bit_rate()),
        frames: positive(stream.frames()),
        width: None,
        height: None,
        pixel_format: None,
        frame_rate: None,
        sample_rate: None,
        channels: None,
        sample_format: None,
        language: stream.metadata().get("language").map(str::to_owned),
    };
    let Ok(ctx) = codec::context::Context::from_parameters(params) else {
        return info;
    };
    match kind {
        "video" => {
            if let Ok(video) = ctx.decoder().video() {
                info.width = Some(video.width()).filter(|w| *w > 0);
                info.height = Some(video.height()).filter(|h| *h > 0);
                info.pixel_format = pixel_name(video.format());
            }
            let rate = stream.avg_frame_rate();
            if rate.denominator() != 0 && rate.numerator() > 0 {
                info.frame_rate = Some(f64::from(rate));
            }
        }
        "audio" => {
            if let Ok(audio) = ctx.decoder().audio() {
                info.sample_rate = Some(audio.rate()).filter(|r| *r > 0);
                info.channels = Some(audio.channels()).filter(|c| *c > 0);
                info.sample_format = sample_name(audio.format());
            }
        }
        _ => {}
    }
    info
}

fn pixel_name(format: Pixel) -> Option<String> {
    (format != Pixel::None).then(|| format!("{format:?}").to_lowercase())
}

fn sample_name(format: Sample) -> Option<String> {
    (format != Sample::None).then(|| format.name().to_owned())
}

/// What one decoding pass produces.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodePlan {
    /// The audio stream to decode to 16 kHz mono, if any.
    pub audio: Option<usize>,
    /// The video stream to sample, if any.
    pub video: Option<VideoSampling>,
}

/// How video frames are sampled.
#[derive(Clone, Copy, Debug)]
pub struct VideoSampling {
    /// The stream.
    pub stream: usize,
    /// Time between samples (the first frame is always sampled).
    pub interval: Duration,
    /// Width of the thumbnails; their height keeps the aspect ratio.
    pub thumb_width: u32,
}

/// A sampled video frame.
pub struct SampledFrame<'a> {
    /// 0 for the first sample, then 1, 2, …
    pub index: usize,
    /// Presentation time in seconds from the start of the stream.
    pub time: f64,
    /// The frame, full size.
    pub image: &'a Bgr,
    /// The thumbnail.
    pub thumb: &'a Bgr,
}

/// Receives what a decoding pass produces. Errors stop the pass and are returned as they
/// are.
pub trait DecodeSink {
    /// The error type; decoding errors convert into it.
    type Error: From<DecodeError>;
    /// Audio samples, 16 kHz mono f32, in order.
    fn audio(&mut self, samples: &[f32]) -> Result<(), Self::Error>;
    /// A sampled frame.
    fn frame(&mut self, frame: SampledFrame<'_>) -> Result<(), Self::Error>;
    /// How far decoding got, in seconds of media.
    fn progress(&mut self, _media_seconds: f64) {}
}

/// What a pass decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeStats {
    /// Seconds of audio decoded.
    pub audio_seconds: f64,
    /// Frames the video decoder returned.
    pub video_frames: u64,
    /// Frames sampled.
    pub sampled_frames: u64,
    /// Presentation time of the last video frame, in seconds.
    pub video_seconds: f64,
    /// Packets a decoder rejected as invalid (tolerated unless nothing decodes).
    pub bad_packets: u64,
}

/// Like [`run`], but decodes on a second, scoped thread while `sink` consumes on the calling
/// thread: decoding (and resampling, and frame conversion) overlaps with inference. Items
/// cross over through a bounded channel (16 items), so decoding never runs far ahead. A sink
/// error stops decoding at its next item; a panic on the decoding thread is re-raised here
/// (for the job's `catch_unwind`).
pub fn run_overlapped<S: DecodeSink>(
    source: &mut Source,
    plan: &DecodePlan,
    limits: &Limits,
    deadline: &Deadline,
    sink: &mut S,
) -> Result<DecodeStats, S::Error> {
    let (tx, rx) = crossbeam::channel::bounded::<Decoded>(16);
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("tf-media-decode".into())
            .spawn_scoped(scope, move || {
                run(source, plan, limits, deadline, &mut Forward { tx })
            });
        let decoder = match decoder {
            Ok(handle) => handle,
            Err(e) => {
                return Err(
                    DecodeError::Corrupt(format!("cannot start the decoding thread: {e}")).into(),
                );
            }
        };
        let mut failed = None;
        for item in &rx {
            let result = match item {
                Decoded::Audio(samples) => sink.audio(&samples),
                Decoded::Frame(f) => sink.frame(SampledFrame {
                    index: f.index,
                    time: f.time,
                    image: &f.image,
                    thumb: &f.thumb,
                }),
                Decoded::Progress(seconds) => {
                    sink.progress(seconds);
                    Ok(())
                }
            };
            if let Err(e) = result {
                failed = Some(e);
                break;
            }
        }
        // The decoder's next send fails and it stops.
        drop(rx);
        let decoded = decoder.join();
        if let Some(e) = failed {
            return Err(e);
        }
        match decoded {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(Forwarded::Decode(e))) => Err(e.into()),
            // Only when the receiver is gone, which happens after a sink error (handled).
            Ok(Err(Forwarded::Closed)) => {
                Err(DecodeError::Corrupt("decoding stopped early".into()).into())
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// What crosses from the decoding thread.
enum Decoded {
    Audio(Vec<f32>),
    Frame(OwnedFrame),
    Progress(f64),
}

struct OwnedFrame {
    index: usize,
    time: f64,
    image: Bgr,
    thumb: Bgr,
}

/// The decoding thread's sink: forwards everything.
struct Forward {
    tx: crossbeam::channel::Sender<Decoded>,
}

enum Forwarded {
    Decode(DecodeError),
    Closed,
}

impl From<DecodeError> for Forwarded {
    fn from(e: DecodeError) -> Self {
        Forwarded::Decode(e)
    }
}

impl DecodeSink for Forward {
    type Error = Forwarded;

    fn audio(&mut self, samples: &[f32]) -> Result<(), Forwarded> {
        self.tx
            .send(Decoded::Audio(samples.to_vec()))
            .map_err(|_| Forwarded::Closed)
    }

    fn frame(&mut self, frame: SampledFrame<'_>) -> Result<(), Forwarded> {
        let owned = OwnedFrame {
            index: frame.index,
            time: frame.time,
            image: frame.image.clone(),
            thumb: frame.thumb.clone(),
        };
        self.tx
            .send(Decoded::Frame(owned))
            .map_err(|_| Forwarded::Closed)
    }

    fn progress(&mut self, media_seconds: f64) {
        let _ = self.tx.send(Decoded::Progress(media_seconds));
    }
}

/// Decodes `plan` from `source` into `sink`.
pub fn run<S: DecodeSink>(
    source: &mut Source,
    plan: &DecodePlan,
    limits: &Limits,
    deadline: &Deadline,
    sink: &mut S,
) -> Result<DecodeStats, S::Error> {
    let mut audio = match plan.audio {
        Some(index) => Some(AudioTrack::open(source, index)?),
        None => None,
    };
    let mut video = match &plan.video {
        Some(sampling) => Some(VideoTrack::open(source, sampling, limits)?),
        None => None,
    };
    let mut stats = DecodeStats::default();
    let mut packet = ffmpeg::Packet::empty();
    let mut last_progress = 0.0;
    // Per decoded stream: where its packets end, to catch a file cut short (the demuxer then
    // just stops early).
    let mut spans: Vec<PacketSpan> = plan
        .audio
        .into_iter()
        .chain(plan.video.map(|v| v.stream))
        .filter_map(|index| PacketSpan::new(source, index))
        .collect();
    loop {
        deadline.check().map_err(DecodeError::from)?;
        match packet.read(&mut source.input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::Exit) => {
                return Err(
                    DecodeError::from(deadline.check().err().unwrap_or(Stop::Deadline)).into(),
                );
            }
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => continue,
            Err(e) => {
                // The demuxer found the container damaged here (a truncated file reads as
                // "partial file" errors up to the index's end). Whatever decoded so far
                // cannot be trusted to be the whole file.
                let at = stats.video_seconds.max(stats.audio_seconds);
                return Err(DecodeError::Corrupt(format!(
                    "the container is damaged or truncated at {at:.3} s: {e}"
                ))
                .into());
            }
        }
        let stream = packet.stream();
        if let Some(span) = spans.iter_mut().find(|s| s.index == stream) {
            span.saw(&packet);
        }
        if let Some(track) = audio.as_mut().filter(|t| t.index == stream) {
            track.send(&packet, &mut stats, sink)?;
            if stats.audio_seconds > limits.max_duration.as_secs_f64() {
                return Err(duration_exceeded(stats.audio_seconds, limits).into());
            }
        } else if let Some(track) = video.as_mut().filter(|t| t.index == stream) {
            track.send(&packet, &mut stats, limits, sink)?;
            if stats.video_seconds > limits.max_duration.as_secs_f64() {
                return Err(duration_exceeded(stats.video_seconds, limits).into());
            }
        }
        let at = stats.video_seconds.max(stats.audio_seconds);
        if at - last_progress >= 1.0 {
            last_progress = at;
            sink.progress(at);
        }
    }
    for span in &spans {
        span.check()?;
    }
    if let Some(track) = audio.as_mut() {
        track.finish(&mut stats, sink)?;
    }
    if let Some(track) = video.as_mut() {
        track.finish(&mut stats, limits, sink)?;
    }
    sink.progress(stats.video_seconds.max(stats.audio_seconds));
    if let Some(track) = &audio
        && track.packets > 0
        && track.frames == 0
    {
        return Err(DecodeError::Corrupt(format!(
            "none of the {} audio packets decoded",
            track.packets
        ))
        .into());
    }
    if let Some(track) = &video
        && track.packets > 0
        && stats.video_frames == 0
    {
        return Err(DecodeError::Corrupt(format!(
            "none of the {} video packets decoded",
            track.packets
        ))
        .into());
    }
    Ok(stats)
}

/// How far a stream's packets reach, against what the container declares.
struct PacketSpan {
    index: usize,
    time_base: f64,
    start: i64,
    declared: f64,
    end: f64,
    packets: u64,
    timed: bool,
}

impl PacketSpan {
    fn new(source: &Source, index: usize) -> Option<PacketSpan> {
        let stream = source.input.stream(index)?;
        let time_base = f64::from(stream.time_base());
        let start = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            stream.start_time()
        };
        let declared = if stream.duration() > 0 && time_base > 0.0 {
            stream.duration() as f64 * time_base
        } else {
            source.duration()?
        };
        Some(PacketSpan {
            index,
            time_base,
            start,
            declared,
            end: 0.0,
            packets: 0,
            timed: false,
        })
    }

    fn saw(&mut self, packet: &ffmpeg::Packet) {
        self.packets += 1;
        if let Some(pts) = packet.pts() {
            self.timed = true;
            let end =
                (pts.saturating_sub(self.start) + packet.duration().max(0)) as f64 * self.time_base;
            self.end = self.end.max(end);
        }
    }

    /// A stream whose packets stop well before its declared end was cut short.
    fn check(&self) -> Result<(), DecodeError> {
        let missing = self.declared - self.end;
        // Without timestamps there is nothing to compare, unless there were no packets at all.
        if (self.timed || self.packets == 0) && missing > (0.5f64).max(0.05 * self.declared) {
            return Err(DecodeError::Corrupt(format!(
                "stream {} ends at {:.3} s but the container declares {:.3} s: the file is truncated",
                self.index, self.end, self.declared
            )));
        }
        Ok(())
    }
}

fn duration_exceeded(seconds: f64, limits: &Limits) -> DecodeError {
    DecodeError::Limit {
        limit: Limit::MaxDuration,
        detail: format!(
            "decoding reached {seconds:.3} s of media, over {:.3} s",
            limits.max_duration.as_secs_f64()
        ),
    }
}

fn decoder_context(
    source: &Source,
    index: usize,
) -> Result<(codec::context::Context, f64, i64), DecodeError> {
    let stream = source
        .input
        .stream(index)
        .ok_or_else(|| DecodeError::Unsupported(format!("no stream {index}")))?;
    let ctx = codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| DecodeError::Unsupported(format!("stream {index}: {e}")))?;
    let start = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE {
        0
    } else {
        stream.start_time()
    };
    Ok((ctx, f64::from(stream.time_base()), start))
}

/// Audio: decoder and resampler to 16 kHz mono f32.
struct AudioTrack {
    index: usize,
    decoder: ffmpeg::decoder::Audio,
    resampler: Option<(resampling::Context, (Sample, u64, u32))>,
    decoded: frame::Audio,
    packets: u64,
    frames: u64,
}

impl AudioTrack {
    fn open(source: &Source, index: usize) -> Result<AudioTrack, DecodeError> {
        let (ctx, _, _) = decoder_context(source, index)?;
        let decoder = ctx.decoder().audio().map_err(|e| match e {
            ffmpeg::Error::DecoderNotFound => {
                DecodeError::Unsupported(format!("no decoder for audio stream {index}"))
            }
            e => DecodeError::Corrupt(format!("audio stream {index}: {e}")),
        })?;
        Ok(AudioTrack {
            index,
            decoder,
            resampler: None,
            decoded: frame::Audio::empty(),
            packets: 0,
            frames: 0,
        })
    }

    fn send<S: DecodeSink>(
        &mut self,
        packet: &ffmpeg::Packet,
        stats: &mut DecodeStats,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.packets += 1;
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => {
                stats.bad_packets += 1;
                return Ok(());
            }
            Err(e) => return Err(DecodeError::Corrupt(format!("audio decoder: {e}")).into()),
        }
        self.drain(stats, sink)
    }

    fn finish<S: DecodeSink>(
        &mut self,
        stats: &mut DecodeStats,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        if self.decoder.send_eof().is_ok() {
            self.drain(stats, sink)?;
        }
        if let Some((resampler, _)) = self.resampler.as_mut() {
            loop {
                let mut out =
                    frame::Audio::new(Sample::F32(sample::Type::Packed), 4096, ChannelLayout::MONO);
                match resampler.flush(&mut out) {
                    Ok(_) if out.samples() > 0 => emit(&out, stats, sink)?,
                    _ => break,
                }
            }
        }
        Ok(())
    }

    fn drain<S: DecodeSink>(
        &mut self,
        stats: &mut DecodeStats,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(ffmpeg::Error::InvalidData) => {
                    stats.bad_packets += 1;
                    return Ok(());
                }
                Err(e) => return Err(DecodeError::Corrupt(format!("audio decoder: {e}")).into()),
            }
            self.frames += 1;
            let frame = &mut self.decoded;
            if frame.samples() == 0 || frame.rate() == 0 || frame.channels() == 0 {
                continue;
            }
            // FFmpeg 5.1 leaves the layout of plain PCM empty, which the resampler refuses.
            if frame.channel_layout().is_empty() {
                frame.set_channel_layout(ChannelLayout::default(i32::from(frame.channels())));
            }
            let key = (frame.format(), frame.channel_layout().bits(), frame.rate());
            if self.resampler.as_ref().map(|(_, k)| *k) != Some(key) {
                // First frame, or the input changed mid-stream: flush the old resampler, then
                // start a new one.
                if let Some((mut old, _)) = self.resampler.take() {
                    let mut out = frame::Audio::new(
                        Sample::F32(sample::Type::Packed),
                        4096,
                        ChannelLayout::MONO,
                    );
                    while old.flush(&mut out).is_ok() {
                        if out.samples() == 0 {
                            break;
                        }
                        emit(&out, stats, sink)?;
                    }
                }
                let resampler = resampling::Context::get(
                    frame.format(),
                    frame.channel_layout(),
                    frame.rate(),
                    Sample::F32(sample::Type::Packed),
                    ChannelLayout::MONO,
                    SAMPLE_RATE,
                )
                .map_err(|e| {
                    DecodeError::Unsupported(format!("cannot resample this audio: {e}"))
                })?;
                self.resampler = Some((resampler, key));
            }
            let Some((resampler, _)) = self.resampler.as_mut() else {
                continue;
            };
            // Room for every output sample of this frame plus what the resampler holds, so
            // that its internal buffer never grows.
            let capacity = (frame.samples() as u64 * u64::from(SAMPLE_RATE))
                .div_ceil(u64::from(frame.rate()))
                + 256;
            let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 22);
            let mut out = frame::Audio::new(
                Sample::F32(sample::Type::Packed),
                capacity,
                ChannelLayout::MONO,
            );
            resampler
                .run(frame, &mut out)
                .map_err(|e| DecodeError::Corrupt(format!("resampler: {e}")))?;
            emit(&out, stats, sink)?;
        }
    }
}

fn emit<S: DecodeSink>(
    out: &frame::Audio,
    stats: &mut DecodeStats,
    sink: &mut S,
) -> Result<(), S::Error> {
    let n = out.samples();
    if n == 0 {
        return Ok(());
    }
    let samples: &[f32] = out.plane(0);
    let samples = &samples[..n.min(samples.len())];
    stats.audio_seconds += samples.len() as f64 / f64::from(SAMPLE_RATE);
    sink.audio(samples)
}

/// Video: decoder, sampling schedule and converters.
struct VideoTrack {
    index: usize,
    decoder: ffmpeg::decoder::Video,
    time_base: f64,
    start: i64,
    interval: f64,
    thumb_width: u32,
    /// The next sample time, in seconds; `None` until the first frame is sampled.
    next: Option<f64>,
    sampled: usize,
    skipping: bool,
    decoded: frame::Video,
    converted: frame::Video,
    thumb_frame: frame::Video,
    scaler: Option<(scaling::Context, scaling::Context, (Pixel, u32, u32))>,
    packets: u64,
    last_time: f64,
}

impl VideoTrack {
    fn open(
        source: &Source,
        sampling: &VideoSampling,
        limits: &Limits,
    ) -> Result<VideoTrack, DecodeError> {
        let (mut ctx, time_base, start) = decoder_context(source, sampling.stream)?;
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let codec = ffmpeg::decoder::find(ctx.id()).ok_or_else(|| {
            DecodeError::Unsupported(format!(
                "no decoder for video stream {} ({:?})",
                sampling.stream,
                ctx.id()
            ))
        })?;
        // FFmpeg refuses to allocate frames over this many pixels.
        let mut options = ffmpeg::Dictionary::new();
        options.set(
            "max_pixels",
            &limits.max_pixels.min(i32::MAX as u64).to_string(),
        );
        let decoder = ctx
            .decoder()
            .open_as_with(codec, options)
            .and_then(|o| o.video())
            .map_err(|e| DecodeError::Corrupt(format!("video stream {}: {e}", sampling.stream)))?;
        Ok(VideoTrack {
            index: sampling.stream,
            decoder,
            time_base,
            start,
            interval: sampling.interval.as_secs_f64().max(0.001),
            thumb_width: sampling.thumb_width.max(16),
            next: None,
            sampled: 0,
            skipping: false,
            decoded: frame::Video::empty(),
            converted: frame::Video::empty(),
            thumb_frame: frame::Video::empty(),
            scaler: None,
            packets: 0,
            last_time: 0.0,
        })
    }

    fn seconds(&self, ts: i64) -> f64 {
        (ts.saturating_sub(self.start)) as f64 * self.time_base
    }

    fn send<S: DecodeSink>(
        &mut self,
        packet: &ffmpeg::Packet,
        stats: &mut DecodeStats,
        limits: &Limits,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.packets += 1;
        // Skip non-reference frames that come before the next sample time: none can be
        // sampled and nothing depends on them.
        let skip = match (self.next, packet.pts()) {
            (Some(next), Some(pts)) => self.seconds(pts) < next - 1e-6,
            _ => false,
        };
        if skip != self.skipping {
            self.decoder.skip_frame(if skip {
                codec::discard::Discard::NonReference
            } else {
                codec::discard::Discard::Default
            });
            self.skipping = skip;
        }
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => {
                stats.bad_packets += 1;
                return Ok(());
            }
            Err(e) => return Err(self.decoder_error(e, limits).into()),
        }
        self.drain(stats, limits, sink)
    }

    fn decoder_error(&self, e: ffmpeg::Error, limits: &Limits) -> DecodeError {
        match e {
            // What FFmpeg answers when a frame is over `max_pixels`.
            ffmpeg::Error::Other { errno } if errno == ffmpeg::util::error::EINVAL => {
                DecodeError::Limit {
                    limit: Limit::MaxPixels,
                    detail: format!(
                        "the video decoder refused a frame over {} pixels",
                        limits.max_pixels
                    ),
                }
            }
            e => DecodeError::Corrupt(format!("video decoder: {e}")),
        }
    }

    fn finish<S: DecodeSink>(
        &mut self,
        stats: &mut DecodeStats,
        limits: &Limits,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.decoder.skip_frame(codec::discard::Discard::Default);
        if self.decoder.send_eof().is_ok() {
            self.drain(stats, limits, sink)?;
        }
        Ok(())
    }

    fn drain<S: DecodeSink>(
        &mut self,
        stats: &mut DecodeStats,
        limits: &Limits,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(ffmpeg::Error::InvalidData) => {
                    stats.bad_packets += 1;
                    return Ok(());
                }
                Err(e) => return Err(self.decoder_error(e, limits).into()),
            }
            stats.video_frames += 1;
            let (w, h) = (self.decoded.width(), self.decoded.height());
            check_pixels(u64::from(w), u64::from(h), limits, "a decoded frame is")?;
            let time = match self.decoded.timestamp() {
                Some(ts) => self.seconds(ts),
                // No timestamps: count frames at the stream's nominal rate, or 25 fps.
                None => self.last_time + 1.0 / 25.0,
            };
            self.last_time = time;
            stats.video_seconds = stats.video_seconds.max(time);
            let due = match self.next {
                None => true,
                Some(next) => time >= next - 1e-6,
            };
            if !due || w == 0 || h == 0 {
                continue;
            }
            let (image, thumb) = self.convert()?;
            stats.sampled_frames += 1;
            let index = self.sampled;
            self.sampled += 1;
            self.next = Some(((time / self.interval).floor() + 1.0) * self.interval);
            sink.frame(SampledFrame {
                index,
                time: time.max(0.0),
                image: &image,
                thumb: &thumb,
            })?;
        }
    }

    /// Converts the decoded frame to BGR, full size and thumbnail.
    fn convert(&mut self) -> Result<(Bgr, Bgr), DecodeError> {
        let frame = &self.decoded;
        let key = (frame.format(), frame.width(), frame.height());
        if self.scaler.as_ref().map(|s| s.2) != Some(key) {
            let (w, h) = (key.1, key.2);
            let tw = self.thumb_width.min(w).max(2) & !1;
            let th = ((u64::from(h) * u64::from(tw) / u64::from(w)).max(2) as u32) & !1;
            let corrupt =
                |e: ffmpeg::Error| DecodeError::Corrupt(format!("cannot convert frames: {e}"));
            let full =
                scaling::Context::get(key.0, w, h, Pixel::BGR24, w, h, scaling::Flags::BICUBIC)
                    .map_err(corrupt)?;
            let thumb =
                scaling::Context::get(key.0, w, h, Pixel::BGR24, tw, th, scaling::Flags::AREA)
                    .map_err(corrupt)?;
            self.scaler = Some((full, thumb, key));
        }
        let Some((full, thumb, _)) = self.scaler.as_mut() else {
            return Err(DecodeError::Corrupt("no converter".into()));
        };
        full.run(frame, &mut self.converted)
            .map_err(|e| DecodeError::Corrupt(format!("frame conversion: {e}")))?;
        thumb
            .run(frame, &mut self.thumb_frame)
            .map_err(|e| DecodeError::Corrupt(format!("thumbnail conversion: {e}")))?;
        Ok((packed(&self.converted)?, packed(&self.thumb_frame)?))
    }
}

/// Copies a BGR24 frame's rows (which have a stride) into a packed image.
fn packed(frame: &frame::Video) -> Result<Bgr, DecodeError> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = data
            .get(y * stride..y * stride + w * 3)
            .ok_or_else(|| DecodeError::Corrupt("converted frame is short".into()))?;
        out.extend_from_slice(row);
    }
    Bgr::from_raw(w, h, out).ok_or_else(|| DecodeError::Corrupt("converted frame size".into()))
}

/// Decodes every packet of every audio and video stream and discards the frames: the
/// decode-only floor that `ffmpeg -i FILE -f null -` also measures. For the benchmark.
pub fn decode_all(path: &Path) -> Result<DecodeStats, DecodeError> {
    init();
    let mut input = ffmpeg::format::input(path).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let mut decoders: Vec<Option<ffmpeg::decoder::Opened>> = Vec::new();
    for stream in input.streams() {
        let medium = stream.parameters().medium();
        let opened = if matches!(medium, media::Type::Video | media::Type::Audio) {
            let mut ctx = codec::context::Context::from_parameters(stream.parameters())
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            ctx.set_threading(codec::threading::Config {
                kind: codec::threading::Type::Frame,
                count: 0,
                ..Default::default()
            });
            ffmpeg::decoder::find(ctx.id()).and_then(|codec| ctx.decoder().open_as(codec).ok())
        } else {
            None
        };
        decoders.push(opened);
    }
    let mut stats = DecodeStats::default();
    // Any decoded frame fits an `AVFrame`; the video wrapper is just the safe way to get one.
    let mut frame = frame::Video::empty();
    // Counts every frame, audio and video, in `video_frames`.
    let mut drain = |decoder: &mut ffmpeg::decoder::Opened, stats: &mut DecodeStats| {
        while decoder.receive_frame(&mut frame).is_ok() {
            stats.video_frames += 1;
        }
    };
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        }
        if let Some(Some(decoder)) = decoders.get_mut(packet.stream()) {
            if decoder.send_packet(&packet).is_err() {
                stats.bad_packets += 1;
            }
            drain(decoder, &mut stats);
        }
    }
    for decoder in decoders.iter_mut().flatten() {
        let _ = decoder.send_eof();
        drain(decoder, &mut stats);
    }
    Ok(stats)
}
