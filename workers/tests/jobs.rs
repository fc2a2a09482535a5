//! Jobs through a real pool: events in, reply events out, artifacts in a local object store;
//! every hostile or broken input ends in a `.failed` event with the right reason, and the
//! pool keeps working.
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

mod common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use triggerfish_core::config::{LocalStoreSpec, ObjectStoreSpec};
use triggerfish_core::event::{DecodeLimits, EventBatch, decode_structured};
use triggerfish_workers::infer::ExecutionProvider;
use triggerfish_workers::limits::Limits;
use triggerfish_workers::native::Locator;
use triggerfish_workers::{
    FailureReason, Full, MediaMetrics, Options, Outcome, Pipeline, PoolSettings, WorkerPool,
};

use common::*;

struct Bucket {
    root: tempfile::TempDir,
}

impl Bucket {
    fn new() -> Bucket {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("media")).unwrap();
        Bucket { root }
    }

    fn path(&self, key: &str) -> std::path::PathBuf {
        self.root.path().join("media").join(key)
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let p = self.path(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn settings(&self, pipeline: Pipeline, limits: Limits) -> PoolSettings {
        PoolSettings {
            pipeline,
            threads: NonZeroUsize::new(2).unwrap(),
            queue_limit: NonZeroUsize::new(16).unwrap(),
            options: Options {
                limits,
                ..Options::default()
            },
            locator: Locator::from_env(None, None),
            provider: ExecutionProvider::Cpu,
            object_store: ObjectStoreSpec::Local(LocalStoreSpec {
                root: self.root.path().to_path_buf(),
            }),
            output_prefix: "results".into(),
        }
    }
}

/// An OSS object-created event for `key` of bucket `media`, as EventBridge delivers it.
fn oss_event(key: &str) -> EventBatch {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let json = serde_json::json!({
        "specversion": "1.0",
        "id": format!("oss-{key}"),
        "source": "acs.oss",
        "type": "oss:ObjectCreated:PutObject",
        "subject": format!("acs:oss:cn-hangzhou:1234567890:media/{encoded}"),
        "datacontenttype": "application/json;charset=utf-8",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "data": {
            "eventName": "ObjectCreated:PutObject",
            "region": "cn-hangzhou",
            "oss": {
                "bucket": {"name": "media"},
                "object": {"key": encoded, "size": 1, "eTag": "x"}
            }
        }
    });
    decode_structured(Bytes::from(json.to_string()), &DecodeLimits::default()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Submits the event for `key` and returns (outcome, reply type, reply data).
fn run_job(pool: &WorkerPool, key: &str) -> (Outcome, String, Value) {
    let batch = oss_event(key);
    let handle = pool.submit_view(&batch.get(0).unwrap()).expect("queued");
    let output = runtime().block_on(handle);
    let reply = output.reply.as_ref().expect("a reply");
    let view = reply.get(0).unwrap();
    assert_eq!(view.subject(), Some(key));
    assert_eq!(
        view.extension("mediajobid").unwrap().as_str(),
        Some(output.job_id.as_str())
    );
    assert!(view.extension("traceparent").is_some());
    let data: Value = serde_json::from_slice(&view.data().to_bytes()).unwrap();
    (output.outcome, view.ty().to_owned(), data)
}

fn assert_failed(result: &(Outcome, String, Value), reason: FailureReason, limit: Option<&str>) {
    let (outcome, ty, data) = result;
    assert_eq!(*outcome, Outcome::Failed(reason), "{data}");
    assert_eq!(ty, "dev.triggerfish.media.failed");
    assert_eq!(data["reason"], reason.code(), "{data}");
    match limit {
        Some(limit) => assert_eq!(data["limit"], limit, "{data}"),
        None => assert!(data.get("limit").is_none(), "{data}"),
    }
}

#[test]
fn a_video_job_completes_with_artifacts_in_the_store() {
    let bucket = Bucket::new();
    let dir = tempfile::tempdir().unwrap();
    let speech = espeak(dir.path(), "s.wav", "hello world this is a test");
    let padded = padded_speech(dir.path(), "p.wav", &speech, 1.0, 1.0);
    let video = text_video(dir.path(), "v.mp4", "HELLO 2026", 4.0, Some(&padded));
    bucket.put("uploads/clip one.mp4", &std::fs::read(&video).unwrap());
    let metrics = MediaMetrics::new();
    let pool = WorkerPool::start_with(
        "test/video",
        bucket.settings(Pipeline::Video, Limits::default()),
        &metrics,
    )
    .unwrap();

    let (outcome, ty, data) = run_job(&pool, "uploads/clip one.mp4");
    assert_eq!(outcome, Outcome::Completed, "{data}");
    assert_eq!(ty, "dev.triggerfish.media.completed");
    assert_eq!(data["input"]["key"], "uploads/clip one.mp4");
    assert_eq!(
        data["summary"]["video"]["text"][0]["text"], "HELLO 2026",
        "{data}"
    );
    assert!(
        data["summary"]["speech"]["speechRatio"].as_f64().unwrap() > 0.2,
        "{data}"
    );
    let out = bucket.path("results/uploads/clip one.mp4");
    for name in [
        "probe.json",
        "speech.json",
        "text.json",
        "sprite.jpg",
        "thumbs/0000.jpg",
        "thumbs/0003.jpg",
    ] {
        assert!(out.join(name).is_file(), "{name} in {}", out.display());
    }
    assert_eq!(data["artifacts"]["thumbs"]["count"], 4, "{data}");
    let probe_uri = data["artifacts"]["probe.json"].as_str().unwrap();
    // An absolute file:// URI, the key's space percent-encoded.
    assert_eq!(
        probe_uri,
        url::Url::from_file_path(out.join("probe.json"))
            .unwrap()
            .as_str()
    );
    assert!(probe_uri.contains("/clip%20one.mp4/"), "{probe_uri}");
    assert_eq!(
        metrics.jobs("test/video", Pipeline::Video, Outcome::Completed),
        1
    );
    assert!(metrics.processed_seconds("test/video", Pipeline::Video) >= 3.9);

    // The artifacts' own events are ignored: no job, no reply.
    let batch = oss_event("results/uploads/clip one.mp4/thumbs/0000.jpg");
    let output = runtime().block_on(pool.submit_view(&batch.get(0).unwrap()).unwrap());
    assert_eq!(output.outcome, Outcome::Ignored);
    assert!(output.reply.is_none());
}

#[test]
fn broken_and_hostile_inputs_fail_with_the_right_reason() {
    let bucket = Bucket::new();
    let dir = tempfile::tempdir().unwrap();
    // A truncated MP4 with its index at the end (the index is cut off) and one with its index
    // at the start (the data is cut off).
    let whole = dir.path().join("whole.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "3",
        "-pix_fmt",
        "yuv420p",
        whole.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&whole).unwrap();
    bucket.put("truncated.mp4", &bytes[..bytes.len() / 2]);
    let fast = dir.path().join("fast.mp4");
    ffmpeg(&[
        "-i",
        whole.to_str().unwrap(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        fast.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&fast).unwrap();
    bucket.put("truncated-faststart.mp4", &bytes[..bytes.len() / 2]);
    bucket.put("random.mp4", &noise(256 * 1024, 42));
    bucket.put("one-byte.mp4", b"x");
    bucket.put("huge.mkv", &matroska_declaring(100_000, 100_000));
    bucket.put("huge.png", &png_declaring(100_000, 100_000));
    // One hour of silence, cheaply: 4 kHz 8-bit PCM (14 MB, written in about a second).
    let silent = bucket.path("silent-hour.wav");
    let started = Instant::now();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=4000:cl=mono",
        "-t",
        "3600",
        "-c:a",
        "pcm_u8",
        silent.to_str().unwrap(),
    ]);
    eprintln!("one hour of silence made in {:?}", started.elapsed());

    let limits = Limits {
        max_duration: Duration::from_secs(60),
        ..Limits::default()
    };
    let metrics = MediaMetrics::new();
    let pool = WorkerPool::start_with(
        "test/hostile",
        bucket.settings(Pipeline::Video, limits),
        &metrics,
    )
    .unwrap();

    assert_failed(
        &run_job(&pool, "truncated.mp4"),
        FailureReason::CorruptInput,
        None,
    );
    assert_failed(
        &run_job(&pool, "truncated-faststart.mp4"),
        FailureReason::CorruptInput,
        None,
    );
    assert_failed(
        &run_job(&pool, "random.mp4"),
        FailureReason::UnsupportedFormat,
        None,
    );
    assert_failed(
        &run_job(&pool, "one-byte.mp4"),
        FailureReason::CorruptInput,
        None,
    );
    assert_failed(
        &run_job(&pool, "huge.mkv"),
        FailureReason::LimitExceeded,
        Some("maxPixels"),
    );
    assert_failed(
        &run_job(&pool, "huge.png"),
        FailureReason::LimitExceeded,
        Some("maxPixels"),
    );
    let started = Instant::now();
    assert_failed(
        &run_job(&pool, "silent-hour.wav"),
        FailureReason::LimitExceeded,
        Some("maxDuration"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the hour was decoded: {:?}",
        started.elapsed()
    );
    assert_failed(
        &run_job(&pool, "missing.mp4"),
        FailureReason::FetchFailed,
        None,
    );

    // A key that escapes the bucket is refused before anything is read.
    let batch = decode_structured(
        Bytes::from(r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectCreated:PutObject","data":{"oss":{"bucket":{"name":"media"},"object":{"key":"..%2F..%2Fetc%2Fpasswd"}}}}"#),
        &DecodeLimits::default(),
    )
    .unwrap();
    let output = runtime().block_on(pool.submit_view(&batch.get(0).unwrap()).unwrap());
    assert_eq!(
        output.outcome,
        Outcome::Failed(FailureReason::InvalidRequest)
    );

    // After all that, the pool still works: both threads are alive.
    let video = text_video(dir.path(), "ok.mp4", "HELLO 2026", 2.0, None);
    bucket.put("ok-1.mp4", &std::fs::read(&video).unwrap());
    bucket.put("ok-2.mp4", &std::fs::read(&video).unwrap());
    let a = oss_event("ok-1.mp4");
    let b = oss_event("ok-2.mp4");
    let rt = runtime();
    let ha = pool.submit_view(&a.get(0).unwrap()).unwrap();
    let hb = pool.submit_view(&b.get(0).unwrap()).unwrap();
    let (oa, ob) = rt.block_on(async { (ha.await, hb.await) });
    assert_eq!(
        (oa.outcome, ob.outcome),
        (Outcome::Completed, Outcome::Completed)
    );
    assert_eq!(
        metrics.jobs(
            "test/hostile",
            Pipeline::Video,
            Outcome::Failed(FailureReason::CorruptInput)
        ),
        3
    );
}

#[test]
fn a_full_queue_refuses_at_once() {
    let bucket = Bucket::new();
    let dir = tempfile::tempdir().unwrap();
    let video = text_video(dir.path(), "v.mp4", "HELLO 2026", 20.0, None);
    bucket.put("v.mp4", &std::fs::read(&video).unwrap());
    let mut settings = bucket.settings(Pipeline::Video, Limits::default());
    settings.threads = NonZeroUsize::MIN;
    settings.queue_limit = NonZeroUsize::MIN;
    let metrics = MediaMetrics::new();
    let pool = WorkerPool::start_with("test/full", settings, &metrics).unwrap();
    let events: Vec<EventBatch> = (0..4).map(|_| oss_event("v.mp4")).collect();
    let started = Instant::now();
    let results: Vec<Result<_, Full>> = events
        .iter()
        .map(|e| pool.submit_view(&e.get(0).unwrap()))
        .collect();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "submit blocked"
    );
    let refused = results.iter().filter(|r| r.is_err()).count();
    // One running, one waiting: at least two of four are refused.
    assert!(refused >= 2, "{refused} refused");
    assert!(pool.queue_depth() <= 1);
    let rt = runtime();
    for handle in results.into_iter().flatten() {
        assert_eq!(rt.block_on(handle).outcome, Outcome::Completed);
    }
}

#[test]
fn a_missing_runtime_or_model_is_a_clear_build_error() {
    let bucket = Bucket::new();
    let mut settings = bucket.settings(Pipeline::Audio, Limits::default());
    let empty = tempfile::tempdir().unwrap();
    settings.locator = Locator::with_env(None, None, |name| match name {
        "TRIGGERFISH_CACHE" => Some(empty.path().as_os_str().to_owned()),
        _ => None,
    });
    let err = WorkerPool::start_with("test/none", settings, &MediaMetrics::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/dev setup"), "{err}");
    assert!(
        err.contains("silero_vad.onnx") || err.contains("ONNX Runtime"),
        "{err}"
    );
    let _ = Path::new("");
}
