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
    /// The window in milliseconds recorded in the gc state, at most one day (86400000). It tunes
    /// how soon space returns; no run waits for it and safety does not depend on it.
    #[arg(long, default_value_t = 60_000)]
    window_ms: u64,
    /// Collect even when kept manifests reference chunks found in no index object and no pack
    /// table (otherwise gc refuses to delete; run `casctl verify` and `casctl repair index`).
    #[arg(long)]
    allow_missing: bool,
    /// Delete every writer intent first, so that packs only stale intents protect can be
    /// reclaimed. Safe ONLY when no writer is running against the store: a running writer's
    /// intent is what protects the packs it is about to commit.
    #[arg(long)]
    clear_intents: bool,
    /// Scan the whole store even when gc's seal says nothing changed since a run that found
    /// nothing to do (such a run otherwise stops after two reads).
    #[arg(long)]
    full: bool,
    /// Packs smaller than this many bytes are consolidated into packs of the store's target
    /// size once there are two or more (0: never).
    #[arg(long, default_value_t = layercas::gc::SMALL_PACK)]
    small_pack_bytes: u64,
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

/// The options `a` asks for, refusing out-of-bounds values as usage errors (exit code 2).
fn options(a: &Args) -> Result<layercas::gc::GcOptions> {
    if !(0.0..=1.0).contains(&a.repack_threshold) {
        usage!("--repack-threshold must be between 0 and 1");
    }
    let window = std::time::Duration::from_millis(a.window_ms);
    if window > layercas::gc::MAX_WINDOW {
        usage!(
            "--window-ms {} is above one day ({} ms)",
            a.window_ms,
            layercas::gc::MAX_WINDOW.as_millis()
        );
    }
    let mut opts = layercas::gc::GcOptions::new(retention(a)?);
    opts.dry_run = a.dry_run;
    opts.repack_threshold = a.repack_threshold;
    opts.window = window;
    opts.allow_missing = a.allow_missing;
    opts.clear_intents = a.clear_intents;
    opts.full = a.full;
    opts.small_pack = a.small_pack_bytes;
    if let Err(e) = opts.check() {
        usage!("{e}");
    }
    Ok(opts)
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let opts = options(&a)?;
    let store = Store::open(ctx.open().await?.backend).await?;
    // The library names each phase (scan, repack, condemn, re-mark, delete) and reports bytes
    // within repack and delete.
    let (p, pb) = progress::bar("gc", !ctx.json);
    let report = layercas::gc::run(&store, &opts, p).await;
    progress::finish(pb);
    emit(ctx.json, &report?, to_text);
    Ok(Exit::Ok)
}

fn to_text(r: &GcReport) -> String {
    if r.unchanged {
        return format!(
            "nothing changed since a gc that left nothing to do (generation {}; --full scans anyway); {} ms",
            r.generation, r.duration_ms
        );
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    format!(
        "{}manifests folded {}, deleted {}; packs deleted {}, repacked {}, rescued {}, written {}; \
         index objects deleted {}, written {}; intents cleared {}; {verb} {}, wrote {} in {} ms{}{}",
        if r.dry_run { "dry run: " } else { "" },
        r.manifests_folded,
        r.manifests_deleted,
        r.packs_deleted,
        r.packs_repacked,
        r.packs_rescued,
        r.packs_written,
        r.index_objects_deleted,
        r.index_objects_written,
        r.intents_cleared,
        size(r.bytes_freed),
        size(r.bytes_written),
        r.duration_ms,
        if r.sealed {
            "; nothing left to do: sealed, so the next run stops at once unless something is committed"
        } else {
            ""
        },
        if r.chunks_missing > 0 {
            format!(
                "\nwarning: {} referenced chunks are missing",
                r.chunks_missing
            )
        } else {
            String::new()
        }
    )
}
