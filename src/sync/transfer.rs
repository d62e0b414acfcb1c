//! One timeline's sync task: download the store's newer checkpoint into the workdir, upload
//! the local checkpoint the store lacks.
//!
//! Owns the transfers themselves (through `Writer::checkpoint` and `Writer::restore`, which keep
//! the store's write order and the workdir's temporary-name-then-rename rule). Must not schedule,
//! retry or report states: that is the loop's job in the parent module.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::Lsn;
use crate::progress;
use crate::sync::queue::{Upload, UploadFiles};
use crate::sync::{Shared, TimelineKey, workdir};
use crate::write::{CheckpointMode, CheckpointRequest, SourceFile};

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
        ready = Some(download(&shared, key).await?);
    }
    if let Some(upload) = upload {
        ready = Some(upload_checkpoint(&shared, key, &upload).await?);
    }
    ready.ok_or_else(|| Error::InvalidInput("empty sync task".into()))
}

async fn download(shared: &Shared, key: TimelineKey) -> Result<Lsn> {
    let (tenant, timeline) = key;
    let dir = workdir::timeline_dir(&shared.workdir, &tenant, &timeline);
    let local = shared
        .local_lsns
        .lock()
        .expect("lsn lock")
        .get(&key)
        .copied();
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
    if local.is_some_and(|l| l >= remote) {
        return Ok(local.expect("checked"));
    }
    let report = shared
        .writer
        .restore(&tenant, &timeline, Some(remote), &dir, progress::none())
        .await?;
    tracing::info!(
        files = report.files,
        reused = report.files_reused,
        "downloaded"
    );
    shared
        .local_lsns
        .lock()
        .expect("lsn lock")
        .insert(key, remote);
    Ok(remote)
}

async fn upload_checkpoint(shared: &Shared, key: TimelineKey, upload: &Upload) -> Result<Lsn> {
    let (tenant, timeline) = key;
    let dir = workdir::timeline_dir(&shared.workdir, &tenant, &timeline);
    let (names, mode) = match &upload.files {
        UploadFiles::All => {
            let names = workdir::layer_files(&dir).map_err(|e| Error::io("list", &dir, e))?;
            (names, CheckpointMode::Full)
        }
        UploadFiles::New(names) => (names.iter().cloned().collect(), CheckpointMode::Incremental),
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
    match shared.writer.checkpoint(req, progress::none()).await {
        Ok(r) => tracing::info!(
            new_chunks = r.new_chunks,
            stored = r.new_stored_bytes,
            "uploaded"
        ),
        // Recorded before (by an earlier run that crashed before it could report, say).
        Err(Error::AlreadyExists(_)) => tracing::info!("checkpoint already in the store"),
        Err(e) => return Err(e),
    }
    let mut lsns = shared.local_lsns.lock().expect("lsn lock");
    let entry = lsns.entry(key).or_insert(lsn);
    *entry = (*entry).max(lsn);
    Ok(*entry)
}
