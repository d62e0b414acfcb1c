//! The `Backend` trait: a small async CRUD interface over a remote object store, plus the types it
//! speaks (keys, payloads, metadata, errors).
//!
//! Owns: key validation, the public error kinds callers branch on, and [`BackendExt`] convenience
//! methods built only from trait methods. Must not know about chunks, packs or manifests, and
//! holds no retry, metric or fault-injection logic: those are wrappers, each a `Backend` around a
//! `Backend`, in their own modules.
//!
//! # Contract every implementation keeps (checked by the conformance suite)
//! - `put` and `create` are atomic: a reader sees the old object, the new one, or nothing, never a
//!   part. An interrupted upload is invisible.
//! - `create` fails with [`BackendError::AlreadyExists`] when the key exists, also when many
//!   writers race (exactly one wins).
//! - `put` with [`PutMode::Update`] succeeds only if the object's current etag matches, else
//!   [`BackendError::PreconditionFailed`] (or `NotFound` when it is gone).
//! - `delete` of a missing key succeeds.
//! - `list` returns every object under a prefix exactly once, in no promised order.

pub mod layers;
pub mod local;
pub mod open;
#[cfg(feature = "s3")]
pub mod s3;
pub mod wrap;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

/// Boxed error source inside a [`BackendError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stream of body bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, BackendError>>;

/// Longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated object key: `/`-separated components of S3 "safe" characters
/// (`A-Z a-z 0-9 ! - _ . * ' ( )`); no empty component, no component that starts with `.` (so no
/// `.` or `..`, and dot-names stay free for a backend's own bookkeeping); no leading `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Key, BackendError> {
        let key = key.into();
        match key_problem(&key) {
            None => Ok(Key(key)),
            Some(reason) => Err(BackendError::InvalidKey { key, reason }),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// Characters allowed in a key component besides ASCII letters and digits.
pub const KEY_PUNCTUATION: &str = "!-_.*'()";

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Some("key is longer than 1024 bytes");
    }
    for comp in key.split('/') {
        if comp.is_empty() {
            return Some("key has an empty component (leading, trailing or doubled '/')");
        }
        if comp.starts_with('.') {
            return Some("key component starts with '.'");
        }
        if !comp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || KEY_PUNCTUATION.contains(c))
        {
            return Some("key has a character outside A-Z a-z 0-9 and !-_.*'()");
        }
    }
    None
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A listing prefix: empty, or a key-like string (its last component may be partial, e.g.
/// `manifests/ab`). Validated like a key, except that it may end with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The empty prefix: everything.
    pub fn all() -> Prefix {
        Prefix(String::new())
    }

    /// Validates `prefix`.
    pub fn new(prefix: impl Into<String>) -> Result<Prefix, BackendError> {
        let prefix = prefix.into();
        let body = prefix.strip_suffix('/').unwrap_or(&prefix);
        if prefix.is_empty() {
            return Ok(Prefix(prefix));
        }
        match key_problem(body) {
            None => Ok(Prefix(prefix)),
            Some(reason) => Err(BackendError::InvalidKey {
                key: prefix,
                reason,
            }),
        }
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a backend knows about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
    pub last_modified: SystemTime,
    /// Opaque version tag for [`PutMode::Update`]; changes on every write of the key. `None` where
    /// the backend's listing does not report it (then `head` does).
    pub etag: Option<String>,
}

/// How `put` treats an existing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with `AlreadyExists` if the key exists.
    Create,
    /// Replace only if the current etag equals this one, else `PreconditionFailed`.
    Update(String),
}

/// An upload body: a known length and a source that can be streamed any number of times (so that
/// a retry wrapper can replay it). Never requires the whole object in memory: a file source is
/// read piecewise.
#[derive(Clone)]
pub struct Payload {
    len: u64,
    source: PayloadSource,
}

#[derive(Clone)]
enum PayloadSource {
    Memory(Arc<[Bytes]>),
    File { path: Arc<PathBuf>, offset: u64 },
}

/// Read size when streaming a file payload.
const FILE_READ_SIZE: usize = 1 << 20;

impl Payload {
    /// A payload held in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Payload {
        let bytes = bytes.into();
        Payload {
            len: bytes.len() as u64,
            source: PayloadSource::Memory(Arc::new([bytes])),
        }
    }

    /// A payload made of several in-memory parts, sent in order without concatenating them.
    pub fn from_parts(parts: Vec<Bytes>) -> Payload {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        Payload {
            len,
            source: PayloadSource::Memory(parts.into()),
        }
    }

    /// `len` bytes of the file at `path` starting at `offset`, read when streamed. The file must
    /// not change while the payload is in use; a short file is reported as an error.
    pub fn from_file(path: impl Into<PathBuf>, offset: u64, len: u64) -> Payload {
        Payload {
            len,
            source: PayloadSource::File {
                path: Arc::new(path.into()),
                offset,
            },
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-range of the payload, for multipart uploads. `range` must lie within the payload.
    pub fn slice(&self, range: Range<u64>) -> Payload {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "payload slice out of range"
        );
        let len = range.end - range.start;
        let source = match &self.source {
            PayloadSource::File { path, offset } => PayloadSource::File {
                path: path.clone(),
                offset: offset + range.start,
            },
            PayloadSource::Memory(parts) => {
                let mut out = Vec::new();
                let mut pos = 0u64;
                for p in parts.iter() {
                    let (s, e) = (pos, pos + p.len() as u64);
                    pos = e;
                    let (lo, hi) = (range.start.max(s), range.end.min(e));
                    if lo < hi {
                        out.push(p.slice((lo - s) as usize..(hi - s) as usize));
                    }
                }
                PayloadSource::Memory(out.into())
            }
        };
        Payload { len, source }
    }

    /// Streams the payload from its start.
    pub fn stream(&self) -> ByteStream {
        match &self.source {
            PayloadSource::Memory(parts) => {
                let parts: Vec<Bytes> = parts.iter().filter(|p| !p.is_empty()).cloned().collect();
                futures::stream::iter(parts.into_iter().map(Ok)).boxed()
            }
            PayloadSource::File { path, offset } => file_stream(path.clone(), *offset, self.len),
        }
    }

    /// Collects the payload into one buffer. For backends whose client needs contiguous bytes for
    /// small objects; callers bound the size.
    pub async fn to_bytes(&self) -> Result<Bytes, BackendError> {
        if let PayloadSource::Memory(parts) = &self.source {
            if parts.len() == 1 {
                return Ok(parts[0].clone());
            }
        }
        collect_stream(self.stream(), self.len).await
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            PayloadSource::Memory(_) => write!(f, "Payload(memory, {} bytes)", self.len),
            PayloadSource::File { path, offset } => {
                write!(
                    f,
                    "Payload({}@{offset}, {} bytes)",
                    path.display(),
                    self.len
                )
            }
        }
    }
}

fn file_stream(path: Arc<PathBuf>, offset: u64, len: u64) -> ByteStream {
    use tokio::io::AsyncSeekExt;
    let opened = async move {
        let label = path.display().to_string();
        let io_err = |e| BackendError::other("read payload file", &label, e);
        let mut f = tokio::fs::File::open(&*path).await.map_err(io_err)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io_err)?;
        Ok::<_, BackendError>(read_stream(f, len, label))
    };
    futures::stream::once(opened).try_flatten().boxed()
}

/// Streams exactly `len` bytes from `file`'s current position; a short file is an error naming
/// `label`.
pub(crate) fn read_stream(file: tokio::fs::File, len: u64, label: String) -> ByteStream {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold((file, 0u64), move |(mut file, done)| {
        let label = label.clone();
        async move {
            if done >= len {
                return Ok(None);
            }
            let want = (len - done).min(FILE_READ_SIZE as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let mut got = 0;
            while got < want {
                let n = file.read(&mut buf[got..]).await;
                match n {
                    Ok(0) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file is shorter than expected",
                        );
                        return Err(BackendError::other("read", &label, e));
                    }
                    Ok(n) => got += n,
                    Err(e) => return Err(BackendError::other("read", &label, e)),
                }
            }
            Ok(Some((buf.freeze(), (file, done + want as u64))))
        }
    })
    .boxed()
}

/// Collects a body stream, failing if it exceeds `max_len` bytes (checked before buffering).
pub async fn collect_stream(mut stream: ByteStream, max_len: u64) -> Result<Bytes, BackendError> {
    let mut buf = BytesMut::new();
    while let Some(piece) = stream.try_next().await? {
        if buf.len() as u64 + piece.len() as u64 > max_len {
            return Err(BackendError::TooLarge { limit: max_len });
        }
        if buf.is_empty() {
            buf = BytesMut::from(&piece[..]);
        } else {
            buf.extend_from_slice(&piece);
        }
    }
    Ok(buf.freeze())
}

/// The answer to `get`: the object's metadata and a stream of its bytes.
pub struct GetResult {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

/// The errors callers branch on. Each backend keeps its own detailed errors and converts to these;
/// the detail stays reachable through `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("precondition failed for {key}: it changed since it was read")]
    PreconditionFailed { key: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range {start}..{end} of {key} is not within the object's {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("object is larger than the {limit} bytes allowed here")]
    TooLarge { limit: u64 },
    #[error("{what} is not supported by this backend")]
    NotImplemented { what: &'static str },
    /// A failure that may pass: timeout, connection error, 5xx, throttling, injected fault.
    #[error("{op} {key}: transient failure: {source}")]
    Transient {
        op: &'static str,
        key: String,
        source: BoxError,
    },
    /// Anything else; not worth retrying.
    #[error("{op} {key}: {source}")]
    Other {
        op: &'static str,
        key: String,
        source: BoxError,
    },
}

impl BackendError {
    /// A non-retryable failure of `op` on `key`.
    pub fn other(op: &'static str, key: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        BackendError::Other {
            op,
            key: key.to_string(),
            source: source.into(),
        }
    }

    /// A retryable failure of `op` on `key`.
    pub fn transient(
        op: &'static str,
        key: impl fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        BackendError::Transient {
            op,
            key: key.to_string(),
            source: source.into(),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// Whether this is `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// The object-store interface. Object-safe: use it as `&dyn Backend` or `Arc<dyn Backend>`.
/// Every method is required, so that a wrapper cannot silently skip one.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Every object whose key starts with `prefix` (a plain string prefix, not a directory).
    /// Pagination, where the store has it, is hidden inside the stream.
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>>;

    /// Stores `payload` under `key` as `mode` says. Atomic.
    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError>;

    /// The whole object as a stream.
    async fn get(&self, key: &Key) -> Result<GetResult, BackendError>;

    /// Bytes `range` of the object. A range ending past the object's end is cut at the end; a
    /// range starting past the end is `InvalidRange`.
    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError>;

    /// Metadata of one object.
    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError>;

    /// Removes the object; succeeds if it does not exist.
    async fn delete(&self, key: &Key) -> Result<(), BackendError>;
}

/// Conveniences built only from [`Backend`] methods (so wrappers never need to forward them).
#[async_trait]
pub trait BackendExt: Backend {
    /// The whole object in memory, refusing objects larger than `max_len`.
    async fn get_bytes(&self, key: &Key, max_len: u64) -> Result<Bytes, BackendError> {
        let got = self.get(key).await?;
        if got.meta.size > max_len {
            return Err(BackendError::TooLarge { limit: max_len });
        }
        collect_stream(got.body, max_len).await
    }

    /// Creates `key` with `bytes` unless it exists.
    async fn create_bytes(&self, key: &Key, bytes: Bytes) -> Result<(), BackendError> {
        self.put(key, Payload::from_bytes(bytes), PutMode::Create)
            .await
    }

    /// Every object under `prefix`, collected.
    async fn list_all(&self, prefix: &Prefix) -> Result<Vec<ObjectMeta>, BackendError> {
        self.list(prefix).try_collect().await
    }
}

impl<T: Backend + ?Sized> BackendExt for T {}

/// A shared, dynamically dispatched backend.
pub type DynBackend = Arc<dyn Backend>;

/// Pins for the object-safety promise: this must compile.
#[allow(dead_code)]
fn _object_safe(_: &dyn Backend, _: Pin<Box<dyn Backend>>) {}
