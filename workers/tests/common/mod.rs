//! Test media, made at test time with `ffmpeg` and `espeak-ng` (never committed), and the
//! model registry from the cache that `scripts/dev setup` fills.
#![allow(dead_code, clippy::unwrap_used)] // Shared by several test binaries; tests fail loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use triggerfish_workers::infer::{ExecutionProvider, ModelNeeds, ModelRegistry};
use triggerfish_workers::native::Locator;

/// The font `drawtext` uses (`fonts-dejavu-core`).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Runs `ffmpeg -v error -y ARGS`, panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (scripts/dev setup)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speech from espeak-ng as a WAV file.
pub fn espeak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg(text)
        .output()
        .expect("espeak-ng is installed (scripts/dev setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The file's audio as 16 kHz mono f32, decoded by the ffmpeg CLI (independently of the
/// crate's decoder).
pub fn pcm16k(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "16000", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// First and last time (seconds) the signal exceeds 2 % of its peak.
pub fn signal_bounds(samples: &[f32]) -> (f64, f64) {
    let peak = samples.iter().fold(0f32, |m, v| m.max(v.abs()));
    let th = peak * 0.02;
    let first = samples.iter().position(|v| v.abs() > th).unwrap();
    let last = samples.iter().rposition(|v| v.abs() > th).unwrap();
    (first as f64 / 16000.0, last as f64 / 16000.0)
}

/// `lead` seconds of silence, `speech`, `tail` seconds of silence, as a 16 kHz WAV.
pub fn padded_speech(dir: &Path, name: &str, speech: &Path, lead: f64, tail: f64) -> PathBuf {
    let out = dir.join(name);
    let ms = (lead * 1000.0).round() as u64;
    let filter = format!("adelay={ms}:all=1,apad=pad_dur={tail}");
    ffmpeg(&[
        "-i",
        speech.to_str().unwrap(),
        "-af",
        &filter,
        "-ar",
        "16000",
        out.to_str().unwrap(),
    ]);
    out
}

/// A white 640x360 H.264 video with `text` drawn in black in the middle.
pub fn text_video(
    dir: &Path,
    name: &str,
    text: &str,
    seconds: f64,
    audio: Option<&Path>,
) -> PathBuf {
    let out = dir.join(name);
    let draw = format!(
        "drawtext=fontfile={FONT}:text='{text}':fontsize=48:fontcolor=black:x=(w-text_w)/2:y=(h-text_h)/2"
    );
    let source = format!("color=c=white:s=640x360:r=25:d={seconds}");
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), source];
    if let Some(a) = audio {
        args.extend(["-i".into(), a.to_str().unwrap().into()]);
    }
    args.extend([
        "-vf".into(),
        draw,
        "-c:v".into(),
        "libx264".into(),
        "-pix_fmt".into(),
        "yuv420p".into(),
    ]);
    if audio.is_some() {
        args.extend(["-c:a".into(), "aac".into(), "-shortest".into()]);
    }
    args.push(out.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg(&refs);
    out
}

/// The models every pipeline needs, from the cache (or TRIGGERFISH_* variables).
pub fn registry() -> ModelRegistry {
    static REGISTRY: OnceLock<ModelRegistry> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            ModelRegistry::load(
                &Locator::from_env(None, None),
                ModelNeeds {
                    vad: true,
                    ocr: true,
                },
                ExecutionProvider::Cpu,
                2,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// Deterministic noise (xorshift), for "random bytes" files.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        })
        .collect()
}

/// A Matroska file whose only track declares `width` x `height` frames, with one block of
/// garbage: a hostile header, crafted by hand.
pub fn matroska_declaring(width: u64, height: u64) -> Vec<u8> {
    fn size(n: usize) -> Vec<u8> {
        // 8-byte EBML size.
        let mut v = vec![0x01];
        v.extend_from_slice(&(n as u64).to_be_bytes()[1..]);
        v
    }
    fn el(id: &[u8], body: &[u8]) -> Vec<u8> {
        [id, &size(body.len()), body].concat()
    }
    fn uint(id: &[u8], v: u64) -> Vec<u8> {
        el(id, &v.to_be_bytes())
    }
    let header = el(
        &[0x1A, 0x45, 0xDF, 0xA3],
        &[
            el(&[0x42, 0x82], b"matroska"),
            uint(&[0x42, 0x87], 4),
            uint(&[0x42, 0x85], 2),
        ]
        .concat(),
    );
    let info = el(
        &[0x15, 0x49, 0xA9, 0x66],
        &uint(&[0x2A, 0xD7, 0xB1], 1_000_000),
    );
    let video = [uint(&[0xB0], width), uint(&[0xBA], height)].concat();
    let track = [
        uint(&[0xD7], 1),
        uint(&[0x73, 0xC5], 1),
        uint(&[0x83], 1),
        el(&[0x86], b"V_MPEG4/ISO/AVC"),
        el(&[0xE0], &video),
    ]
    .concat();
    let tracks = el(&[0x16, 0x54, 0xAE, 0x6B], &el(&[0xAE], &track));
    let block = el(
        &[0xA3],
        &[&[0x81, 0, 0, 0x80][..], &noise(1024, 3)].concat(),
    );
    let cluster = el(
        &[0x1F, 0x43, 0xB6, 0x75],
        &[uint(&[0xE7], 0), block].concat(),
    );
    [
        header,
        el(&[0x18, 0x53, 0x80, 0x67], &[info, tracks, cluster].concat()),
    ]
    .concat()
}

/// A PNG whose header declares `width` x `height`.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
