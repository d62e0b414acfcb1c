//! `casctl restore`: restore a timeline into a directory.

use std::path::PathBuf;

use anyhow::Result;
use layercas::id::{Lsn, TenantId, TimelineId};
use layercas::store::Store;

use super::Ctx;
use crate::output::{Exit, emit, size};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    tenant: TenantId,
    #[arg(long)]
    timeline: TimelineId,
    #[arg(long)]
    lsn: Option<Lsn>,
    #[arg(long)]
    pub to: PathBuf,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let store = Store::open(ctx.open().await?.backend).await?;
    let (p, pb) = progress::bar("restore", !ctx.json);
    let report = store
        .restore_timeline(&a.tenant, &a.timeline, a.lsn, &a.to, p)
        .await;
    progress::finish(pb);
    emit(ctx.json, &report?, |r| {
        format!(
            "restored {} files ({}) at {} into {}; {} reused, {} chunks in {} ranged reads",
            r.files,
            size(r.bytes),
            r.lsn,
            a.to.display(),
            r.files_reused,
            r.chunks_fetched,
            r.range_reads
        )
    });
    Ok(Exit::Ok)
}
