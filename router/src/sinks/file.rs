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
//! **No torn lines.** A write that fails part way (a full disk, a file size limit) is cut back
//! off the file, so that the retried lines do not start in the middle of a line. A file that
//! ends in the middle of a line when the sink opens it (a crash or `kill -9` during a write,
//! which Linux may interrupt between pages) gets a line break first: the torn line stays one
//! unreadable line instead of swallowing the next, whole, event.
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
        // Where the file ends, to cut a failed write back to. One `fstat` per write, not per
        // line; the length is not tracked, since something else may truncate the file.
        let before = file.metadata().map(|m| m.len());
        match file.write_all(buf) {
            Ok(()) => true,
            Err(e) => {
                let cut = before.and_then(|len| file.set_len(len));
                tracing::warn!(path = %self.path.display(), error = %e, cut_back = cut.is_ok(), "file sink write failed; its deliveries are retried");
                // Reopened for the next write, which also ends a torn line that is left.
                self.file = None;
                false
            }
        }
    }

    /// Opens the file for appending, ending the torn line a crash may have left.
    fn open(&self) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::FileExt as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        let mut last = [0u8];
        if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
            file.write_all(b"\n")?;
            tracing::warn!(path = %self.path.display(), "the file ended in the middle of a line (a crash during a write?); that line is ended there and left as it is");
        }
        Ok(file)
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
    async fn a_torn_last_line_is_ended_before_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // What a crash in the middle of a write leaves.
        std::fs::write(&path, b"{\"id\":\"e0\",\"sou").unwrap();
        let sink = FileSink::new(path.clone());
        let batch = event(1);
        assert!(accepted(
            &sink
                .send(&batch.get(0).unwrap(), &EncodeOptions::default())
                .await
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0], "{\"id\":\"e0\",\"sou",
            "the torn line is left as it was"
        );
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["id"], "e1", "the new event is a line of its own");
    }

    /// Set in the child process of [`a_write_cut_short_is_taken_back_off_the_file`]: the file
    /// it writes.
    const SIZE_LIMITED_CHILD: &str = "TF_FILE_SINK_SIZE_LIMITED_CHILD";

    /// A write that fails part way, as on a full disk. The test runs itself again in a child
    /// process whose file size limit is 4 KiB (`prlimit`), with `SIGXFSZ` ignored, so that a
    /// write past the limit writes what fits and then fails with `EFBIG`.
    #[test]
    fn a_write_cut_short_is_taken_back_off_the_file() {
        if let Some(path) = std::env::var_os(SIZE_LIMITED_CHILD) {
            let mut writer = Writer {
                path: path.into(),
                file: None,
            };
            assert!(writer.write(b"first\n"));
            let mut group = vec![b'x'; 8192];
            group.push(b'\n');
            assert!(!writer.write(&group), "the write passes the 4 KiB limit");
            assert!(writer.write(b"after\n"));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let child = std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; exec prlimit --fsize=4096 \"$@\"", "sh"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sinks::file::tests::a_write_cut_short_is_taken_back_off_the_file",
            ])
            .env(SIZE_LIMITED_CHILD, &path)
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "the child's assertions: {}\n{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        let text = std::fs::read(&path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&text),
            "first\nafter\n",
            "the part of the failed write that landed is cut back off"
        );
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
