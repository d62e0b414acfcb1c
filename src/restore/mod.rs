//! Restore: reassembling a timeline's files from chunks into a local directory.
//!
//! Owns the read path. The destination must be empty unless [`RestoreOptions::overwrite`]; with
//! it, the old `metadata` file is removed (durably) first and every entry the checkpoint does not
//! have is removed, so the result is exactly the checkpoint's files, interrupted or not. Reads are
//! planned per pack ([`reads`]): neighbouring blobs are coalesced into ranged reads fetched in
//! parallel and decompressed on blocking threads. Every chunk is re-hashed and every file's hash
//! is checked when complete (computed while it is written, [`stream_hash`], or read back). Durability is batched: once every file is written and checked, all
//! are made durable together (one `syncfs` per filesystem for many files, else parallel
//! fsyncs), then renamed from their temporary names to their final names, then
//! each directory is synced once. The `metadata` file is written last, so an interrupted restore
//! never leaves a timeline that looks complete, nor a half-written file under its final name.
//!
//! Safety against a hostile destination: every directory below the destination is opened from
//! its parent without following symlinks, after all names were checked and before any is created
//! ([`dest`]); temporary files are created relative to those handles with `O_EXCL|O_NOFOLLOW`
//! under random names ([`dirfd`]). Must not write to the store.

mod dest;
mod dirfd;
mod reads;
mod stream_hash;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, TimelineState};
use crate::format::metadata::METADATA_FILE_NAME;
use crate::progress::DynProgress;
use crate::store::Store;
use crate::store::chunk_index::ChunkIndex;
use dest::{Dirs, Target};
use dirfd::DirHandle;
use reads::{ReadPlan, ReadStats};

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// The checkpoint restored.
    pub lsn: String,
    /// Files in the restored timeline.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Files already present with the right content, left as they were.
    pub files_reused: usize,
    /// Chunks read from the store.
    pub chunks_fetched: usize,
    /// Range reads made (adjacent chunks of a pack are read together).
    pub range_reads: usize,
    /// Bytes read from the store (stored form, before decompression).
    pub bytes_downloaded: u64,
}

/// How a restore treats its destination.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Restore into a non-empty destination, leaving exactly the checkpoint's files there:
    /// entries it does not have are removed, files it has with the right content are kept.
    /// Without it, a non-empty destination is refused with [`Error::AlreadyExists`].
    pub overwrite: bool,
}

/// A restore ready to run: its destination is cleared, its temporary files exist and its reads
/// are grouped.
pub struct RestorePlan {
    root: Arc<DirHandle>,
    targets: Vec<Target>,
    ranges: ReadPlan,
    metadata: Vec<u8>,
    report: RestoreReport,
}

impl Store {
    /// Restores `state` into `to` (created if missing) using `index` to find chunks.
    pub async fn restore_state(
        &self,
        index: &ChunkIndex,
        state: &TimelineState,
        to: &Path,
        opts: RestoreOptions,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let plan = self.plan_restore(index, state, to, opts, &progress)?;
        self.execute_restore(plan, progress).await
    }

    /// Checks the destination, clears it (with `overwrite`), decides what to fetch for restoring
    /// `state` into `to`, and creates the temporary files. Needs `index` only while it runs.
    pub fn plan_restore(
        &self,
        index: &ChunkIndex,
        state: &TimelineState,
        to: &Path,
        opts: RestoreOptions,
        progress: &DynProgress,
    ) -> Result<RestorePlan> {
        let dirs = dest::check_names(state)?;
        let root = Arc::new(DirHandle::open_root(to)?);
        let reuse = dest::clear(&root, state, &dirs, opts.overwrite)?;
        let mut report = RestoreReport {
            lsn: state.lsn.to_string(),
            files: state.files.len(),
            bytes: state.logical_bytes(),
            ..Default::default()
        };
        progress.set_total(report.bytes);
        let mut dirs = Dirs::new(root.clone());
        let targets = dest::prepare_targets(&mut dirs, state, reuse, &mut report, progress)?;
        let ranges = reads::plan_reads(index, &targets).inspect_err(|_| dest::discard(&targets))?;
        let stats = ReadStats::of(ranges.stages.iter().flatten());
        report.range_reads = stats.ranges;
        report.chunks_fetched = stats.chunks;
        report.bytes_downloaded = stats.bytes;
        Ok(RestorePlan {
            root,
            targets,
            ranges,
            metadata: state.metadata.to_file_bytes(),
            report,
        })
    }

    /// Fetches, checks and writes everything `plan` names; renames each file into place when it
    /// is complete, and writes the metadata file last.
    pub async fn execute_restore(
        &self,
        plan: RestorePlan,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let RestorePlan {
            root,
            targets,
            ranges,
            metadata,
            mut report,
        } = plan;
        let targets = Arc::new(targets);
        let retried = match reads::fetch_and_write_all(self, ranges, &targets, &progress).await {
            Ok(retried) => retried,
            Err(e) => {
                dest::discard(&targets);
                return Err(e);
            }
        };
        report.range_reads += retried.ranges;
        report.chunks_fetched += retried.chunks;
        report.bytes_downloaded += retried.bytes;
        let committed = tokio::task::spawn_blocking({
            let targets = targets.clone();
            move || {
                for t in targets.iter().filter(|t| t.entry.chunks.is_empty()) {
                    reads::check_file(t)?;
                }
                dest::commit(&targets)
            }
        })
        .await
        .unwrap_or_else(|e| Err(Error::Integrity(format!("restore worker failed: {e}"))));
        committed.inspect_err(|_| dest::discard(&targets))?;
        // The metadata file goes last: only now does the timeline look complete.
        write_metadata(&root, &metadata)?;
        Ok(report)
    }

    /// Restores a timeline at `at` (or its newest checkpoint) into `to`, which must be empty.
    pub async fn restore_timeline(
        &self,
        tenant: &crate::id::TenantId,
        timeline: &crate::id::TimelineId,
        at: Option<crate::id::Lsn>,
        to: &Path,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let opts = RestoreOptions::default();
        self.restore_timeline_with(tenant, timeline, at, to, opts, progress)
            .await
    }

    /// Like [`Store::restore_timeline`], with options.
    pub async fn restore_timeline_with(
        &self,
        tenant: &crate::id::TenantId,
        timeline: &crate::id::TimelineId,
        at: Option<crate::id::Lsn>,
        to: &Path,
        opts: RestoreOptions,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let state = self.checkpoint_state(tenant, timeline, at).await?;
        let chunks: Vec<_> = state
            .files
            .values()
            .flat_map(|f| f.chunks.iter().flat_map(ChunkRef::stored_ids))
            .collect();
        let index = self.load_tenant_index_for(tenant, &chunks).await?;
        self.restore_state(&index, &state, to, opts, progress).await
    }
}

/// Writes the metadata file under a fresh temporary name, makes it durable, renames it into place.
fn write_metadata(root: &DirHandle, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (tmp, file, _) = root.create_temp()?;
    let tmp_path = root.path().join(&tmp);
    let written = file.write_all_at(bytes, 0).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = root.remove(&tmp, false);
        return Err(Error::io("write", tmp_path, e));
    }
    root.rename(&tmp, METADATA_FILE_NAME)?;
    root.sync()
}
