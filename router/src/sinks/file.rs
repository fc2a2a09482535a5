//! The built-in file sink: appends each event as one line of structured JSON.
//!
//! One sink per file, shared by every trigger that writes there, so lines never interleave.
//! A line is written to the file (handed to the operating system) before its delivery counts
//! as done.
//!
//! **Group commit.** Deliveries encode their line and put it on a bounded queue
//! ([`QUEUE_LINES`]; a full queue makes deliveries wait) to one writer thread per file, which
//! takes every line waiting, writes them with one `write` call and then answers each delivery.
//! A burst of events costs a few writes instead of a blocking-pool round trip per line. A write
//! error fails every delivery of that write (they are retried with the trigger's delivery
//! policy) and the file is reopened for the next one: it may have been rotated or the disk
//! freed.
//!
//! What it does not do: fsync (an event is as durable as the page cache), or rotate files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};
use triggerfish_core::delivery::InternalError;
use triggerfish_core::event::{EncodeOptions, EventView, write_structured};

use super::Attempt;

/// Lines waiting for the writer, at most.
pub const QUEUE_LINES: usize = 4096;
/// The most bytes one write gathers (a single line may exceed it).
const MAX_WRITE_BYTES: usize = 1 << 20;

/// A line and who waits for it to be written.
type Line = (Vec<u8>, oneshot::Sender<bool>);

/// Appends events to a JSON Lines file.
pub struct FileSink {
    path: PathBuf,
    lines: mpsc::Sender<Line>,
}

impl FileSink {
    /// A sink for `path`; the file and its directory are created on first use. Starts the
    /// file's writer thread, which ends when the sink is dropped.
    pub fn new(path: PathBuf) -> FileSink {
        let (lines, rx) = mpsc::channel(QUEUE_LINES);
        let writer = Writer {
            path: path.clone(),
            file: None,
        };
        let spawned = std::thread::Builder::new()
            .name("tf-file-sink".into())
            .spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            // Every delivery then fails as unavailable (and is retried or dead-lettered).
            tracing::error!(path = %path.display(), error = %e, "file sink cannot start its writer thread");
        }
        FileSink { path, lines }
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub async fn send(&self, view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Attempt {
        let mut line = Vec::with_capacity(view.wire_size() + 64);
        write_structured(view, opts, &mut line);
        // One line per event: a line break in JSON can only be whitespace between tokens
        // (inside strings it is escaped), so a space keeps the same JSON on one line.
        for b in &mut line {
            if matches!(*b, b'\n' | b'\r') {
                *b = b' ';
            }
        }
        line.push(b'\n');
        let (done, written) = oneshot::channel();
        if self.lines.send((line, done)).await.is_err() {
            return Attempt::Internal(InternalError::Unavailable);
        }
        match written.await {
            Ok(true) => Attempt::accepted(),
            _ => Attempt::Internal(InternalError::Unavailable),
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Line>) {
        let mut buf = Vec::new();
        let mut waiting = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some((line, done)) = next.take() {
                buf.extend_from_slice(&line);
                waiting.push(done);
                if buf.len() < MAX_WRITE_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            let ok = self.write(&buf);
            for done in waiting.drain(..) {
                let _ = done.send(ok);
            }
            buf.clear();
        }
    }

    fn write(&mut self, buf: &[u8]) -> bool {
        if self.file.is_none() {
            match self.open() {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "file sink cannot open its file");
                    return false;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        match file.write_all(buf) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "file sink write failed");
                self.file = None;
                false
            }
        }
    }

    fn open(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use triggerfish_core::event::{DecodeLimits, EventBatch, decode_structured};

    use super::*;

    fn event(id: usize) -> EventBatch {
        let json = format!(r#"{{"specversion":"1.0","id":"e{id}","source":"/s","type":"t"}}"#);
        decode_structured(Bytes::from(json), &DecodeLimits::default()).unwrap()
    }

    fn accepted(a: &Attempt) -> bool {
        matches!(a, Attempt::Response(r) if r.status.is_success())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_concurrent_deliveries_writes_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("out.jsonl");
        let sink = Arc::new(FileSink::new(path.clone()));
        let n = 3 * QUEUE_LINES;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let batch = event(i);
                    let view = batch.get(0).unwrap();
                    accepted(&sink.send(&view, &EncodeOptions::default()).await)
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap(), "every delivery is accepted");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "one whole line per delivery");
    }

    #[tokio::test]
    async fn a_pretty_printed_event_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let sink = FileSink::new(path.clone());
        let json = "{\r\n  \"specversion\": \"1.0\",\n  \"id\": \"a b\",\n  \"source\": \"/s\",\n  \"type\": \"t\",\n  \"data\": {\n    \"text\": \"two\\nlines\"\n  }\n}";
        let batch = decode_structured(Bytes::from(json), &DecodeLimits::default()).unwrap();
        let view = batch.get(0).unwrap();
        assert!(accepted(&sink.send(&view, &EncodeOptions::default()).await));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["id"], "a b");
        assert_eq!(v["data"]["text"], "two\nlines");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_fails_the_delivery_and_the_sink_recovers() {
        let dir = tempfile::tempdir().unwrap();
        // The parent is a regular file: the directory cannot be created.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let sink = FileSink::new(blocker.join("out.jsonl"));
        let batch = event(1);
        let view = batch.get(0).unwrap();
        let attempt = sink.send(&view, &EncodeOptions::default()).await;
        assert!(
            matches!(attempt, Attempt::Internal(InternalError::Unavailable)),
            "fails as unavailable (retried by the delivery policy)"
        );
        // Once the path is usable, the same sink writes.
        std::fs::remove_file(&blocker).unwrap();
        let attempt = sink.send(&view, &EncodeOptions::default()).await;
        assert!(accepted(&attempt));
        let text = std::fs::read_to_string(blocker.join("out.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1);
    }
}
