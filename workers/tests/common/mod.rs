//! Test media, made at test time with `ffmpeg` and `espeak-ng` (never committed), and the
//! model registry from the cache that `scripts/dev setup` fills.
#![allow(dead_code)]

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
