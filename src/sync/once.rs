//! One pass of the sync loop, as `casctl sync` runs it: start the loop over a workdir, let it
//! converge, stop it, and summarise every timeline's final state.
//!
//! Owns the one-shot driver and its report. The loop itself (scheduling, retries, uploads,
//! downloads) lives in the parent module; this must not reach into it beyond the public handle.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::id::{TenantId, TimelineId};
use crate::progress::DynProgress;
use crate::sync::{
    RemoteStorageConfig, RemoteStorageKind, Skipped, StateBoard, SyncStateSink, TimelineSyncState,
    start_with_backend,
};

/// What one pass did.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// Every timeline's final state, sorted by tenant and timeline.
    pub timelines: Vec<SyncRow>,
    /// Timelines present locally and in step with the store.
    pub ready: usize,
    /// Timelines only (or newer) in the store, not brought back.
    pub cloud_only: usize,
    /// Timelines whose task failed too often.
    pub evicted: usize,
    /// Timelines the workdir scan could not take (unreadable metadata, symbolic links...), with
    /// the reason; none of them was synced.
    pub skipped: Vec<Skipped>,
    /// Wall-clock duration of the pass.
    pub seconds: f64,
}

/// One timeline's final state.
#[derive(Clone, Debug, Serialize)]
pub struct SyncRow {
    /// Tenant id in hex.
    pub tenant: String,
    /// Timeline id in hex.
    pub timeline: String,
    /// [`TimelineSyncState::name`].
    pub state: &'static str,
    /// The LSN the timeline reached, when it has one.
    pub lsn: Option<String>,
}

/// Options of [`sync_once`].
pub struct OnceOptions {
    /// Also bring back timelines that are only (or newer) in the store.
    pub download: bool,
    /// Timelines synced at once.
    pub max_concurrent_sync: usize,
    /// Told the number of timelines with work (`set_total`) and advanced by one per state
    /// reported after startup (a task finished, failed or was evicted).
    pub progress: DynProgress,
}

/// Forwards states to the board and counts the reports after startup as progress.
struct Counting {
    board: Arc<StateBoard>,
    progress: DynProgress,
    started: std::sync::atomic::AtomicBool,
}

impl SyncStateSink for Counting {
    fn timeline_state(&self, tenant: TenantId, timeline: TimelineId, state: TimelineSyncState) {
        self.board.timeline_state(tenant, timeline, state);
        if self.started.load(std::sync::atomic::Ordering::Relaxed) {
            self.progress.advance(1);
        }
    }
}

/// Starts the sync loop over `workdir` with `backend`, waits until it is idle, shuts it down,
/// and reports the final states. Metadata files are read in either format.
pub async fn sync_once(
    backend: DynBackend,
    workdir: PathBuf,
    opts: OnceOptions,
) -> Result<SyncReport> {
    // The kind only names the store for logs; the backend given is the one used.
    let remote = RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: workdir.clone(),
    });
    sync_once_with(backend, workdir, opts, remote).await
}

/// [`sync_once`] with the loop's settings from `remote` (a `[remote_storage]` section; its
/// `max_concurrent_sync` is replaced by the option's).
pub async fn sync_once_with(
    backend: DynBackend,
    workdir: PathBuf,
    opts: OnceOptions,
    mut remote: RemoteStorageConfig,
) -> Result<SyncReport> {
    let started = std::time::Instant::now();
    remote.max_concurrent_sync = opts.max_concurrent_sync;
    let board = Arc::new(StateBoard::default());
    let sink = Arc::new(Counting {
        board: board.clone(),
        progress: opts.progress.clone(),
        started: Default::default(),
    });
    let startup = start_with_backend(workdir, &remote, backend, sink.clone()).await?;
    let handle = startup
        .handle
        .ok_or_else(|| Error::InvalidInput("the sync loop did not start".into()))?;
    let mut work = startup.states.len() as u64;
    if opts.download {
        for ((tenant, timeline), state) in &startup.states {
            if awaits_download(state) {
                handle.schedule_timeline_download(*tenant, *timeline)?;
                work += 1;
            }
        }
    }
    opts.progress.set_total(work);
    sink.started
        .store(true, std::sync::atomic::Ordering::Relaxed);
    handle.wait_idle().await?;
    handle.shutdown().await;
    let mut report = report(&board, started);
    report.skipped = startup.skipped;
    Ok(report)
}

fn awaits_download(state: &TimelineSyncState) -> bool {
    matches!(
        state,
        TimelineSyncState::CloudOnly(_) | TimelineSyncState::AwaitsDownload(_)
    )
}

fn report(board: &StateBoard, started: std::time::Instant) -> SyncReport {
    let states = board.snapshot();
    let count = |f: fn(&TimelineSyncState) -> bool| states.values().filter(|s| f(s)).count();
    SyncReport {
        ready: count(|s| matches!(s, TimelineSyncState::Ready(_))),
        cloud_only: count(awaits_download),
        evicted: count(|s| matches!(s, TimelineSyncState::Evicted(_))),
        skipped: Vec::new(),
        timelines: states
            .into_iter()
            .map(|((t, tl), s)| SyncRow {
                tenant: t.to_string(),
                timeline: tl.to_string(),
                state: s.name(),
                lsn: s.lsn().map(|l| l.to_string()),
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    }
}
