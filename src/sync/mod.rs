//! The sync loop: keeps a pageserver's timelines and a layercas store in step, in the background.
//!
//! # Overview
//! The pageserver links this module, calls [`start_local_timeline_sync`] once at startup, then
//! hands every new checkpoint to [`SyncHandle::schedule_timeline_checkpoint_upload`] and asks for
//! timelines with [`SyncHandle::schedule_timeline_download`]. A tokio task does the work, a few
//! timelines at a time, and reports each timeline's [`TimelineSyncState`] to a sink.
//!
//! # API
//! - [`start_local_timeline_sync`]: scans the workdir (`tenants/<t>/timelines/<tl>/`), lists the
//!   store's manifests once (under `manifests/`, never the whole store), reports every timeline's
//!   state once, schedules uploads of local checkpoints the store lacks, and starts the loop.
//!   Without remote storage it only reports local timelines with valid metadata as `Ready`.
//! - Scheduling returns at once; work for one timeline is merged, never dropped.
//! - [`SyncHandle::wait_idle`] waits until nothing is pending or running; [`SyncHandle::shutdown`]
//!   finishes the tasks in flight, starts no new one, and returns.
//!
//! # Consistency
//! - Uploads use the store's write order (packs, then index object, then manifest created
//!   conditionally), so a checkpoint is visible only when complete.
//! - One writer per timeline: two loops may share a store only for disjoint sets of tenants.
//!   Each deduplicates against everything stored before it started (the index is loaded at
//!   startup) and against what it wrote itself; before a download it merges index objects others
//!   wrote since.
//! - Downloads write each layer file under a temporary name and rename it when its hash matched;
//!   the `metadata` file is written last, so a timeline never looks complete before it is. Files
//!   already present with the right size and hash are kept.
//!
//! # Retries and errors
//! - Requests are retried by the backend's wrappers (transient errors only). A task that still
//!   fails goes back to the queue, merged with anything scheduled since, after an exponential
//!   backoff (`base_backoff` doubling to `max_backoff`) during which other timelines go on.
//! - After `max_sync_errors` consecutive failures the timeline is reported `Evicted` and its task
//!   dropped; scheduling new work for it tries again.
//!
//! # Cancellation
//! Shutdown lets running tasks finish (a task is never cut in the middle of a write) and starts
//! nothing new. Pending work is not lost: it is derived from the workdir, and the next startup
//! schedules an upload for every timeline whose local checkpoint the store lacks.
//!
//! # Crash consistency
//! A crash at any point leaves the store consistent (unreferenced packs at worst) and the workdir
//! without half-written layer files under final names; restarting converges.

pub(crate) mod config;
pub mod once;
pub(crate) mod queue;
pub mod sources;
pub(crate) mod state;
mod transfer;
pub mod workdir;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::backend::DynBackend;
use crate::backend::backoff::Backoff;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::metadata::TimelineMetadata;
use crate::id::{Lsn, TenantId, TimelineId};
use crate::store::Store;
use crate::write::Writer;
pub use config::{RemoteStorageConfig, RemoteStorageKind};
use queue::{Queue, Task, Upload, UploadFiles};
pub use state::{StateBoard, SyncStateSink, TimelineKey, TimelineSyncState};

/// What the sync loop needs to know.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The pageserver's workdir (holding `tenants/`).
    pub workdir: PathBuf,
    /// The store; `None` runs without remote storage.
    pub remote: Option<RemoteStorageConfig>,
}

/// What startup found, and the loop's handle when remote storage is configured.
pub struct SyncStartupData {
    /// Every timeline's initial state (also delivered to the sink).
    pub states: BTreeMap<TimelineKey, TimelineSyncState>,
    /// The running loop, or `None` when no remote storage is configured.
    pub handle: Option<SyncHandle>,
}

/// Scans the workdir and the store, reports initial states, and starts the loop.
pub async fn start_local_timeline_sync(
    config: &SyncConfig,
    sink: Arc<dyn SyncStateSink>,
) -> Result<SyncStartupData> {
    match &config.remote {
        None => {
            let local = scan_workdir(config)?;
            let states = local
                .iter()
                .map(|(k, t)| (*k, TimelineSyncState::Ready(t.metadata.disk_consistent_lsn)))
                .collect();
            report_all(&*sink, &states);
            Ok(SyncStartupData {
                states,
                handle: None,
            })
        }
        Some(remote) => {
            let opened = remote.backend().await?;
            start_with_backend(config.workdir.clone(), remote, opened.backend, sink).await
        }
    }
}

/// [`start_local_timeline_sync`] over a backend the caller built (e.g. wrapped for metrics or
/// fault injection).
pub async fn start_with_backend(
    workdir: PathBuf,
    remote: &RemoteStorageConfig,
    backend: DynBackend,
    sink: Arc<dyn SyncStateSink>,
) -> Result<SyncStartupData> {
    remote.validate().map_err(Error::InvalidInput)?;
    let local = scan_workdir(&SyncConfig {
        workdir: workdir.clone(),
        remote: None,
    })?;
    let store = Store::open_or_create(backend, remote.store.clone()).await?;
    let mut remote_lsns: HashMap<TimelineKey, Lsn> = HashMap::new();
    for r in store
        .list_manifests(&layout::prefix(layout::MANIFESTS))
        .await?
    {
        remote_lsns.insert((r.tenant, r.timeline), r.lsn); // sorted: the newest wins
    }
    let writer = Writer::new(store).await?;

    let (states, queue) = initial_states(&local, &remote_lsns);
    report_all(&*sink, &states);

    let local_lsns = local
        .iter()
        .map(|(k, t)| (*k, t.metadata.disk_consistent_lsn))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        writer,
        workdir,
        sink,
        local_lsns: Mutex::new(local_lsns),
    });
    let sync_loop = SyncLoop {
        shared,
        remote: remote.clone(),
        queue,
        attempts: HashMap::new(),
        waiters: Vec::new(),
    };
    let join = tokio::spawn(sync_loop.run(rx, stop_rx));
    let handle = SyncHandle {
        tx,
        stop: Arc::new(stop_tx),
        join: Arc::new(tokio::sync::Mutex::new(Some(join))),
    };
    Ok(SyncStartupData {
        states,
        handle: Some(handle),
    })
}

/// Every timeline's state at startup, and an upload queued for each local checkpoint the store
/// lacks.
fn initial_states(
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

fn scan_workdir(config: &SyncConfig) -> Result<BTreeMap<TimelineKey, workdir::LocalTimeline>> {
    workdir::scan(&config.workdir).map_err(|e| Error::io("scan workdir", &config.workdir, e))
}

fn report_all(sink: &dyn SyncStateSink, states: &BTreeMap<TimelineKey, TimelineSyncState>) {
    for ((t, tl), s) in states {
        sink.timeline_state(*t, *tl, *s);
    }
}

/// Commands to the loop.
enum Command {
    Schedule(TimelineKey, Task),
    WaitIdle(oneshot::Sender<()>),
}

/// Talks to a running sync loop. Cheap to clone.
#[derive(Clone)]
pub struct SyncHandle {
    tx: mpsc::UnboundedSender<Command>,
    stop: Arc<watch::Sender<bool>>,
    join: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl SyncHandle {
    /// Schedules an upload of a timeline's new checkpoint: `new_layer_files` (names in the
    /// timeline directory) added at `metadata.disk_consistent_lsn`. Returns at once.
    pub fn schedule_timeline_checkpoint_upload(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        new_layer_files: Vec<String>,
        metadata: TimelineMetadata,
    ) -> Result<()> {
        let upload = Upload {
            files: UploadFiles::New(new_layer_files.into_iter().collect()),
            metadata,
        };
        self.send(Command::Schedule(
            (tenant, timeline),
            Task {
                upload: Some(upload),
                download: false,
            },
        ))
    }

    /// Schedules a download of a timeline's newest checkpoint into the workdir. Returns at once.
    pub fn schedule_timeline_download(&self, tenant: TenantId, timeline: TimelineId) -> Result<()> {
        self.send(Command::Schedule(
            (tenant, timeline),
            Task {
                upload: None,
                download: true,
            },
        ))
    }

    /// Waits until nothing is pending, backing off or running.
    pub async fn wait_idle(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::WaitIdle(tx))?;
        rx.await
            .map_err(|_| Error::InvalidInput("the sync loop stopped".into()))
    }

    /// Lets running tasks finish, starts no new one, and waits for the loop to end.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.lock().await.take() {
            let _ = join.await;
        }
    }

    fn send(&self, c: Command) -> Result<()> {
        self.tx
            .send(c)
            .map_err(|_| Error::InvalidInput("the sync loop has shut down".into()))
    }
}

/// What the loop's tasks share.
struct Shared {
    writer: Writer,
    workdir: PathBuf,
    sink: Arc<dyn SyncStateSink>,
    /// The LSN each timeline has locally, as far as the loop knows.
    local_lsns: Mutex<HashMap<TimelineKey, Lsn>>,
}

struct SyncLoop {
    shared: Arc<Shared>,
    remote: RemoteStorageConfig,
    queue: Queue,
    /// Consecutive failures per timeline.
    attempts: HashMap<TimelineKey, u32>,
    waiters: Vec<oneshot::Sender<()>>,
}

type TaskOutcome = (TimelineKey, Task, Result<Lsn>);

impl SyncLoop {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Backoff timers report back through a channel of their own.
        let (backoff_tx, mut backoff_rx) = mpsc::unbounded_channel::<TimelineKey>();
        let mut running: JoinSet<TaskOutcome> = JoinSet::new();
        let mut stopping = false;
        loop {
            while !stopping && running.len() < self.remote.max_concurrent_sync {
                let Some((key, task)) = self.queue.take_ready() else {
                    break;
                };
                running.spawn(run_task(self.shared.clone(), key, task));
            }
            if self.queue.is_idle() && running.is_empty() {
                self.waiters.drain(..).for_each(|w| {
                    let _ = w.send(());
                });
            }
            if stopping && running.is_empty() {
                break;
            }
            tokio::select! {
                cmd = rx.recv(), if !stopping => match cmd {
                    Some(Command::Schedule(key, task)) => self.queue.push(key, task),
                    Some(Command::WaitIdle(w)) => self.waiters.push(w),
                    None => stopping = true,
                },
                Some(key) = backoff_rx.recv(), if !stopping => self.queue.release(key, None),
                Some(done) = running.join_next(), if !running.is_empty() => match done {
                    Ok(outcome) => self.finish(outcome, &backoff_tx),
                    Err(e) => tracing::error!("sync task panicked: {e}"),
                },
                _ = stop.changed(), if !stopping => stopping = true,
            }
        }
        tracing::info!("sync loop stopped");
    }

    /// Records a task's outcome: success resets the error count; failure backs off or evicts.
    fn finish(
        &mut self,
        (key, task, result): TaskOutcome,
        backoff_tx: &mpsc::UnboundedSender<TimelineKey>,
    ) {
        let (tenant, timeline) = key;
        match result {
            Ok(lsn) => {
                self.attempts.remove(&key);
                self.queue.release(key, None);
                self.shared
                    .sink
                    .timeline_state(tenant, timeline, TimelineSyncState::Ready(lsn));
            }
            Err(e) => {
                let n = self.attempts.entry(key).or_insert(0);
                *n += 1;
                if *n >= self.remote.max_sync_errors {
                    tracing::error!(%tenant, %timeline, "giving up after {n} failures: {e}");
                    self.attempts.remove(&key);
                    self.queue.release(key, None);
                    let local = self
                        .shared
                        .local_lsns
                        .lock()
                        .expect("lsn lock")
                        .get(&key)
                        .copied();
                    self.shared.sink.timeline_state(
                        tenant,
                        timeline,
                        TimelineSyncState::Evicted(local),
                    );
                    return;
                }
                let delay = Backoff {
                    base: self.remote.base_backoff,
                    max: self.remote.max_backoff,
                    jitter: SYNC_JITTER,
                }
                .delay(*n);
                tracing::warn!(%tenant, %timeline, attempt = *n, ?delay, "sync task failed, will retry: {e}");
                self.queue.release(key, Some(task));
                self.queue.hold(key);
                let tx = backoff_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(key);
                });
            }
        }
    }
}

/// Up to 25% of a failed task's backoff is taken off at random, so retries of many timelines
/// spread.
const SYNC_JITTER: f64 = 0.25;

/// Runs one timeline's task: download first (if asked and the store is newer), then upload.
async fn run_task(shared: Arc<Shared>, key: TimelineKey, task: Task) -> TaskOutcome {
    let (tenant, timeline) = key;
    let lsn = task
        .upload
        .as_ref()
        .map(|u| u.metadata.disk_consistent_lsn.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("sync", %tenant, %timeline, lsn, download = task.download);
    let result = transfer::execute(shared, key, task.download, task.upload.clone())
        .instrument(span)
        .await;
    (key, task, result)
}

/// Compile-time check: the futures the loop spawns must be `Send` for every caller; a
/// higher-ranked borrow in a stream adapter breaks that silently until someone spawns them.
#[cfg(test)]
#[allow(dead_code)]
fn public_futures_are_send(w: &'static Writer, s: &'static Store) {
    use crate::progress;
    use crate::write::{CheckpointMode, CheckpointRequest};
    fn send<T: Send>(_: T) {}
    let (t, tl) = (TenantId([0; 16]), TimelineId([0; 16]));
    send(s.checkpoint_state(&t, &tl, None));
    send(w.refresh_index());
    send(w.restore(&t, &tl, None, std::path::Path::new("/"), progress::none()));
    send(w.checkpoint(
        CheckpointRequest {
            tenant: t,
            timeline: tl,
            metadata: TimelineMetadata::at(Lsn(1)),
            files: vec![],
            mode: CheckpointMode::Full,
        },
        progress::none(),
    ));
}
