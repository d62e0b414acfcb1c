//! Timeout wrapper: bounds how long each call may take, with one limit for small objects and a
//! longer one for large ones; a call that runs out of time fails as `Transient`, so the retry
//! wrapper around it may try again.
//!
//! Owns the time limits. Must not retry, and must not judge errors other than its own timeouts.
//!
//! # Rules
//! - `put` is judged by the payload's size, `get_range` by the range's size, `get` by the size
//!   the response announces: up to [`TimeoutConfig::large_from`] bytes the small limit applies,
//!   else the large one. `head`, `delete` and each listing step (one page, in practice) get the
//!   small limit.
//! - For `get`, the small limit covers the wait for the response; the body then has until the
//!   limit for its size, counted from the call's start.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::backend::wrap::{Op, each_step};
use crate::backend::{Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode};

/// The limits.
#[derive(Clone, Debug)]
pub struct TimeoutConfig {
    /// For objects (or ranges) smaller than `large_from`, and for metadata calls.
    pub small: Duration,
    /// For objects (or ranges) of `large_from` bytes or more.
    pub large: Duration,
    /// Size in bytes from which a transfer counts as large and gets the `large` limit.
    pub large_from: u64,
}

impl Default for TimeoutConfig {
    /// 30 s below 8 MiB, 10 minutes above.
    fn default() -> Self {
        TimeoutConfig {
            small: Duration::from_secs(30),
            large: Duration::from_secs(600),
            large_from: 8 << 20,
        }
    }
}

impl TimeoutConfig {
    /// The limit for moving `size` bytes.
    pub fn for_size(&self, size: u64) -> Duration {
        if size >= self.large_from {
            self.large
        } else {
            self.small
        }
    }
}

/// A backend whose calls time out.
#[derive(Debug)]
pub struct TimeoutBackend {
    inner: Arc<dyn Backend>,
    config: TimeoutConfig,
}

impl TimeoutBackend {
    /// Wraps `inner`, bounding each call by the limits in `config`.
    pub fn new(inner: Arc<dyn Backend>, config: TimeoutConfig) -> TimeoutBackend {
        TimeoutBackend { inner, config }
    }
}

fn timed_out(op: Op, key: impl std::fmt::Display, limit: Duration) -> BackendError {
    BackendError::transient(
        op.name(),
        key,
        format!("timed out after {} ms", limit.as_millis()),
    )
}

/// Awaits `fut` until `deadline`.
async fn within<T>(
    op: Op,
    key: impl std::fmt::Display,
    limit: Duration,
    fut: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(op, key, limit)),
    }
}

#[async_trait]
impl Backend for TimeoutBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let (limit, prefix_name) = (self.config.small, prefix.as_str().to_string());
        each_step(self.inner.list(prefix), move |mut s| {
            let prefix_name = prefix_name.clone();
            async move {
                match tokio::time::timeout(limit, s.next()).await {
                    Ok(item) => Some((item?, s)),
                    Err(_) => Some((Err(timed_out(Op::List, prefix_name, limit)), s)),
                }
            }
        })
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        let limit = self.config.for_size(payload.len());
        within(Op::Put, key, limit, self.inner.put(key, payload, mode)).await
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let start = Instant::now();
        let got = within(Op::Get, key, self.config.small, self.inner.get(key)).await?;
        let limit = self.config.for_size(got.meta.size);
        let deadline = start + limit;
        let name = key.to_string();
        let body = each_step(got.body, move |mut s| {
            let name = name.clone();
            async move {
                match tokio::time::timeout_at(deadline, s.next()).await {
                    Ok(item) => Some((item?, s)),
                    Err(_) => Some((Err(timed_out(Op::Get, name, limit)), s)),
                }
            }
        });
        Ok(GetResult {
            meta: got.meta,
            body,
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        let limit = self.config.for_size(range.end.saturating_sub(range.start));
        within(Op::GetRange, key, limit, self.inner.get_range(key, range)).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        within(Op::Head, key, self.config.small, self.inner.head(key)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        within(Op::Delete, key, self.config.small, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        // A batch gets the small-request limit once per hundred keys.
        let limit = self.config.small * (1 + keys.len() as u32 / 100);
        within(Op::Delete, first, limit, self.inner.delete_many(keys)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that outlives its limit fails as `Transient`, so a retry wrapper may repeat it.
    /// The inner call never finishes, so the outcome does not depend on how fast the disk is.
    #[tokio::test(start_paused = true)]
    async fn expired_calls_are_transient() {
        let never = futures::future::pending::<Result<(), BackendError>>();
        let err = within(Op::Put, "k", Duration::from_secs(5), never)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("timed out"), "{err}");
        let quick = async { Ok::<_, BackendError>(7) };
        assert_eq!(
            within(Op::Get, "k", Duration::ZERO, quick).await.unwrap(),
            7
        );
        let config = TimeoutConfig {
            small: Duration::ZERO,
            large: Duration::from_secs(60),
            large_from: 1 << 20,
        };
        assert_eq!(config.for_size(10), Duration::ZERO);
        assert_eq!(config.for_size(1 << 20), Duration::from_secs(60));
    }
}
