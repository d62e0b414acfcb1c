//! A backend wrapper that records every request by kind and key (`list <prefix>`, `get <key>`,
//! ...), for tests that assert which objects an operation touched.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use layercas::backend::{
    Backend, BackendError, DynBackend, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode,
};

/// A backend that records every key read and every prefix listed.
#[derive(Debug)]
pub struct Recording {
    inner: DynBackend,
    seen: Mutex<Vec<String>>,
}

impl Recording {
    pub fn new(inner: DynBackend) -> Arc<Recording> {
        Arc::new(Recording {
            inner,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn note(&self, what: &str, key: &str) {
        self.seen.lock().unwrap().push(format!("{what} {key}"));
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[async_trait]
impl Backend for Recording {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        self.note("list", prefix.as_str());
        self.inner.list(prefix)
    }
    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        self.note("put", key.as_str());
        self.inner.put(key, payload, mode).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        self.note("get", key.as_str());
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.note("range", key.as_str());
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.note("head", key.as_str());
        self.inner.head(key).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.note("delete", key.as_str());
        self.inner.delete(key).await
    }
}
