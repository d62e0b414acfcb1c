//! `casctl restore`: restore a timeline into a directory.

use std::path::PathBuf;

use anyhow::Result;
use layercas::RestoreOptions;
use layercas::id::Lsn;
use layercas::store::Store;

use super::{Ctx, TimelineArgs};
use crate::output::{Exit, emit, print_error, size};
use crate::progress;

/// What to restore, and where.
#[derive(clap::Args)]
pub struct Args {
    /// The directory to restore into (created if missing; it must be empty unless --overwrite).
    #[arg(long)]
    pub to: PathBuf,
    /// Replace what the directory holds: afterwards it holds exactly the checkpoint's files
    /// (others are removed; files already right are kept).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    timeline: TimelineArgs,
    /// Restore the newest checkpoint at or before this LSN (default: the newest).
    #[arg(long)]
    lsn: Option<Lsn>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let store = Store::open(ctx.open().await?.backend).await?;
    let (p, pb) = progress::bar("restore", !ctx.json);
    let (tl, opts) = (
        &a.timeline,
        RestoreOptions {
            overwrite: a.overwrite,
        },
    );
    let report = store
        .restore_timeline_with(&tl.tenant, &tl.timeline, a.lsn, &a.to, opts, p)
        .await;
    progress::finish(pb);
    let report = match report {
        Err(e @ layercas::Error::AlreadyExists(_)) => {
            let message = format!("{e}; pass --overwrite to replace its content");
            print_error(ctx.json, &message, Exit::NotEmpty);
            return Ok(Exit::NotEmpty);
        }
        other => other?,
    };
    emit(ctx.json, &report, |r| {
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
