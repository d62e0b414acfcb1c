//! The `Backend` trait: a small async CRUD interface over a remote object store, plus the types it
//! speaks (keys, payloads, metadata, errors).
//!
//! Owns: the trait, object metadata, put modes and [`BackendExt`] convenience methods built only
//! from trait methods. The types live in submodules and are re-exported here: `key` (key and
//! prefix validation), `payload` (upload payloads, body streams), `error` (the error kinds callers
//! branch on). Must not know about chunks, packs or manifests, and holds no retry, metric or
//! fault-injection logic: those are wrappers, each a `Backend` around a `Backend`, in their own
//! modules. The one backoff policy lives in `backoff`.
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

pub(crate) mod backoff;
pub mod layers;
pub mod local;
pub mod open;
#[cfg(feature = "s3")]
pub mod s3;
pub mod wrap;

mod error;
mod key;
mod payload;

pub use error::{BackendError, BoxError};
pub use key::{KEY_PUNCTUATION, Key, MAX_KEY_LEN, Prefix};
pub(crate) use payload::read_stream;
pub use payload::{ByteStream, Payload, collect_stream};

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, TryStreamExt};

/// What a backend knows about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: Key,
    /// Size in bytes; range reads are checked against it.
    pub size: u64,
    /// When the store last wrote it, as the store reports it.
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

/// The answer to `get`: the object's metadata and a stream of its bytes.
pub struct GetResult {
    /// Size and key of the object whose body follows.
    pub meta: ObjectMeta,
    /// The body, streamed so that large packs are never buffered whole.
    pub body: ByteStream,
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

    /// Deletes every key of `keys` (at most [`MAX_DELETE_BATCH`]); a missing key is not an
    /// error. Backends that can do it in one request (S3's DeleteObjects) override this; the
    /// default deletes one key at a time. Wrappers forward it as one operation.
    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }
}

/// Most keys one [`Backend::delete_many`] call takes (S3's DeleteObjects limit).
pub const MAX_DELETE_BATCH: usize = 1000;

/// Deletes `keys` in batches of [`MAX_DELETE_BATCH`], calling `done` after each batch with the
/// keys it deleted.
pub async fn delete_batched(
    backend: &dyn Backend,
    keys: &[Key],
    mut done: impl FnMut(&[Key]),
) -> Result<(), BackendError> {
    for batch in keys.chunks(MAX_DELETE_BATCH) {
        backend.delete_many(batch).await?;
        done(batch);
    }
    Ok(())
}

/// The part of an object of `size` bytes that `get_range(range)` returns, as the trait promises:
/// cut at the end; `InvalidRange` when the range is reversed or starts past the end (or at the
/// end, asking for bytes).
pub fn checked_range(key: &Key, range: Range<u64>, size: u64) -> Result<Range<u64>, BackendError> {
    if range.start > range.end
        || range.start > size
        || (range.start == size && range.end > range.start)
    {
        return Err(BackendError::InvalidRange {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(range.start..range.end.min(size))
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
