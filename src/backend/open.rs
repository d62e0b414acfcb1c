//! Opening a store from its location (a directory or an `s3://bucket/prefix` URL) and wrapping it
//! in the standard stack every application uses.
//!
//! The stack, outermost first: retry → concurrency limit → timeout → metrics → the real backend.
//! Metrics sit next to the real backend so they count every request actually sent (retries
//! included); limits and timeouts apply per attempt, and a retry waiting out its backoff holds no
//! concurrency permit. Owns composition only: each layer's behaviour lives in its own module.

use std::sync::Arc;

use super::layers::limit::LimitBackend;
use super::layers::metrics::{Metrics, MetricsBackend};
use super::layers::retry::{RetryBackend, RetryConfig};
use super::layers::timeout::{TimeoutBackend, TimeoutConfig};
use super::local::LocalBackend;
use super::{BackendError, DynBackend};

/// Settings of the standard stack.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// How transient failures are retried.
    pub retry: RetryConfig,
    /// Per-call time limits, so a stalled connection becomes a retryable error.
    pub timeouts: TimeoutConfig,
    /// Requests in flight at once, reads and writes counted apart.
    pub max_reads: usize,
    /// Writes in flight at once, bounding memory held by upload bodies.
    pub max_writes: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            retry: RetryConfig::default(),
            timeouts: TimeoutConfig::default(),
            max_reads: 32,
            max_writes: 16,
        }
    }
}

/// A backend in its stack, with the metrics of its requests.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The stacked backend every operation should use.
    pub backend: DynBackend,
    /// The counters of the metrics layer in the stack, for reports and exposition.
    pub metrics: Arc<Metrics>,
}

/// Wraps `base` in the standard stack.
pub fn standard_stack(base: DynBackend, config: &StackConfig) -> Opened {
    let metered = Arc::new(MetricsBackend::new(base));
    let metrics = metered.metrics();
    let timed = Arc::new(TimeoutBackend::new(metered, config.timeouts.clone()));
    let limited = Arc::new(LimitBackend::new(
        timed,
        config.max_reads,
        config.max_writes,
    ));
    let retried = Arc::new(RetryBackend::new(limited, config.retry.clone()));
    Opened {
        backend: retried,
        metrics,
    }
}

/// The bare backend at `location`: `s3://bucket[/prefix]` (endpoint and region from the
/// arguments, else `AWS_ENDPOINT_URL` / `AWS_REGION`; credentials from the standard AWS chain), or
/// else a local directory (created if missing: for writers, such as the sync loop).
pub async fn open_location(
    location: &str,
    endpoint: Option<String>,
    region: Option<String>,
) -> Result<DynBackend, BackendError> {
    open_with(location, endpoint, region, |p| LocalBackend::new(p)).await
}

/// Like [`open_location`], but a local directory must exist already (an error naming the path
/// otherwise), and opening it writes nothing: for readers, so that a mistyped path is not
/// created and a read-only store can be opened.
pub async fn open_existing_location(
    location: &str,
    endpoint: Option<String>,
    region: Option<String>,
) -> Result<DynBackend, BackendError> {
    open_with(location, endpoint, region, |p| LocalBackend::open(p)).await
}

async fn open_with(
    location: &str,
    endpoint: Option<String>,
    region: Option<String>,
    local: fn(&str) -> std::io::Result<LocalBackend>,
) -> Result<DynBackend, BackendError> {
    if location.starts_with("s3://") {
        return open_s3(location, endpoint, region).await;
    }
    let local =
        local(location).map_err(|e| BackendError::other("open local store", location, e))?;
    Ok(Arc::new(local))
}

#[cfg(feature = "s3")]
async fn open_s3(
    location: &str,
    endpoint: Option<String>,
    region: Option<String>,
) -> Result<DynBackend, BackendError> {
    let config = super::s3::S3Config::from_store_url(location, endpoint, region)?;
    Ok(Arc::new(super::s3::S3Backend::new(config).await?))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(
    _: &str,
    _: Option<String>,
    _: Option<String>,
) -> Result<DynBackend, BackendError> {
    Err(BackendError::NotImplemented {
        what: "S3 (this build has no `s3` feature)",
    })
}
