//! `casctl checkpoint`: record one checkpoint of a timeline from files and directories.
//! Which files a directory contributes is `layercas::sync::workdir::walk_files`' rule, the same
//! as the sync loop's.

use std::path::PathBuf;

use anyhow::Result;
use layercas::format::config::StoreConfig;
use layercas::id::Lsn;
use layercas::store::Store;
use layercas::sync::sources::{collect_sources, resolve_metadata};
use layercas::write::{CheckpointMode, CheckpointOptions, CheckpointRequest, Writer};

use super::{Ctx, TimelineArgs};
use crate::output::{Exit, emit, size};
use crate::progress;

/// The timeline, its LSN or metadata, and the files of the checkpoint.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    timeline: TimelineArgs,
    /// The checkpoint's LSN (X/Y); must equal the metadata's disk_consistent_lsn if both given.
    #[arg(long)]
    lsn: Option<Lsn>,
    /// A timeline metadata file.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Add the files to the previous checkpoint instead of replacing its file set.
    #[arg(long)]
    incremental: bool,
    /// Take a file the previous checkpoint recorded under the same name and size as unchanged,
    /// without reading it (layer files are immutable); only new names and sizes are read.
    #[arg(long)]
    immutable_names: bool,
    /// Store every new chunk whole. By default, new chunks of a file that replaces an earlier
    /// version (same name, or same name up to `__`) are stored as deltas against that version's
    /// chunks (format-spec 5.2).
    #[arg(long)]
    no_deltas: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let store =
        Store::open_or_create(ctx.open().await?.backend, StoreConfig::default_config()).await?;
    let (files, found_metadata) = collect_sources(&a.paths)?;
    let metadata = resolve_metadata(a.lsn, a.metadata.or(found_metadata))?;
    let mode = if a.incremental {
        CheckpointMode::Incremental
    } else {
        CheckpointMode::Full
    };
    let req = CheckpointRequest {
        tenant: a.timeline.tenant,
        timeline: a.timeline.timeline,
        metadata,
        files,
        mode,
    };
    let writer = Writer::new(store).await?;
    let (p, pb) = progress::bar("checkpoint", !ctx.json);
    let opts = CheckpointOptions {
        immutable_names: a.immutable_names,
        deltas: !a.no_deltas,
    };
    let report = writer.checkpoint_with(req, opts, p).await;
    progress::finish(pb);
    emit(ctx.json, &report?, |r| {
        format!(
            "recorded {} at {}: {} files added ({} already stored whole), {} unchanged ({} not read), {} removed; \
             {} new chunks of {} ({} as deltas), {} stored in {} packs",
            r.manifest,
            r.lsn,
            r.files_added,
            r.files_deduplicated,
            r.files_unchanged,
            r.files_not_read,
            r.files_removed,
            r.new_chunks,
            r.chunks,
            r.new_deltas,
            size(r.new_stored_bytes),
            r.packs_written
        )
    });
    Ok(Exit::Ok)
}
