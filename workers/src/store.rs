//! Reading inputs from and writing artifacts to the pool's object store: a local directory of
//! buckets, or an S3-compatible endpoint (AWS S3, Alibaba Cloud OSS through its S3 API, MinIO),
//! through the `object_store` crate.
//!
//! Worker threads are synchronous, and `object_store` is async: each store owns a small
//! Tokio runtime on its own thread (`tf-media-io`, one worker) and the worker threads block
//! on it for each call. The runtime is dropped on that thread, so a pool can be created and
//! dropped from inside the router's runtime.
//!
//! Local inputs are read in place (no copy). Remote inputs are streamed into a temporary file,
//! counting bytes against `maxInputBytes` as they arrive (the object's declared size is
//! checked first), and the file is removed when the job ends. Every call is bounded by the
//! job's deadline. Keys are checked before any path is built (see [`check_key`]): a key that
//! escapes its bucket never reaches the filesystem or the network.
//!
//! HTTP for S3 is `hyper` with `rustls` (ring), the router's own stack, plugged into
//! `object_store` as its connector.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use triggerfish_core::config::{ObjectStoreSpec, S3StoreSpec};
use triggerfish_core::sources::encode_key;

use crate::limits::{Deadline, Limit, Stop};

/// Where an input is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An object: a bucket and a key (already URL-decoded and checked).
    Object {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A local file (`file://` URI); only a local store serves these, inside its root.
    File(PathBuf),
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// The object is larger than `maxInputBytes`.
    #[error("the object is {size} bytes, over maxInputBytes {max}")]
    TooLarge {
        /// Its size, or the bytes read when the store did not say.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// This store does not serve the location (another bucket, a file outside the root).
    #[error("{0}")]
    Refused(String),
    /// Reading failed.
    #[error("{0}")]
    Failed(String),
    /// The job's deadline passed, or the pool is stopping.
    #[error("stopped while fetching: {0:?}")]
    Stopped(Stop),
}

impl FetchError {
    /// The limit a [`FetchError::TooLarge`] is about.
    pub fn limit(&self) -> Option<Limit> {
        matches!(self, FetchError::TooLarge { .. }).then_some(Limit::MaxInputBytes)
    }
}

/// A store could not be built, or an artifact not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration cannot work (an S3 setting `object_store` refuses, a missing secret
    /// file).
    #[error("object store: {0}")]
    Config(String),
    /// Writing failed.
    #[error("could not write {uri}: {message}")]
    Write {
        /// Where.
        uri: String,
        /// Why.
        message: String,
    },
    /// The job's deadline passed, or the pool is stopping.
    #[error("stopped while writing: {0:?}")]
    Stopped(Stop),
}

/// An input available as a local file for the job's duration.
#[derive(Debug)]
pub struct LocalInput {
    path: PathBuf,
    /// The temporary copy, removed on drop.
    _temp: Option<tempfile::TempPath>,
    /// Size in bytes.
    pub size: u64,
}

impl LocalInput {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks an object key: not empty, not absolute, no `.` or `..` segment, no control
/// character (as the sources check theirs). Returns why it is refused.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("the key is empty");
    }
    if key.starts_with('/') {
        return Err("the key is absolute");
    }
    if key.chars().any(char::is_control) {
        return Err("the key contains a control character");
    }
    if key.split('/').any(|s| s == ".." || s == ".") {
        return Err("the key has a '.' or '..' segment");
    }
    if key.ends_with('/') {
        return Err("the key names a directory");
    }
    Ok(())
}

/// Checks a bucket name for use as a directory: one non-empty segment.
fn check_bucket(bucket: &str) -> Result<(), FetchError> {
    if bucket.is_empty()
        || bucket == "."
        || bucket == ".."
        || bucket.contains('/')
        || bucket.contains('\\')
        || bucket.contains('\0')
    {
        return Err(FetchError::Refused(format!(
            "invalid bucket name {bucket:?}"
        )));
    }
    Ok(())
}

/// A pool's object store.
pub struct Store {
    backend: Backend,
    io: IoRuntime,
}

enum Backend {
    Local {
        root: PathBuf,
        buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    },
    S3 {
        spec: S3StoreSpec,
        buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local { root, .. } => write!(f, "Store(local {})", root.display()),
            Backend::S3 { spec, .. } => write!(f, "Store(s3 {:?})", spec.endpoint),
        }
    }
}

impl Store {
    /// Builds the store described by `spec`. S3 credentials are read now, so that a missing
    /// secret fails at start, not on the first job.
    pub fn new(spec: &ObjectStoreSpec) -> Result<Store, StoreError> {
        let backend = match spec {
            ObjectStoreSpec::Local(local) => Backend::Local {
                root: local.root.clone(),
                buckets: Mutex::new(HashMap::new()),
            },
            ObjectStoreSpec::S3(s3) => {
                // Build one client to check the settings and the credentials.
                s3_client(s3, s3.bucket.as_deref().unwrap_or("check"))?;
                Backend::S3 {
                    spec: s3.clone(),
                    buckets: Mutex::new(HashMap::new()),
                }
            }
        };
        Ok(Store {
            backend,
            io: IoRuntime::start()?,
        })
    }

    /// The URI an object has in this store: `file:///root/bucket/key` (absolute, whatever the
    /// configured root) or `s3://bucket/key`, the key percent-encoded, so that a
    /// `dev.triggerfish.media.requested` event naming the URI names the same object.
    pub fn uri(&self, bucket: &str, key: &str) -> String {
        match &self.backend {
            Backend::Local { root, .. } => file_uri(&root.join(bucket).join(key)),
            Backend::S3 { .. } => format!("s3://{bucket}/{}", encode_key(key)),
        }
    }

    /// The bucket and key of `location`: an object's as they are (checked), a `file://`
    /// path's relative to a local store's root (its first directory is the bucket).
    pub fn resolve(&self, location: &Location) -> Result<(String, String), FetchError> {
        match (&self.backend, location) {
            (_, Location::Object { bucket, key }) => {
                check_bucket(bucket)?;
                check_key(key).map_err(|why| FetchError::Refused(format!("key {key:?}: {why}")))?;
                Ok((bucket.clone(), key.clone()))
            }
            (Backend::Local { root, .. }, Location::File(path)) => {
                let canonical_root = root.canonicalize().map_err(|e| {
                    FetchError::Failed(format!("object store root {}: {e}", root.display()))
                })?;
                let canonical = path.canonicalize().map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        FetchError::NotFound(path.display().to_string())
                    }
                    _ => FetchError::Failed(format!("{}: {e}", path.display())),
                })?;
                let outside = || {
                    FetchError::Refused(format!(
                        "{} is not inside a bucket directory of the object store root {}",
                        path.display(),
                        root.display()
                    ))
                };
                let relative = canonical
                    .strip_prefix(&canonical_root)
                    .map_err(|_| outside())?;
                let parts: Vec<&str> = relative
                    .components()
                    .map(|c| c.as_os_str().to_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        FetchError::Refused(format!("{} is not UTF-8", path.display()))
                    })?;
                match parts.split_first() {
                    Some((bucket, key)) if !key.is_empty() => {
                        Ok(((*bucket).to_owned(), key.join("/")))
                    }
                    _ => Err(outside()),
                }
            }
            (Backend::S3 { .. }, Location::File(path)) => Err(FetchError::Refused(format!(
                "file {} cannot be read from an S3 store",
                path.display()
            ))),
        }
    }

    /// Makes `location` available as a local file, within `max_bytes` and `deadline`.
    pub fn fetch(
        &self,
        location: &Location,
        max_bytes: u64,
        deadline: &Deadline,
    ) -> Result<LocalInput, FetchError> {
        deadline.check().map_err(FetchError::Stopped)?;
        match (&self.backend, location) {
            (Backend::Local { root, .. }, Location::Object { bucket, key }) => {
                check_bucket(bucket)?;
                check_key(key).map_err(|why| FetchError::Refused(format!("key {key:?}: {why}")))?;
                local_input(&root.join(bucket).join(key), max_bytes)
            }
            (Backend::Local { root, .. }, Location::File(path)) => {
                let canonical_root = root.canonicalize().map_err(|e| {
                    FetchError::Failed(format!("object store root {}: {e}", root.display()))
                })?;
                let canonical = path.canonicalize().map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        FetchError::NotFound(path.display().to_string())
                    }
                    _ => FetchError::Failed(format!("{}: {e}", path.display())),
                })?;
                if !canonical.starts_with(&canonical_root) {
                    return Err(FetchError::Refused(format!(
                        "{} is outside the object store root {}",
                        path.display(),
                        root.display()
                    )));
                }
                local_input(&canonical, max_bytes)
            }
            (Backend::S3 { .. }, Location::File(path)) => Err(FetchError::Refused(format!(
                "file {} cannot be read from an S3 store",
                path.display()
            ))),
            (Backend::S3 { spec, buckets }, Location::Object { bucket, key }) => {
                if let Some(only) = &spec.bucket
                    && only != bucket
                {
                    return Err(FetchError::Refused(format!(
                        "this pool reads bucket {only:?}, not {bucket:?}"
                    )));
                }
                check_key(key).map_err(|why| FetchError::Refused(format!("key {key:?}: {why}")))?;
                let client = cached(buckets, bucket, || s3_client(spec, bucket))
                    .map_err(|e| FetchError::Failed(e.to_string()))?;
                let key = key.clone();
                let fetch = async move { download(client, &key, max_bytes).await };
                self.io.run(deadline, fetch).map_err(FetchError::Stopped)?
            }
        }
    }

    /// Writes `bytes` as `bucket`/`key`; returns its URI. The content type is recorded where
    /// the store keeps one (S3).
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
        deadline: &Deadline,
    ) -> Result<String, StoreError> {
        let uri = self.uri(bucket, key);
        let write_error = |message: String| StoreError::Write {
            uri: uri.clone(),
            message,
        };
        check_key(key).map_err(|why| write_error(why.to_owned()))?;
        let client = match &self.backend {
            Backend::Local { root, buckets } => {
                check_bucket(bucket).map_err(|e| write_error(e.to_string()))?;
                cached(buckets, bucket, || {
                    let dir = root.join(bucket);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
                    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| StoreError::Config(e.to_string()))?;
                    Ok(Arc::new(fs) as Arc<dyn ObjectStore>)
                })?
            }
            Backend::S3 { spec, buckets } => cached(buckets, bucket, || s3_client(spec, bucket))?,
        };
        let path = object_path(key).map_err(write_error)?;
        let payload = PutPayload::from(Bytes::from(bytes));
        let mut options = object_store::PutOptions::default();
        if matches!(self.backend, Backend::S3 { .. }) {
            options.attributes = object_store::Attributes::from_iter([(
                object_store::Attribute::ContentType,
                object_store::AttributeValue::from(content_type.to_owned()),
            )]);
        }
        let result = self
            .io
            .run(deadline, async move {
                client.put_opts(&path, payload, options).await
            })
            .map_err(StoreError::Stopped)?;
        result.map_err(|e| write_error(e.to_string()))?;
        Ok(uri)
    }
}

fn cached(
    map: &Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    bucket: &str,
    build: impl FnOnce() -> Result<Arc<dyn ObjectStore>, StoreError>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    // Held for a map lookup, or once per bucket to build a client (no I/O).
    let mut map = map.lock();
    if let Some(store) = map.get(bucket) {
        return Ok(Arc::clone(store));
    }
    let store = build()?;
    // Bounded: a pool serves few buckets; forget them all rather than grow without end.
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(bucket.to_owned(), Arc::clone(&store));
    Ok(store)
}

fn local_input(path: &Path, max_bytes: u64) -> Result<LocalInput, FetchError> {
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FetchError::Refused(format!(
            "{} has a '..'",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FetchError::NotFound(path.display().to_string()),
        _ => FetchError::Failed(format!("{}: {e}", path.display())),
    })?;
    if !meta.is_file() {
        return Err(FetchError::NotFound(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(FetchError::TooLarge {
            size: meta.len(),
            max: max_bytes,
        });
    }
    Ok(LocalInput {
        path: path.to_path_buf(),
        _temp: None,
        size: meta.len(),
    })
}

/// The `file://` URI of `path`: absolute (a relative path is taken from the working
/// directory) and percent-encoded, as `url` writes it.
pub fn file_uri(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    url::Url::from_file_path(&path)
        .map_or_else(|()| format!("file://{}", path.display()), String::from)
}

/// `key` as an `object_store` path, byte for byte. (`ObjectPath::from` would percent-encode
/// `%`, `~`, `#` and other characters, and so name another object.) Keys that the checks of
/// [`check_key`] pass but `object_store` cannot name (an empty or `.` segment) are refused.
fn object_path(key: &str) -> Result<ObjectPath, String> {
    ObjectPath::parse(key).map_err(|e| format!("key {key:?}: {e}"))
}

async fn download(
    client: Arc<dyn ObjectStore>,
    key: &str,
    max_bytes: u64,
) -> Result<LocalInput, FetchError> {
    let path = object_path(key).map_err(FetchError::Refused)?;
    let result = client.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => FetchError::NotFound(key.to_owned()),
        e => FetchError::Failed(e.to_string()),
    })?;
    if result.meta.size > max_bytes {
        return Err(FetchError::TooLarge {
            size: result.meta.size,
            max: max_bytes,
        });
    }
    let named = tempfile::Builder::new()
        .prefix("tf-media-")
        .tempfile()
        .map_err(|e| FetchError::Failed(format!("temporary file: {e}")))?;
    let (mut file, temp) = named.into_parts();
    let mut stream = result.into_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Failed(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(FetchError::TooLarge {
                size,
                max: max_bytes,
            });
        }
        // A blocking write on a runtime thread: the I/O runtime exists only for these calls,
        // and local disk writes are short.
        file.write_all(&chunk)
            .map_err(|e| FetchError::Failed(format!("temporary file: {e}")))?;
    }
    file.flush()
        .map_err(|e| FetchError::Failed(format!("temporary file: {e}")))?;
    Ok(LocalInput {
        path: temp.to_path_buf(),
        _temp: Some(temp),
        size,
    })
}

/// Builds an S3 client for `bucket`.
fn s3_client(spec: &S3StoreSpec, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    use object_store::aws::AmazonS3Builder;
    let secret = |env: &Option<String>,
                  file: &Option<PathBuf>,
                  what: &str|
     -> Result<Option<String>, StoreError> {
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| StoreError::Config(format!("{what} file {}: {e}", file.display())))?;
            return Ok(Some(text.trim().to_owned()));
        }
        if let Some(var) = env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(StoreError::Config(format!(
                    "{what}: environment variable {var} is not set"
                ))),
            };
        }
        Ok(None)
    };
    let c = &spec.credentials;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(
            spec.region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_owned()),
        )
        .with_virtual_hosted_style_request(spec.virtual_hosted_style)
        .with_allow_http(spec.allow_http)
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .with_http_connector(http::HyperConnector);
    if let Some(endpoint) = &spec.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(id) = secret(&c.access_key_id_env, &c.access_key_id_file, "access key id")? {
        builder = builder.with_access_key_id(id);
    }
    if let Some(key) = secret(
        &c.secret_access_key_env,
        &c.secret_access_key_file,
        "secret access key",
    )? {
        builder = builder.with_secret_access_key(key);
    }
    if let Some(token) = secret(&c.session_token_env, &c.session_token_file, "session token")? {
        builder = builder.with_token(token);
    }
    let s3 = builder
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))?;
    Ok(Arc::new(s3))
}

/// A Tokio runtime on its own thread, for the async object store calls of synchronous
/// worker threads.
struct IoRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoRuntime {
    fn start() -> Result<IoRuntime, StoreError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tf-media-io".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("tf-media-io-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropped here, on this thread, outside any async context.
            })
            .map_err(|e| StoreError::Config(format!("cannot start the I/O thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| StoreError::Config("the I/O thread exited".into()))?
            .map_err(StoreError::Config)?;
        Ok(IoRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Runs `future` to completion on the I/O runtime, from a synchronous thread, within
    /// `deadline`.
    fn run<T>(
        &self,
        deadline: &Deadline,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Stop>
    where
        T: Send + 'static,
    {
        deadline.check()?;
        let remaining = deadline.remaining();
        // The timer is created inside the task: it needs the runtime's context.
        let task = self
            .handle
            .spawn(async move { tokio::time::timeout(remaining, future).await });
        match self.handle.block_on(task) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_elapsed)) => Err(deadline.check().err().unwrap_or(Stop::Deadline)),
            // The task panicked or the runtime is shutting down.
            Err(_) => Err(Stop::Cancelled),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Joined only when not on the I/O thread itself; the runtime drops there.
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// `object_store`'s HTTP client for S3: hyper + rustls (ring), as the router uses.
mod http {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
    use hyper_util::rt::TokioExecutor;
    use object_store::ClientOptions;
    use object_store::client::{
        HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
        HttpResponse, HttpResponseBody, HttpService,
    };

    /// Builds [`HyperService`]s.
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct HyperConnector;

    impl HttpConnector for HyperConnector {
        fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })?
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .build();
            let client = Client::builder(TokioExecutor::new()).build(https);
            Ok(HttpClient::new(HyperService(client)))
        }
    }

    #[derive(Debug)]
    struct HyperService(Client<hyper_rustls::HttpsConnector<TcpConnector>, HttpRequestBody>);

    #[async_trait::async_trait]
    impl HttpService for HyperService {
        async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
            let response = self.0.request(req).await.map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
            let (parts, body) = response.into_parts();
            let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
            Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use triggerfish_core::config::LocalStoreSpec;

    use super::*;

    #[test]
    fn keys_that_escape_the_bucket_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a\0b",
            "a\nb.mp4",
            "a\u{7f}b",
            "dir/",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "a.mp4",
            "a/b/c.mp4",
            "a b+c%20.mp4",
            "..a/b..",
            "中文/视频.mp4",
        ] {
            assert_eq!(check_key(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn local_store_reads_in_place_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/in")).unwrap();
        std::fs::write(dir.path().join("b/in/x.mp4"), b"12345").unwrap();
        let store = Store::new(&ObjectStoreSpec::Local(LocalStoreSpec {
            root: dir.path().to_path_buf(),
        }))
        .unwrap();
        let deadline = Deadline::after(Duration::from_secs(10), Arc::new(AtomicBool::new(false)));
        let obj = |key: &str| Location::Object {
            bucket: "b".into(),
            key: key.into(),
        };
        let input = store.fetch(&obj("in/x.mp4"), 100, &deadline).unwrap();
        assert_eq!(input.path(), dir.path().join("b/in/x.mp4"));
        assert_eq!(input.size, 5);
        assert!(matches!(
            store.fetch(&obj("in/x.mp4"), 4, &deadline),
            Err(FetchError::TooLarge { size: 5, max: 4 })
        ));
        assert!(matches!(
            store.fetch(&obj("nope.mp4"), 100, &deadline),
            Err(FetchError::NotFound(_))
        ));
        assert!(matches!(
            store.fetch(&obj("../b/in/x.mp4"), 100, &deadline),
            Err(FetchError::Refused(_))
        ));
        let other_bucket = Location::Object {
            bucket: "..".into(),
            key: "x".into(),
        };
        assert!(matches!(
            store.fetch(&other_bucket, 100, &deadline),
            Err(FetchError::Refused(_))
        ));
        // file:// inside the root is served, outside is refused.
        let inside = Location::File(dir.path().join("b/in/x.mp4"));
        assert!(store.fetch(&inside, 100, &deadline).is_ok());
        let outside = tempfile::NamedTempFile::new().unwrap();
        let outside = Location::File(outside.path().to_path_buf());
        assert!(matches!(
            store.fetch(&outside, 100, &deadline),
            Err(FetchError::Refused(_))
        ));

        let uri = store
            .put(
                "b",
                "out/in/x.mp4/probe.json",
                "application/json",
                b"{}".to_vec(),
                &deadline,
            )
            .unwrap();
        assert_eq!(
            uri,
            format!(
                "file://{}",
                dir.path().join("b/out/in/x.mp4/probe.json").display()
            )
        );
        assert_eq!(
            std::fs::read(dir.path().join("b/out/in/x.mp4/probe.json")).unwrap(),
            b"{}"
        );
        assert!(store.put("b", "../escape", "x", vec![], &deadline).is_err());
        assert_eq!(
            store.resolve(&inside).unwrap(),
            ("b".to_owned(), "in/x.mp4".to_owned())
        );
        let top = dir.path().join("top.mp4");
        std::fs::write(&top, b"x").unwrap();
        assert!(matches!(
            store.resolve(&Location::File(top)),
            Err(FetchError::Refused(_))
        ));
    }

    #[test]
    fn the_store_can_be_dropped_inside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::new(&ObjectStoreSpec::Local(LocalStoreSpec {
                root: dir.path().to_path_buf(),
            }))
            .unwrap();
            drop(store);
        });
    }
}
