//! Metrics wrapper: counts calls, errors, bytes moved and latency per operation, readable in the
//! process as a [`MetricsSnapshot`] (serde-serializable, for `casctl stats --json`) or as
//! Prometheus text.
//!
//! Owns the counters and their two renderings. Must not change any answer: every call and every
//! byte passes through untouched.
//!
//! # What is counted
//! - One request per call; `list` counts once per listing (its latency is the whole walk, recorded
//!   when the stream ends or is dropped), `get` counts its latency up to the response.
//! - `bytes_out`: payload bytes of successful `put`s. `bytes_in`: body bytes of `get` as they are
//!   read, and the bytes `get_range` returned.
//! - `errors` counts every failed call, of which `transient_errors` were transient and `not_found`
//!   were answers that the object does not exist (often expected, e.g. a `head` probe).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::backend::wrap::Op;
use crate::backend::{Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode};

/// Upper bounds of the latency histogram buckets, in seconds (a last `+Inf` bucket is implied).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a call ended, as far as the counters care.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    Failed { transient: bool, not_found: bool },
}

impl Outcome {
    fn of<T>(result: &Result<T, BackendError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Failed {
                transient: e.is_transient(),
                not_found: e.is_not_found(),
            },
        }
    }
}

#[derive(Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    transient_errors: AtomicU64,
    not_found: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency_micros_sum: AtomicU64,
    latency_micros_max: AtomicU64,
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// Live counters, shared between a [`MetricsBackend`] and whoever reads them.
#[derive(Default)]
pub struct Metrics {
    ops: [OpCounters; Op::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn record(&self, op: Op, elapsed: Duration, outcome: Outcome) {
        let c = &self.ops[op.index()];
        c.requests.fetch_add(1, Relaxed);
        if let Outcome::Failed {
            transient,
            not_found,
        } = outcome
        {
            c.errors.fetch_add(1, Relaxed);
            c.transient_errors.fetch_add(u64::from(transient), Relaxed);
            c.not_found.fetch_add(u64::from(not_found), Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        c.latency_micros_sum.fetch_add(micros, Relaxed);
        c.latency_micros_max.fetch_max(micros, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        c.buckets[bucket].fetch_add(1, Relaxed);
    }

    fn add_bytes_in(&self, op: Op, n: u64) {
        self.ops[op.index()].bytes_in.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy of the counters (each counter is read atomically; counters of
    /// calls in flight may be a call apart).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let ops = Op::ALL
            .iter()
            .map(|op| {
                let c = &self.ops[op.index()];
                let mut cumulative = 0;
                let latency_buckets = c
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        cumulative += n.load(Relaxed);
                        LatencyBucket {
                            le_seconds: LATENCY_BUCKETS.get(i).copied(),
                            count: cumulative,
                        }
                    })
                    .collect();
                let snap = OpSnapshot {
                    requests: c.requests.load(Relaxed),
                    errors: c.errors.load(Relaxed),
                    transient_errors: c.transient_errors.load(Relaxed),
                    not_found: c.not_found.load(Relaxed),
                    bytes_in: c.bytes_in.load(Relaxed),
                    bytes_out: c.bytes_out.load(Relaxed),
                    latency_seconds_sum: c.latency_micros_sum.load(Relaxed) as f64 / 1e6,
                    latency_seconds_max: c.latency_micros_max.load(Relaxed) as f64 / 1e6,
                    latency_buckets,
                };
                (op.name().to_string(), snap)
            })
            .collect();
        MetricsSnapshot { ops }
    }
}

/// The counters of every operation at one moment, keyed by operation name (`put`, `get_range`…).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Counters per operation, keyed by the operation's name (`put`, `get_range`, ...).
    pub ops: BTreeMap<String, OpSnapshot>,
}

/// The counters of one operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSnapshot {
    /// Calls made, successful or not.
    pub requests: u64,
    /// Calls that returned an error of any kind.
    pub errors: u64,
    /// Errors the retry layer may retry (timeouts, 5xx, throttling).
    pub transient_errors: u64,
    /// Reads of missing objects: normal for probes, so counted apart from errors.
    pub not_found: u64,
    /// Bytes received from the store (object bodies read).
    pub bytes_in: u64,
    /// Bytes sent to the store (object bodies written).
    pub bytes_out: u64,
    /// Total time spent in calls, for the mean latency.
    pub latency_seconds_sum: f64,
    /// The slowest call seen.
    pub latency_seconds_max: f64,
    /// Cumulative counts (Prometheus style); the last bucket has no bound (`+Inf`).
    pub latency_buckets: Vec<LatencyBucket>,
}

/// Calls that took at most `le_seconds` (`None`: any time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyBucket {
    /// Upper bound of the bucket in seconds; `None` is the `+Inf` bucket.
    pub le_seconds: Option<f64>,
    /// Calls at or below the bound (cumulative, as Prometheus counts).
    pub count: u64,
}

/// A counter's name (after the `layercas_backend_` prefix, before the `_total` suffix the
/// exposition adds), help text and field.
type Counter = (&'static str, &'static str, fn(&OpSnapshot) -> u64);

const COUNTERS: [Counter; 6] = [
    ("requests", "Backend calls.", |o| o.requests),
    ("errors", "Backend calls that failed.", |o| o.errors),
    (
        "transient_errors",
        "Backend calls that failed transiently.",
        |o| o.transient_errors,
    ),
    (
        "not_found",
        "Backend calls answered 'no such object'.",
        |o| o.not_found,
    ),
    ("bytes_in", "Bytes downloaded from the backend.", |o| {
        o.bytes_in
    }),
    ("bytes_out", "Bytes uploaded to the backend.", |o| {
        o.bytes_out
    }),
];

impl MetricsSnapshot {
    /// The counters of `op` (all zero if it never ran).
    pub fn op(&self, op: Op) -> OpSnapshot {
        self.ops.get(op.name()).cloned().unwrap_or_default()
    }

    /// Calls of every operation together.
    pub fn total_requests(&self) -> u64 {
        self.ops.values().map(|o| o.requests).sum()
    }

    /// The Prometheus (OpenMetrics) text exposition, rendered by `prometheus-client`: metric
    /// names prefixed `layercas_backend_`, counters suffixed `_total`, each labelled `op`.
    pub fn to_prometheus_text(&self) -> String {
        let mut registry = Registry::with_prefix("layercas_backend");
        registry.register_collector(Box::new(SnapshotCollector(self.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A snapshot as a `prometheus-client` collector: the counters and the latency histogram.
#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, get) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (op, o) in &self.0.ops {
                let labels = [("op", op.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&get(o), None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "request_duration_seconds",
            "Backend call latency.",
            None,
            MetricType::Histogram,
        )?;
        for (op, o) in &self.0.ops {
            // The encoder sums per-bucket counts itself; `f64::MAX` is its `+Inf` bound.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = o
                .latency_buckets
                .iter()
                .map(|b| {
                    let n = b.count - below;
                    below = b.count;
                    (b.le_seconds.unwrap_or(f64::MAX), n)
                })
                .collect();
            let labels = [("op", op.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    o.latency_seconds_sum,
                    o.requests,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// A backend whose calls are counted.
#[derive(Debug)]
pub struct MetricsBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl MetricsBackend {
    /// Wraps `inner`, counting into a fresh [`Metrics`].
    pub fn new(inner: Arc<dyn Backend>) -> MetricsBackend {
        MetricsBackend {
            inner,
            metrics: Arc::default(),
        }
    }

    /// The live counters (keep the `Arc` to read them after the backend is gone).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    async fn timed<T>(
        &self,
        op: Op,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let start = Instant::now();
        let result = fut.await;
        self.metrics
            .record(op, start.elapsed(), Outcome::of(&result));
        result
    }
}

/// Records one listing when its stream ends or is dropped.
struct ListRecord {
    metrics: Arc<Metrics>,
    start: Instant,
    outcome: Outcome,
}

impl Drop for ListRecord {
    fn drop(&mut self) {
        self.metrics
            .record(Op::List, self.start.elapsed(), self.outcome);
    }
}

#[async_trait]
impl Backend for MetricsBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let record = ListRecord {
            metrics: self.metrics.clone(),
            start: Instant::now(),
            outcome: Outcome::Ok,
        };
        futures::stream::unfold(
            (self.inner.list(prefix), record),
            |(mut s, mut record)| async move {
                let item = s.next().await?;
                if item.is_err() {
                    record.outcome = Outcome::of(&item);
                }
                Some((item, (s, record)))
            },
        )
        .boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        let len = payload.len();
        let result = self
            .timed(Op::Put, self.inner.put(key, payload, mode))
            .await;
        if result.is_ok() {
            self.metrics.ops[Op::Put.index()]
                .bytes_out
                .fetch_add(len, Relaxed);
        }
        result
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let got = self.timed(Op::Get, self.inner.get(key)).await?;
        let metrics = self.metrics.clone();
        let body = got
            .body
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    metrics.add_bytes_in(Op::Get, piece.len() as u64);
                }
            })
            .boxed();
        Ok(GetResult {
            meta: got.meta,
            body,
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        let got = self
            .timed(Op::GetRange, self.inner.get_range(key, range))
            .await?;
        self.metrics.add_bytes_in(Op::GetRange, got.len() as u64);
        Ok(got)
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.timed(Op::Head, self.inner.head(key)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.timed(Op::Delete, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        self.timed(Op::Delete, self.inner.delete_many(keys)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_op_and_histogram() {
        let m = Metrics::default();
        m.record(Op::Put, Duration::from_millis(3), Outcome::Ok);
        let missing: Result<(), _> = Err(BackendError::NotFound { key: "k".into() });
        m.record(Op::Head, Duration::from_secs(20), Outcome::of(&missing));
        let snap = m.snapshot();
        assert_eq!(snap.op(Op::Put).requests, 1);
        assert_eq!(snap.op(Op::Head).not_found, 1);
        assert_eq!(snap.total_requests(), 2);
        let text = snap.to_prometheus_text();
        assert!(text.contains("layercas_backend_requests_total{op=\"put\"} 1"));
        assert!(text.contains("# TYPE layercas_backend_request_duration_seconds histogram"));
        assert!(text.contains(
            "layercas_backend_request_duration_seconds_bucket{le=\"0.005\",op=\"put\"} 1"
        ));
        assert!(text.contains(
            "layercas_backend_request_duration_seconds_bucket{le=\"+Inf\",op=\"head\"} 1"
        ));
        assert!(text.contains(
            "layercas_backend_request_duration_seconds_bucket{le=\"10.0\",op=\"head\"} 0"
        ));
        let json = serde_json::to_string(&snap).unwrap();
        let back: MetricsSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
    }
}
