//! Sync loop startup: scanning the workdir (on the blocking pool), listing the store's
//! manifests once, deciding every timeline's first state and the uploads to queue, and spawning
//! the loop; all of it cancellable.
//!
//! Owns startup only. Must not run tasks (see `driver`) nor transfer anything.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::format::metadata::MetadataFormat;
use crate::id::Lsn;
use crate::store::Store;
use crate::sync::queue::{Queue, Task, Upload, UploadFiles};
use crate::sync::{
    CancellationToken, RemoteStorageConfig, Shared, SyncHandle, SyncOptions, SyncStartupData,
    SyncStateSink, TimelineKey, TimelineSyncState, driver, durable, workdir,
};
use crate::write::Writer;

pub(super) async fn start_with_options(
    workdir: PathBuf,
    remote: &RemoteStorageConfig,
    backend: DynBackend,
    opts: SyncOptions,
) -> Result<SyncStartupData> {
    remote.validate().map_err(Error::InvalidInput)?;
    let scan = scan_workdir(workdir.clone(), remote.metadata_format, &opts.cancel).await?;
    let (writer, remote_lsns) = cancellable(&opts.cancel, "sync startup", async {
        let store = Store::open_or_create(backend, remote.store.clone()).await?;
        let mut remote_lsns: HashMap<TimelineKey, Lsn> = HashMap::new();
        for r in store.list_all_manifests().await? {
            remote_lsns.insert((r.tenant, r.timeline), r.lsn); // sorted: the newest wins
        }
        Ok((Writer::new(store).await?, remote_lsns))
    })
    .await?;

    let (states, queue) = initial_states(&scan.timelines, &remote_lsns);
    report_all(&*opts.sink, &states);
    let durable = Arc::new(durable::DurableBoard::default());
    remote_lsns
        .iter()
        .for_each(|(k, l)| durable.durable(*k, *l));
    let local_lsns = scan
        .timelines
        .iter()
        .map(|(k, t)| (*k, t.metadata.disk_consistent_lsn))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = opts.cancel.child_token();
    let shared = Arc::new(Shared {
        writer,
        workdir,
        sink: opts.sink,
        local_lsns: Mutex::new(local_lsns),
        durable: durable.clone(),
        metrics: opts.metrics,
        cancel: opts.cancel.clone(),
    });
    let sync_loop = driver::SyncLoop::new(shared, remote.clone(), queue);
    let join = tokio::spawn(sync_loop.run(rx, stop_rx, opts.cancel.clone(), stopped.clone()));
    let handle = SyncHandle {
        tx,
        stop: Arc::new(stop_tx),
        join: Arc::new(tokio::sync::Mutex::new(Some(join))),
        durable,
        format: remote.metadata_format,
        stopped,
    };
    Ok(SyncStartupData {
        states,
        skipped: scan.skipped,
        handle: Some(handle),
    })
}

/// Runs `fut` unless `cancel` fires first.
pub(super) async fn cancellable<T>(
    cancel: &CancellationToken,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => Err(Error::Cancelled(what.to_string())),
    }
}

/// Every timeline's state at startup, and an upload queued for each local checkpoint the store
/// lacks.
pub(super) fn initial_states(
    local: &BTreeMap<TimelineKey, workdir::LocalTimeline>,
    remote_lsns: &HashMap<TimelineKey, Lsn>,
) -> (BTreeMap<TimelineKey, TimelineSyncState>, Queue) {
    let mut states = BTreeMap::new();
    let mut queue = Queue::default();
    for (key, t) in local {
        let local_lsn = t.metadata.disk_consistent_lsn;
        match remote_lsns.get(key) {
            Some(&r) if r > local_lsn => {
                states.insert(*key, TimelineSyncState::AwaitsDownload(r));
            }
            other => {
                if other.is_none_or(|&r| r < local_lsn) {
                    let upload = Upload {
                        files: UploadFiles::All,
                        metadata: t.metadata.clone(),
                    };
                    queue.push(
                        *key,
                        Task {
                            upload: Some(upload),
                            download: false,
                        },
                    );
                }
                states.insert(*key, TimelineSyncState::Ready(local_lsn));
            }
        }
    }
    for (key, &lsn) in remote_lsns {
        states
            .entry(*key)
            .or_insert(TimelineSyncState::CloudOnly(lsn));
    }
    (states, queue)
}

/// Scans the workdir on the blocking pool.
pub(super) async fn scan_workdir(
    workdir: PathBuf,
    format: MetadataFormat,
    cancel: &CancellationToken,
) -> Result<workdir::Scan> {
    let scan = tokio::task::spawn_blocking(move || {
        workdir::scan(&workdir, format).map_err(|e| Error::io("scan workdir", &workdir, e))
    });
    let joined = cancellable(cancel, "scanning the workdir", async {
        scan.await
            .map_err(|e| Error::TaskFailed(format!("workdir scan: {e}")))
    });
    joined.await?
}

pub(super) fn report_all(
    sink: &dyn SyncStateSink,
    states: &BTreeMap<TimelineKey, TimelineSyncState>,
) {
    for ((t, tl), s) in states {
        sink.timeline_state(*t, *tl, *s);
    }
}
