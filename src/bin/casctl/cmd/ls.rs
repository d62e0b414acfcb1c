//! `casctl ls`: tenants, timelines and checkpoints, or the files of one checkpoint.

use anyhow::{Context, Result};
use layercas::id::{Lsn, TenantId, TimelineId};
use layercas::store::Store;
use serde::Serialize;

use super::Ctx;
use crate::output::{Exit, emit, size};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, requires = "timeline")]
    tenant: Option<TenantId>,
    #[arg(long, requires = "tenant")]
    timeline: Option<TimelineId>,
    #[arg(long, requires = "tenant")]
    lsn: Option<Lsn>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let store = Store::open(ctx.open().await?.backend).await?;
    if let (Some(t), Some(tl)) = (a.tenant, a.timeline) {
        return list_files(&store, t, tl, a.lsn, ctx.json).await;
    }
    let listing = layercas::inspect::list_timelines(&store).await?;
    emit(ctx.json, &listing, |l| {
        l.iter()
            .map(|t| format!("{}/{}: {}", t.tenant, t.timeline, t.checkpoints.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(Exit::Ok)
}

/// One file of a checkpoint as `ls` prints it.
#[derive(Serialize)]
struct FileRow<'a> {
    name: &'a str,
    size: u64,
    chunks: usize,
    blake3: String,
}

async fn list_files(
    store: &Store,
    tenant: TenantId,
    timeline: TimelineId,
    lsn: Option<Lsn>,
    json: bool,
) -> Result<Exit> {
    let state = store
        .timeline_state(&tenant, &timeline, lsn)
        .await?
        .with_context(|| format!("timeline {tenant}/{timeline} has no checkpoint there"))?;
    let rows: Vec<FileRow> = state
        .files
        .values()
        .map(|f| FileRow {
            name: &f.name,
            size: f.size,
            chunks: f.chunks.len(),
            blake3: f.hash.to_hex(),
        })
        .collect();
    emit(json, &rows, |rows| {
        let mut out = vec![format!("checkpoint {} of {tenant}/{timeline}:", state.lsn)];
        out.extend(
            rows.iter()
                .map(|r| format!("{:>12}  {:>6} chunks  {}", size(r.size), r.chunks, r.name)),
        );
        out.join("\n")
    });
    Ok(Exit::Ok)
}
