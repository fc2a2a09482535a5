//! The built-in file sink: appends each event as one line of structured JSON.
//!
//! One sink per file, shared by every trigger that writes there, so lines never interleave.
//! A line is written and flushed before the delivery counts as done.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use triggerfish_core::delivery::InternalError;
use triggerfish_core::event::{EncodeOptions, EventView, write_structured};

use super::Attempt;

/// Appends events to a JSON Lines file.
pub struct FileSink {
    path: PathBuf,
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileSink {
    /// A sink for `path`; the file and its directory are created on first use.
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path,
            file: Mutex::new(None),
        }
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub async fn send(&self, view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Attempt {
        let mut line = Vec::with_capacity(view.wire_size() + 64);
        write_structured(view, opts, &mut line);
        line.push(b'\n');
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            match self.open().await {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "file sink cannot open its file");
                    return Attempt::Internal(InternalError::Unavailable);
                }
            }
        }
        let Some(file) = guard.as_mut() else {
            return Attempt::Internal(InternalError::Unavailable);
        };
        match file.write_all(&line).await {
            Ok(()) => match file.flush().await {
                Ok(()) => Attempt::accepted(),
                Err(_) => Attempt::Internal(InternalError::Unavailable),
            },
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "file sink write failed");
                // Reopen next time: the file may have been rotated or the disk freed.
                *guard = None;
                Attempt::Internal(InternalError::Unavailable)
            }
        }
    }

    async fn open(&self) -> std::io::Result<tokio::fs::File> {
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
    }
}
