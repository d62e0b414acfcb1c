//! `casctl sync`: one pass of the sync loop over a pageserver workdir
//! (`layercas::sync::once::sync_once`); exit 1 when a timeline ends evicted.

use std::path::PathBuf;

use anyhow::Result;
use layercas::sync::once::{OnceOptions, SyncReport, sync_once};

use super::Ctx;
use crate::output::{Exit, emit};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub workdir: PathBuf,
    #[arg(long)]
    download: bool,
    /// Timelines synced at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent_sync: usize,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let backend = ctx.open().await?.backend;
    let (p, pb) = progress::counter("sync", "timelines", !ctx.json);
    let opts = OnceOptions {
        download: a.download,
        max_concurrent_sync: a.max_concurrent_sync,
        progress: p,
    };
    let report = sync_once(backend, a.workdir, opts).await;
    progress::finish(pb);
    let report = report?;
    emit(ctx.json, &report, to_text);
    Ok(if report.evicted > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    })
}

/// The report as text: one line per timeline, then the totals.
pub fn to_text(r: &SyncReport) -> String {
    let mut lines: Vec<String> = r
        .timelines
        .iter()
        .map(|t| {
            let lsn = t.lsn.as_deref().unwrap_or("");
            format!("{}/{}: {} {lsn}", t.tenant, t.timeline, t.state)
        })
        .collect();
    lines.push(format!(
        "{} ready, {} only in the store, {} evicted, in {:.2} s",
        r.ready, r.cloud_only, r.evicted, r.seconds
    ));
    lines.join("\n")
}
