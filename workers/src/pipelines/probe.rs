//! The probe pipeline: what [`crate::decode::probe`] reports about a file, written as
//! `probe.json` — container (FFmpeg's demuxer names and description), duration, overall bit
//! rate, size, and per stream: kind, codec, duration, bit rate, frame count, and for video
//! the size, pixel format and average frame rate, for audio the sample rate, channels and
//! sample format.
//!
//! Every pipeline writes `probe.json` first (it costs no decoding), so this pipeline is the
//! others' first step alone. Opening the file already applies the size, duration and pixel
//! limits to what the header declares (see [`crate::decode::open`]).

pub use crate::decode::{ProbeInfo, StreamInfo};
