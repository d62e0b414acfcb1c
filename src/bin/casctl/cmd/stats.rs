//! `casctl stats`: space used against space represented, and the requests this run made.

use anyhow::Result;
use layercas::backend::layers::metrics::MetricsSnapshot;
use layercas::backend::local::StagingReport;
use layercas::inspect::StoreStats;
use layercas::store::Store;
use serde::Serialize;

use super::Ctx;
use crate::output::{Exit, emit, size};

/// The store's numbers plus the requests this run made to read them.
#[derive(Serialize)]
struct StatsOutput {
    #[serde(flatten)]
    store: StoreStats,
    requests: MetricsSnapshot,
    /// A local store's staging files (live writers' and leftovers of writers that are gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    staging: Option<StagingReport>,
}

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    let opened = ctx.open().await?;
    let store = Store::open(opened.backend.clone()).await?;
    let out = StatsOutput {
        store: layercas::inspect::stats(&store).await?,
        requests: opened.metrics.snapshot(),
        staging: super::staging_report(ctx)?,
    };
    emit(ctx.json, &out, to_text);
    Ok(Exit::Ok)
}

fn to_text(out: &StatsOutput) -> String {
    let (s, requests) = (&out.store, &out.requests);
    let staging = out
        .staging
        .as_ref()
        .map(super::staging_line)
        .unwrap_or_default();
    format!(
        "{} tenants, {} timelines, {} checkpoints\n\
         logical {} (added {}), stored {}: {:.2}x\n\
         {} chunks in {} packs ({}), {} index objects ({}), manifests {}\n\
         {} requests to the store in this run{staging}",
        s.tenants,
        s.timelines,
        s.manifests,
        size(s.logical_bytes),
        size(s.added_bytes),
        size(s.stored_bytes),
        s.dedup_ratio,
        s.chunks,
        s.packs,
        size(s.pack_bytes),
        s.index_objects,
        size(s.index_bytes),
        size(s.manifest_bytes),
        requests.total_requests()
    )
}
