//! `casctl gc`: apply retention, fold manifests, delete and repack packs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use layercas::gc::GcReport;
use layercas::gc::retention::{Policy, Retention};
use layercas::id::Lsn;
use layercas::store::Store;

use super::Ctx;
use crate::output::{Exit, emit, size};
use crate::{progress, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Plan and print only.
    #[arg(long)]
    dry_run: bool,
    /// Keep the newest N checkpoints of each timeline.
    #[arg(long, conflicts_with_all = ["keep_since", "retention"])]
    keep_last: Option<usize>,
    /// Keep every checkpoint at or after this LSN.
    #[arg(long, conflicts_with = "retention")]
    keep_since: Option<Lsn>,
    /// A TOML retention file ([default] and [tenants.<id>] tables).
    #[arg(long)]
    retention: Option<PathBuf>,
    /// Repack packs whose live fraction is below this.
    #[arg(long, default_value_t = layercas::gc::DEFAULT_REPACK_THRESHOLD)]
    repack_threshold: f64,
    /// The writers' window in milliseconds (gc waits this long between condemning and
    /// deleting).
    #[arg(long, default_value_t = 60_000)]
    window_ms: u64,
}

fn retention(a: &Args) -> Result<Retention> {
    Ok(match (a.keep_last, a.keep_since, &a.retention) {
        (Some(0), _, _) => usage!("--keep-last must be at least 1"),
        (Some(n), _, _) => Retention::uniform(Policy::KeepLast(n)),
        (_, Some(l), _) => Retention::uniform(Policy::KeepSince(l)),
        (_, _, Some(f)) => Retention::from_toml(
            &std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?,
        )?,
        _ => Retention::uniform(Policy::KeepAll),
    })
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    if !(0.0..=1.0).contains(&a.repack_threshold) {
        usage!("--repack-threshold must be between 0 and 1");
    }
    let mut opts = layercas::gc::GcOptions::new(retention(&a)?);
    opts.dry_run = a.dry_run;
    opts.repack_threshold = a.repack_threshold;
    opts.window = std::time::Duration::from_millis(a.window_ms);
    let store = Store::open(ctx.open().await?.backend).await?;
    // The library reports progress of the repack phase only (bytes copied).
    let (p, pb) = progress::bar("repack", !ctx.json);
    let report = layercas::gc::run(&store, &opts, p).await;
    progress::finish(pb);
    emit(ctx.json, &report?, to_text);
    Ok(Exit::Ok)
}

fn to_text(r: &GcReport) -> String {
    let verb = if r.dry_run { "would free" } else { "freed" };
    format!(
        "{}manifests folded {}, deleted {}; packs deleted {}, repacked {}, rescued {}, written {}; \
         index objects deleted {}, written {}; {verb} {}, wrote {} in {} ms",
        if r.dry_run { "dry run: " } else { "" },
        r.manifests_folded,
        r.manifests_deleted,
        r.packs_deleted,
        r.packs_repacked,
        r.packs_rescued,
        r.packs_written,
        r.index_objects_deleted,
        r.index_objects_written,
        size(r.bytes_freed),
        size(r.bytes_written),
        r.duration_ms
    )
}
