//! `BucketWatch` with real inotify: files closed after writing, moved in, or left open but
//! stable become OSS-shaped events; temporary files do not.

use std::io::Write as _;
use std::time::Duration;

use crate::common::{Harness, Sink};

async fn start(sink: &Sink) -> Harness {
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: BucketWatch
metadata: {{name: media}}
spec:
  directory: "{{dir}}/media"
  stableFor: PT0.5S
  sink: {{uri: "{}"}}
"#,
        sink.uri()
    );
    let h = Harness::start(&yaml).await;
    // The watch is set up by `apply`; give inotify a moment anyway.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h
}

#[tokio::test]
async fn written_files_become_oss_events_and_temporary_files_do_not() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let media = h.dir.path().join("media");

    std::fs::write(media.join(".hidden"), "x").unwrap();
    std::fs::write(media.join("upload.tmp"), "x").unwrap();
    std::fs::write(media.join("talk.mp4.part"), vec![7u8; 4096]).unwrap();
    // Written right after its directories appear: found by the walk of the new directory if
    // inotify had no watch on it yet.
    std::fs::create_dir_all(media.join("talks/2024")).unwrap();
    std::fs::write(media.join("talks/2024/intro.wav"), vec![1u8; 1000]).unwrap();
    // The usual upload pattern: write a .part file, then rename it.
    std::fs::rename(media.join("talk.mp4.part"), media.join("talk.mp4")).unwrap();

    let got = sink.wait(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got_now = sink.received();
    assert_eq!(got_now.len(), 2, "{got:#?}");
    let wav = got_now
        .iter()
        .find(|r| r.json()["oss"]["object"]["key"] == "talks/2024/intro.wav")
        .unwrap();
    assert_eq!(
        wav.attr("type").as_deref(),
        Some("oss:ObjectCreated:PutObject")
    );
    assert_eq!(wav.attr("source").as_deref(), Some("acs.oss"));
    assert_eq!(
        wav.attr("subject").as_deref(),
        Some("acs:oss:local:local:media/talks/2024/intro.wav")
    );
    assert_eq!(wav.json()["region"], "local");
    assert_eq!(wav.json()["oss"]["object"]["size"], 1000);
    let mp4 = got_now
        .iter()
        .find(|r| r.json()["oss"]["object"]["key"] == "talk.mp4")
        .unwrap();
    assert_eq!(mp4.json()["oss"]["object"]["size"], 4096);
}

#[tokio::test]
async fn a_file_left_open_is_published_once_its_size_is_stable() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let media = h.dir.path().join("media");
    let mut file = std::fs::File::create(media.join("recording.wav")).unwrap();
    for _ in 0..3 {
        file.write_all(&[0u8; 1024]).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still open: published after 0.5 s without growth, with its full size.
    let got = sink.wait(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["oss"]["object"]["size"], 3072);
    // Closing it without writing more is the same version: not published again.
    drop(file);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(sink.received().len(), 1);
    // Rewriting it is a new version, with a new id.
    std::fs::write(media.join("recording.wav"), vec![0u8; 10]).unwrap();
    let got = sink.wait(2, Duration::from_secs(10)).await;
    assert_ne!(got[0].attr("id"), got[1].attr("id"));
}
