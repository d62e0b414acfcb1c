//! An in-memory [`Backend`] for fast unit tests: a map from key to bytes behind a mutex.
//!
//! Owns nothing but that map. Keeps the whole backend contract (the conformance suite runs over
//! it), so a test that passes here exercises the same semantics as the local and S3 backends; must
//! not add behaviour of its own (faults, latency: those are layers).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use md5::Digest;

use crate::backend::{
    Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode, checked_range,
};

/// One stored object.
#[derive(Clone)]
struct Object {
    data: Bytes,
    last_modified: SystemTime,
    etag: String,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Object>,
}

/// Objects held in process memory; dropped with the backend.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryBackend({} objects)", self.len())
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// Objects stored.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory backend lock")
    }

    fn object(&self, key: &Key) -> Result<Object, BackendError> {
        self.lock()
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                key: key.to_string(),
            })
    }
}

fn meta(key: &Key, o: &Object) -> ObjectMeta {
    ObjectMeta {
        key: key.clone(),
        size: o.data.len() as u64,
        last_modified: o.last_modified,
        etag: Some(o.etag.clone()),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let listed: Vec<_> = self
            .lock()
            .objects
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix.as_str()))
            .map(|(k, o)| Ok(meta(k, o)))
            .collect();
        stream::iter(listed).boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        // Read the whole payload first: a failing payload leaves nothing behind.
        let data = payload.to_bytes().await?;
        let mut state = self.lock();
        let current = state.objects.get(key).map(|o| o.etag.as_str());
        match (&mode, current) {
            (PutMode::Create, Some(_)) => {
                return Err(BackendError::AlreadyExists {
                    key: key.to_string(),
                });
            }
            (PutMode::Update(_), None) => {
                return Err(BackendError::NotFound {
                    key: key.to_string(),
                });
            }
            (PutMode::Update(want), Some(have)) if want != have => {
                return Err(BackendError::PreconditionFailed {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
        // As S3 does for an object written by one PUT: the quoted MD5 of its bytes.
        let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&data)));
        let object = Object {
            data,
            last_modified: SystemTime::now(),
            etag,
        };
        state.objects.insert(key.clone(), object);
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let o = self.object(key)?;
        let body = stream::iter(
            [o.data.clone()]
                .into_iter()
                .filter(|b| !b.is_empty())
                .map(Ok),
        );
        Ok(GetResult {
            meta: meta(key, &o),
            body: body.boxed(),
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        let data = self.object(key)?.data;
        let range = checked_range(key, range, data.len() as u64)?;
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.object(key).map(|o| meta(key, &o))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.lock().objects.remove(key);
        Ok(())
    }
}
