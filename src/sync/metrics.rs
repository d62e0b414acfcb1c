//! The sync loop's metrics, registered in the `prometheus-client` registry the caller passes
//! (under the prefix `layercas_sync`): tasks, queue length, evictions, upload lag, bytes uploaded
//! and the dedup ratio; and the backend's requests and bytes when the loop opened the backend.
//!
//! Owns the metric handles and their updates. Must not decide anything: the loop calls in.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::backend::layers::metrics::Metrics;
use crate::write::CheckpointReport;

/// The loop's metric handles. Cloning shares them; [`SyncMetrics::default`] is a set nobody
/// reads (for callers without a registry).
#[derive(Clone, Debug, Default)]
pub struct SyncMetrics {
    /// Timelines with work pending, running or backing off.
    pub queue_length: Gauge,
    /// Tasks that finished, failed (and will be retried or evicted), or panicked.
    pub tasks_done: Counter,
    /// Task attempts that failed.
    pub tasks_failed: Counter,
    /// Timelines evicted after too many failures (or a panic).
    pub evictions: Counter,
    /// The largest distance in bytes of WAL between a timeline's local and remote consistent LSN.
    pub upload_lag: Gauge,
    /// Bytes of layer files the uploads recorded as added.
    pub uploaded_logical_bytes: Counter,
    /// Bytes the uploads actually stored (new chunks, compressed).
    pub uploaded_stored_bytes: Counter,
    /// 1 - stored/added over all uploads: the share deduplication and compression saved.
    pub dedup_ratio: Gauge<f64, AtomicU64>,
}

impl SyncMetrics {
    /// Metric handles registered in `registry` under `layercas_sync_`.
    pub fn register(registry: &mut Registry) -> SyncMetrics {
        let m = SyncMetrics::default();
        let r = registry.sub_registry_with_prefix("layercas_sync");
        let counters = [
            ("tasks", "Sync tasks that ended", &m.tasks_done),
            (
                "task_failures",
                "Sync task attempts that failed",
                &m.tasks_failed,
            ),
            (
                "evictions",
                "Timelines evicted after repeated failures",
                &m.evictions,
            ),
            (
                "uploaded_logical_bytes",
                "Bytes of layer files uploads added",
                &m.uploaded_logical_bytes,
            ),
            (
                "uploaded_stored_bytes",
                "Bytes uploads stored after dedup",
                &m.uploaded_stored_bytes,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let gauges = [
            (
                "queue_length",
                "Timelines with sync work pending or running",
                &m.queue_length,
            ),
            (
                "upload_lag_lsn",
                "Largest local minus remote consistent LSN",
                &m.upload_lag,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        let help = "Share of added bytes dedup and compression saved";
        r.register("dedup_ratio", help, m.dedup_ratio.clone());
        m
    }

    /// Registers the backend's request and byte counters (`layercas_sync_backend_*`).
    pub fn register_backend(registry: &mut Registry, metrics: Arc<Metrics>) {
        registry
            .sub_registry_with_prefix("layercas_sync_backend")
            .register_collector(Box::new(BackendCollector(metrics)));
    }

    /// Counts one upload's bytes and updates the ratio.
    pub(crate) fn uploaded(&self, r: &CheckpointReport) {
        self.uploaded_logical_bytes.inc_by(r.bytes_added);
        self.uploaded_stored_bytes.inc_by(r.new_stored_bytes);
        let logical = self.uploaded_logical_bytes.get();
        if logical > 0 {
            let stored = self.uploaded_stored_bytes.get() as f64;
            self.dedup_ratio.set(1.0 - stored / logical as f64);
        }
    }
}

/// The backend's counters, read at each scrape.
#[derive(Debug)]
struct BackendCollector(Arc<Metrics>);

impl Collector for BackendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        type Field = fn(&crate::backend::layers::metrics::OpSnapshot) -> u64;
        let counters: [(&str, &str, Field); 3] = [
            ("requests", "Backend calls of the sync loop", |o| o.requests),
            ("bytes_in", "Bytes the sync loop downloaded", |o| o.bytes_in),
            ("bytes_out", "Bytes the sync loop uploaded", |o| o.bytes_out),
        ];
        for (name, help, get) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (op, o) in &snapshot.ops {
                family
                    .encode_family(&[("op", op.as_str())])?
                    .encode_counter::<NoLabelSet, u64, u64>(&get(o), None)?;
            }
        }
        Ok(())
    }
}
