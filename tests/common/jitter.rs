//! `Jitter`, the backend wrapper of `tests/gc.rs`'s interleaving simulation: seeded virtual-time
//! delays on every call, and now and then a long pause of a writer's index-object creation.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use layercas::backend::{
    Backend, BackendError, DynBackend, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode,
};

/// Delays every call by a seeded number of virtual milliseconds, and now and then pauses a
/// writer's index-object creation for longer than the gc window.
#[derive(Debug)]
pub struct Jitter {
    inner: DynBackend,
    rng: std::sync::Mutex<u64>,
    max_ms: u64,
    long_pause: Option<Duration>,
}

impl Jitter {
    pub fn wrap(
        inner: &DynBackend,
        seed: u64,
        max_ms: u64,
        long_pause: Option<Duration>,
    ) -> DynBackend {
        Arc::new(Jitter {
            inner: inner.clone(),
            rng: std::sync::Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            max_ms,
            long_pause,
        })
    }

    fn next(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    async fn delay(&self, key: &str) {
        let r = self.next();
        let mut ms = r % (self.max_ms + 1);
        if key.starts_with("index/") && r % 5 == 0 {
            ms += self.long_pause.map_or(0, |d| d.as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[async_trait]
impl Backend for Jitter {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }
    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        self.delay(key.as_str()).await;
        self.inner.put(key, payload, mode).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        self.delay("").await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.delay("").await;
        self.inner.delete(key).await
    }
}
