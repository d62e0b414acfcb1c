//! `casctl restore`: restore a timeline into a directory.

use std::path::PathBuf;

use anyhow::Result;
use layercas::id::Lsn;
use layercas::store::Store;

use super::{Ctx, TimelineArgs};
use crate::output::{Exit, emit, size};
use crate::progress;

/// What to restore, and where.
#[derive(clap::Args)]
pub struct Args {
    /// The directory to restore into (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    #[command(flatten)]
    timeline: TimelineArgs,
    /// Restore the newest checkpoint at or before this LSN (default: the newest).
    #[arg(long)]
    lsn: Option<Lsn>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let store = Store::open(ctx.open().await?.backend).await?;
    let (p, pb) = progress::bar("restore", !ctx.json);
    let report = store
        .restore_timeline(&a.timeline.tenant, &a.timeline.timeline, a.lsn, &a.to, p)
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
