//! `BucketWatch`: a local directory treated as a bucket.
//!
//! A file counts as written, and becomes one OSS-shaped `oss:ObjectCreated:PutObject` event
//! (region `local`, key relative to the directory with `/` separators, percent-encoded as OSS
//! encodes keys), when:
//! - it is closed after being written (inotify `CLOSE_WRITE`), or
//! - it is moved into the directory (`MOVED_TO`: the usual "write a temp file, then rename"),
//!   or
//! - its size has not changed for `stableFor` since the last change seen (for writers and file
//!   systems that give no close event).
//!
//! A directory created or moved in is searched once for files already in it (they raised no
//! event before its watch existed); they are published once their size is stable.
//!
//! Temporary files are ignored: any path component starting with `.`, and names ending in
//! `.tmp` or `.part`. The same version of a file (size and modification time) is published
//! once, even when several of the rules above fire for it. Files present before the source
//! starts are not published.
//!
//! The `notify` watcher runs on its own thread and hands events over a bounded channel (it
//! waits when the channel is full; the kernel's inotify queue absorbs bursts). Publishing
//! waits for room in the sink's queue; a file that could not be published is tried again after
//! `stableFor`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::BucketWatchSpec;
use triggerfish_core::sources::oss::{LocalObject, local_notification, parse_notification};

use crate::sources::{BuildErrors, Context, Publisher};

/// Events waiting between the notify thread and the watch task.
const CHANNEL: usize = 1024;
/// Versions remembered to avoid publishing a file twice; cleared past this.
const MAX_REMEMBERED: usize = 100_000;
/// Entries looked at in a directory that appeared (a `mv` of a whole tree, say).
const MAX_WALK: usize = 10_000;
/// How long one publish may wait for room.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);
/// The account in subjects and ARNs.
const ACCOUNT: &str = "local";

/// A `BucketWatch`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// The directory.
    pub directory: PathBuf,
    /// The bucket name in events.
    pub bucket: String,
    /// The size-stability interval.
    pub stable_for: Duration,
    /// Whether subdirectories are watched.
    pub recursive: bool,
}

impl WatchConfig {
    pub(crate) fn build(
        spec: &BucketWatchSpec,
        name: &str,
        check: &mut BuildErrors<'_>,
    ) -> Option<Self> {
        let bucket = spec.bucket.clone().unwrap_or_else(|| name.to_owned());
        if bucket.is_empty() || bucket.contains(['/', ':']) {
            check.at("bucket", "a bucket name has no / or :");
        }
        if spec.directory.as_os_str().is_empty() {
            check.at("directory", "the directory must not be empty");
        }
        let stable_for = spec.stable_for.map_or(Duration::from_secs(2), |d| d.get());
        if stable_for < Duration::from_millis(100) {
            check.at("stableFor", "at least PT0.1S");
        }
        Some(WatchConfig {
            directory: spec.directory.clone(),
            bucket,
            stable_for,
            recursive: spec.recursive.unwrap_or(true),
        })
    }
}

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// It cannot be created or read.
    #[error("{path}: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The watcher failed to start.
    #[error("watching failed: {0}")]
    Notify(#[from] notify::Error),
}

/// Starts watching; the task stops when `stop` is cancelled.
pub fn spawn(
    key: Arc<str>,
    config: WatchConfig,
    publisher: Arc<Publisher>,
    context: Context,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    let directory_error = |error| WatchError::Directory {
        path: config.directory.clone(),
        error,
    };
    std::fs::create_dir_all(&config.directory).map_err(directory_error)?;
    let root = config.directory.canonicalize().map_err(directory_error)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // The notify thread waits when the watch task is behind.
        let _ = tx.blocking_send(event);
    })?;
    let mode = if config.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(&root, mode)?;
    tracing::info!(source = %key, directory = %root.display(), "watching the directory");
    let state = State {
        key,
        root,
        config,
        publisher,
        context,
        pending: HashMap::new(),
        published: HashMap::new(),
    };
    tokio::spawn(state.run(rx, watcher, stop));
    Ok(())
}

struct State {
    key: Arc<str>,
    root: PathBuf,
    config: WatchConfig,
    publisher: Arc<Publisher>,
    context: Context,
    /// Files changing: size at the last change, and when it was seen.
    pending: HashMap<PathBuf, (u64, Instant)>,
    /// The version (size, modification time) last published per file.
    published: HashMap<PathBuf, (u64, SystemTime)>,
}

impl State {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<notify::Result<notify::Event>>,
        watcher: notify::RecommendedWatcher,
        stop: CancellationToken,
    ) {
        // Dropping the watcher stops its thread; it lives as long as this task.
        let _watcher = watcher;
        let tick = (self.config.stable_for / 2).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(Ok(event)) => self.on_event(event).await,
                    Some(Err(e)) => tracing::warn!(source = %self.key, error = %e, "watch error"),
                    None => return,
                },
                _ = ticker.tick() => self.on_tick().await,
                () = stop.cancelled() => return,
            }
        }
    }

    async fn on_event(&mut self, event: notify::Event) {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in event.paths {
                    self.pending.remove(&path);
                    self.written(path).await;
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for path in event.paths {
                    self.written(path).await;
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                // [from, to]: `To` was reported on its own too.
                if let Some(from) = event.paths.first() {
                    self.forget(from);
                }
            }
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                for path in event.paths {
                    if let Ok(meta) = std::fs::metadata(&path)
                        && meta.is_file()
                    {
                        self.pending.insert(path, (meta.len(), Instant::now()));
                    }
                }
            }
            EventKind::Create(CreateKind::Folder) => {
                // Files written into a new directory before its watch was added raised no
                // event: look for them.
                for path in event.paths {
                    let mut found = Vec::new();
                    walk(&path, &mut found, MAX_WALK);
                    let now = Instant::now();
                    for (file, size) in found {
                        self.pending.entry(file).or_insert((size, now));
                    }
                }
            }
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                for path in &event.paths {
                    self.forget(path);
                }
            }
            _ => {}
        }
    }

    fn forget(&mut self, path: &Path) {
        self.pending.remove(path);
        self.published.remove(path);
    }

    /// Publishes files whose size has been stable for `stableFor`.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) >= self.config.stable_for)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    let (size, _) = self.pending[&path];
                    if meta.len() == size {
                        self.pending.remove(&path);
                        self.written(path).await;
                    } else {
                        self.pending.insert(path, (meta.len(), now));
                    }
                }
                _ => {
                    self.pending.remove(&path);
                }
            }
        }
    }

    /// Publishes `path` if it is a regular, non-temporary file whose current version was not
    /// published yet.
    async fn written(&mut self, path: PathBuf) {
        let Some(key) = object_key(&self.root, &path) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let version = (meta.len(), modified);
        if self.published.get(&path) == Some(&version) {
            return;
        }
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let etag = format!("{:x}-{nanos:x}", meta.len());
        let time = chrono::DateTime::<chrono::Utc>::from(modified)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = local_notification(&[LocalObject {
            bucket: &self.config.bucket,
            key: &key,
            size: meta.len(),
            etag: &etag,
            event_time: &time,
            account: ACCOUNT,
        }]);
        let events = match parse_notification(&body) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(source = %self.key, key = %key, error = %e, "file not published");
                return;
            }
        };
        let published = self
            .publisher
            .publish(&events, self.context.limits, PUBLISH_WAIT)
            .await;
        let outcome = if published.is_ok() {
            "published"
        } else {
            "failed"
        };
        self.context
            .metrics
            .record(&self.key, outcome, published.as_ref().map_or(0, |n| *n));
        match published {
            Ok(_) => {
                tracing::info!(source = %self.key, key = %key, size = meta.len(), "file published");
                if self.published.len() >= MAX_REMEMBERED {
                    self.published.clear();
                }
                self.published.insert(path, version);
            }
            Err(e) => {
                tracing::warn!(source = %self.key, key = %key, error = %e, "publishing failed; trying again later");
                self.pending.insert(path, (meta.len(), Instant::now()));
            }
        }
    }
}

/// Files under `dir` with their sizes, at most `limit` entries looked at.
fn walk(dir: &Path, found: &mut Vec<(PathBuf, u64)>, limit: usize) {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limit {
                return;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) if meta.is_file() => found.push((entry.path(), meta.len())),
                _ => {}
            }
        }
    }
}

/// The object key of `path` under `root`: relative, `/`-separated, UTF-8, without temporary
/// components; `None` for files to ignore.
pub fn object_key(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return None;
        };
        let part = part.to_str()?;
        if part.starts_with('.') {
            return None;
        }
        parts.push(part);
    }
    let name = parts.last()?;
    if name.ends_with(".tmp") || name.ends_with(".part") {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_and_temporary_files_ignored() {
        let root = Path::new("/data/media");
        assert_eq!(
            object_key(root, Path::new("/data/media/talks/a.mp4")).as_deref(),
            Some("talks/a.mp4")
        );
        assert_eq!(object_key(root, Path::new("/data/media/.a.mp4")), None);
        assert_eq!(
            object_key(root, Path::new("/data/media/.cache/a.mp4")),
            None
        );
        assert_eq!(object_key(root, Path::new("/data/media/a.mp4.part")), None);
        assert_eq!(object_key(root, Path::new("/data/media/a.tmp")), None);
        assert_eq!(object_key(root, Path::new("/elsewhere/a.mp4")), None);
        assert_eq!(object_key(root, root), None);
    }
}
