//! Retry wrapper: repeats calls that failed with a transient error, with exponential backoff and
//! full jitter, a bounded number of times; logs every retry with `tracing`.
//!
//! Owns the retry policy. Must not decide what is transient (the backend's error mapping does,
//! through [`BackendError::is_transient`]) and must not retry anything else.
//!
//! # Rules
//! - `put` replays the [`Payload`] from its start on every attempt.
//! - `get` retries until the response starts; an error inside the body reaches the caller, who
//!   may `get` again.
//! - `list` retries the whole listing when it fails, and skips the keys it already yielded, so a
//!   failure on page 50 costs a re-listing but never a duplicate or a lost key.
//! - A retried `Create` (or `Update`) whose first attempt did land but whose answer was lost sees
//!   `AlreadyExists` (or `PreconditionFailed`): callers of a content-addressed store treat
//!   `AlreadyExists` as success when the content is identical by construction.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::backend::backoff::Backoff;
use crate::backend::wrap::Op;
use crate::backend::{Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode};

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// Upper bound of the first backoff; doubles with each retry.
    pub base_delay: Duration,
    /// Cap on any one backoff.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    /// 6 attempts, 50 ms doubling up to 5 s: about 1.5 s of waiting at most before the last try.
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// The delay policy: `base_delay` doubling up to `max_delay`, full jitter.
    pub fn policy(&self) -> Backoff {
        Backoff {
            base: self.base_delay,
            max: self.max_delay,
            jitter: 1.0,
        }
    }

    /// The wait before retry number `retry` (1-based): uniform in `0..=min(max, base * 2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.policy().delay(retry)
    }
}

/// A backend whose transient failures are retried.
#[derive(Debug)]
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    config: RetryConfig,
}

impl RetryBackend {
    /// Wraps `inner`, retrying transient failures as `config` says.
    pub fn new(inner: Arc<dyn Backend>, config: RetryConfig) -> RetryBackend {
        RetryBackend { inner, config }
    }

    /// Runs `call` until it succeeds, fails permanently, or the attempts are used up.
    async fn run<T, F, Fut>(&self, op: Op, key: &Key, mut call: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt < self.config.max_attempts.max(1) => {
                    let delay = self.config.backoff(attempt);
                    tracing::warn!(op = op.name(), key = %key, attempt, delay_ms = delay.as_millis() as u64,
                        error = %e, "transient backend failure; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

#[async_trait]
impl Backend for RetryBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        struct State {
            inner: Arc<dyn Backend>,
            config: RetryConfig,
            prefix: Prefix,
            current: BoxStream<'static, Result<ObjectMeta, BackendError>>,
            seen: HashSet<Key>,
            attempt: u32,
            done: bool,
        }
        let state = State {
            current: self.inner.list(prefix),
            inner: self.inner.clone(),
            config: self.config.clone(),
            prefix: prefix.clone(),
            seen: HashSet::new(),
            attempt: 1,
            done: false,
        };
        stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                match s.current.next().await {
                    None => return None,
                    Some(Ok(meta)) => {
                        if s.seen.insert(meta.key.clone()) {
                            return Some((Ok(meta), s));
                        }
                    }
                    Some(Err(e))
                        if e.is_transient() && s.attempt < s.config.max_attempts.max(1) =>
                    {
                        let delay = s.config.backoff(s.attempt);
                        tracing::warn!(op = "list", key = s.prefix.as_str(), attempt = s.attempt,
                            delay_ms = delay.as_millis() as u64, already_listed = s.seen.len(),
                            error = %e, "transient listing failure; listing again");
                        tokio::time::sleep(delay).await;
                        s.attempt += 1;
                        s.current = s.inner.list(&s.prefix);
                    }
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
        .boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        self.run(Op::Put, key, || {
            self.inner.put(key, payload.clone(), mode.clone())
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        self.run(Op::Get, key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.run(Op::GetRange, key, || {
            self.inner.get_range(key, range.clone())
        })
        .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.run(Op::Head, key, || self.inner.head(key)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.run(Op::Delete, key, || self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        // Deleting is idempotent, so the whole batch is repeated.
        self.run(Op::Delete, first, || self.inner.delete_many(keys))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let c = RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        for retry in 1..40 {
            let cap = Duration::from_millis(10 * (1u64 << (retry - 1).min(20))).min(c.max_delay);
            assert!(c.backoff(retry) <= cap);
        }
    }

    /// Fails the first `failures` calls of `head` transiently, then answers; records nothing else.
    #[derive(Debug)]
    struct Flaky {
        failures: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl Backend for Flaky {
        fn list(&self, _: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
            stream::empty().boxed()
        }
        async fn put(&self, _: &Key, _: Payload, _: PutMode) -> Result<(), BackendError> {
            Ok(())
        }
        async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
            Err(BackendError::NotFound {
                key: key.to_string(),
            })
        }
        async fn get_range(&self, _: &Key, _: Range<u64>) -> Result<Bytes, BackendError> {
            Ok(Bytes::new())
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
            use std::sync::atomic::Ordering;
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(BackendError::transient("head", key, "injected"));
            }
            Ok(ObjectMeta {
                key: key.clone(),
                size: 0,
                last_modified: std::time::SystemTime::UNIX_EPOCH,
                etag: None,
            })
        }
        async fn delete(&self, _: &Key) -> Result<(), BackendError> {
            Ok(())
        }
    }

    /// Retries really wait: on paused (virtual) time, four retries take at least the four
    /// backoffs the policy draws (the random source is seeded, so the draws are known), and a
    /// zero backoff would fail this.
    #[tokio::test(start_paused = true)]
    async fn retries_wait_out_their_backoff() {
        let config = RetryConfig {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        fastrand::seed(7);
        let expected: Duration = (1..=4).map(|n| config.backoff(n)).sum();
        assert!(expected >= Duration::from_millis(100), "{expected:?}");
        fastrand::seed(7);
        let flaky = Arc::new(Flaky { failures: 4.into() });
        let b = RetryBackend::new(flaky, config);
        let start = tokio::time::Instant::now();
        b.head(&Key::new("k").unwrap()).await.unwrap();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= expected,
            "waited {elapsed:?}, backoffs sum to {expected:?}"
        );
    }
}
