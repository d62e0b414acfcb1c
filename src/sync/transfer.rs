//! One timeline's sync task: download the store's newer checkpoint into the workdir, upload
//! the local checkpoint the store lacks. Layer files named by the caller must be regular files
//! (checked before the writer opens them: a symbolic link's target is never recorded, a fifo
//! never blocks the task).
//!
//! Owns the transfers themselves (through `Writer::checkpoint` and `Writer::restore`, which keep
//! the store's write order and the workdir's temporary-name-then-rename rule). Both read and
//! write local files, so each runs on tokio's blocking pool (driven there by the runtime's
//! handle), never on an async worker; the loop's token stops them at their next await. Must not
//! schedule, retry or report states: that is the loop's job in the parent module.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::Lsn;
use crate::progress;
use crate::sync::queue::{Upload, UploadFiles};
use crate::sync::{Shared, TimelineKey, io_gate, workdir};
use crate::write::{CheckpointMode, CheckpointOptions, CheckpointRequest, SourceFile};

/// Runs a task's parts in order: the download first (if asked), then the upload; returns the
/// LSN the timeline is ready at.
pub(super) async fn execute(
    shared: Arc<Shared>,
    key: TimelineKey,
    download_first: bool,
    upload: Option<Upload>,
) -> Result<Lsn> {
    let mut ready = None;
    if download_first {
        let s = shared.clone();
        ready = Some(off_runtime(&shared, async move { download(&s, key).await }).await?);
    }
    if let Some(upload) = upload {
        let s = shared.clone();
        let work = async move { upload_checkpoint(&s, key, &upload).await };
        ready = Some(off_runtime(&shared, work).await?);
    }
    ready.ok_or_else(|| Error::InvalidInput("empty sync task".into()))
}

/// Runs `work` on the blocking pool, driven by the current runtime, until it ends or the loop is
/// cancelled. A panic in it comes back as [`Error::TaskFailed`] (the loop names the timeline).
async fn off_runtime<F>(shared: &Shared, work: F) -> Result<Lsn>
where
    F: std::future::Future<Output = Result<Lsn>> + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let cancel = shared.cancel.clone();
    let joined = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            tokio::select! {
                r = work => r,
                _ = cancel.cancelled() => Err(Error::Cancelled("the sync loop was cancelled".into())),
            }
        })
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::TaskFailed(format!("sync transfer: {e}"))),
    }
}

async fn download(shared: &Shared, key: TimelineKey) -> Result<Lsn> {
    let (tenant, timeline) = key;
    let dir = workdir::timeline_dir(&shared.workdir, &tenant, &timeline);
    let local = shared.local_lsn(&key);
    let remote = shared
        .writer
        .store()
        .timeline_manifests(&tenant, &timeline)
        .await?
        .last()
        .map(|r| r.lsn);
    let Some(remote) = remote else {
        return Err(Error::NotFound(format!(
            "timeline {tenant}/{timeline} in the store"
        )));
    };
    shared.durable.durable(key, remote);
    if let Some(local) = local.filter(|l| *l >= remote) {
        return Ok(local);
    }
    io_gate::reached(&dir);
    let report = shared
        .writer
        .restore(&tenant, &timeline, Some(remote), &dir, progress::none())
        .await?;
    tracing::info!(
        files = report.files,
        reused = report.files_reused,
        "downloaded"
    );
    shared.set_local_lsn(key, remote);
    Ok(remote)
}

async fn upload_checkpoint(shared: &Shared, key: TimelineKey, upload: &Upload) -> Result<Lsn> {
    let (tenant, timeline) = key;
    let dir = workdir::timeline_dir(&shared.workdir, &tenant, &timeline);
    io_gate::reached(&dir);
    let (names, mode) = match &upload.files {
        UploadFiles::All => {
            let names = workdir::layer_files(&dir).map_err(|e| Error::io("list", &dir, e))?;
            (names, CheckpointMode::Full)
        }
        UploadFiles::New(names) => {
            workdir::check_regular_files(&dir, names)
                .map_err(|e| Error::io("checking the new layer files in", &dir, e))?;
            (names.iter().cloned().collect(), CheckpointMode::Incremental)
        }
    };
    let files = names
        .into_iter()
        .map(|name| SourceFile {
            path: dir.join(&name),
            name,
        })
        .collect();
    let lsn = upload.metadata.disk_consistent_lsn;
    let req = CheckpointRequest {
        tenant,
        timeline,
        metadata: upload.metadata.clone(),
        files,
        mode,
    };
    // Layer files are immutable: a full rescan reads only names (and sizes) the store lacks;
    // the files the loop was told are new are read whatever the store has.
    let opts = CheckpointOptions {
        immutable_names: mode == CheckpointMode::Full,
        ..CheckpointOptions::default()
    };
    match shared
        .writer
        .checkpoint_with(req, opts, progress::none())
        .await
    {
        Ok(r) => {
            shared.metrics.uploaded(&r);
            tracing::info!(
                new_chunks = r.new_chunks,
                stored = r.new_stored_bytes,
                "uploaded"
            );
        }
        // Recorded before (by an earlier run that crashed before it could report, say).
        Err(Error::AlreadyExists(_)) => tracing::info!("checkpoint already in the store"),
        Err(e) => return Err(e),
    }
    shared.durable.durable(key, lsn);
    shared.set_local_lsn(key, lsn);
    Ok(shared.local_lsn(&key).unwrap_or(lsn))
}
