//! Concurrency-limit wrapper: at most N reads and M writes in flight at once, each kind with its
//! own `tokio` semaphore so that a burst of uploads cannot starve downloads or the reverse.
//!
//! Owns the two limits. Must not retry, time out or count.
//!
//! # Rules
//! - Reads are `list`, `get`, `get_range` and `head`; writes are `put` and `delete`.
//! - A `get` holds its permit until its body is read to the end or dropped (the connection is
//!   busy until then). A caller that keeps more bodies open than the read limit waits forever:
//!   read or drop bodies before starting more gets.
//! - A `list` holds a permit only while it waits for its next item (a page request, in
//!   practice), so a caller may read objects while it walks a listing.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::wrap::{Op, each_step, hold_until_done};
use crate::backend::{Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode};

/// A backend with bounded concurrency.
#[derive(Debug)]
pub struct LimitBackend {
    inner: Arc<dyn Backend>,
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl LimitBackend {
    /// At most `reads` concurrent reads and `writes` concurrent writes (each at least 1).
    pub fn new(inner: Arc<dyn Backend>, reads: usize, writes: usize) -> LimitBackend {
        LimitBackend {
            inner,
            reads: Arc::new(Semaphore::new(reads.max(1))),
            writes: Arc::new(Semaphore::new(writes.max(1))),
        }
    }

    async fn permit(&self, op: Op) -> OwnedSemaphorePermit {
        let sem = if op.is_read() {
            &self.reads
        } else {
            &self.writes
        };
        sem.clone()
            .acquire_owned()
            .await
            .expect("limit semaphores are never closed")
    }
}

#[async_trait]
impl Backend for LimitBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let reads = self.reads.clone();
        each_step(self.inner.list(prefix), move |mut s| {
            let reads = reads.clone();
            async move {
                let _permit = reads.acquire_owned().await.expect("never closed");
                let item = s.next().await?;
                Some((item, s))
            }
        })
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        let _permit = self.permit(Op::Put).await;
        self.inner.put(key, payload, mode).await
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let permit = self.permit(Op::Get).await;
        let got = self.inner.get(key).await?;
        Ok(GetResult {
            meta: got.meta,
            body: hold_until_done(got.body, permit),
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        let _permit = self.permit(Op::GetRange).await;
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        let _permit = self.permit(Op::Head).await;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let _permit = self.permit(Op::Delete).await;
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        let _permit = self.permit(Op::Delete).await;
        self.inner.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendExt;

    /// A get's permit is held while its body is open and released when it is dropped.
    #[tokio::test]
    async fn get_holds_permit_until_body_dropped() {
        let dir = std::env::temp_dir().join(format!("layercas-limit-{}", std::process::id()));
        let local = crate::backend::local::LocalBackend::new(&dir).unwrap();
        let limited = LimitBackend::new(Arc::new(local), 1, 1);
        let key = Key::new("a").unwrap();
        limited
            .create_bytes(&key, Bytes::from_static(b"x"))
            .await
            .unwrap();
        let got = limited.get(&key).await.unwrap();
        assert_eq!(limited.reads.available_permits(), 0);
        drop(got);
        assert_eq!(limited.reads.available_permits(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
