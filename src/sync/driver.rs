//! The sync loop's driver: takes commands, starts tasks within the concurrency limit, and
//! records their outcomes (success, backoff, eviction) into states, watches and metrics.
//!
//! Owns scheduling decisions and the work of evicted timelines (kept, never dropped, until new
//! work is scheduled for them). Must not transfer anything itself (see `transfer`) nor merge
//! work (see `queue`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::backoff::Backoff;
use crate::error::{Error, Result};
use crate::id::Lsn;
use crate::sync::queue::{Queue, Task};
use crate::sync::{Command, RemoteStorageConfig, Shared, TimelineKey, TimelineSyncState, transfer};

/// Up to 25% of a failed task's backoff is taken off at random, so retries of many timelines
/// spread.
const SYNC_JITTER: f64 = 0.25;

pub(super) struct SyncLoop {
    shared: Arc<Shared>,
    remote: RemoteStorageConfig,
    queue: Queue,
    /// Consecutive failures per timeline.
    attempts: HashMap<TimelineKey, u32>,
    /// The work of evicted timelines, merged into the next work scheduled for them.
    parked: HashMap<TimelineKey, Task>,
    waiters: Vec<oneshot::Sender<()>>,
}

type TaskOutcome = (TimelineKey, Task, Result<Lsn>);

impl SyncLoop {
    pub(super) fn new(shared: Arc<Shared>, remote: RemoteStorageConfig, queue: Queue) -> Self {
        SyncLoop {
            shared,
            remote,
            queue,
            attempts: HashMap::new(),
            parked: HashMap::new(),
            waiters: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut stop: watch::Receiver<bool>,
        cancel: CancellationToken,
        stopped: CancellationToken,
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
            self.shared
                .metrics
                .queue_length
                .set(self.queue.len() as i64);
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
                    Some(Command::Schedule(key, task)) => self.schedule(key, task),
                    Some(Command::WaitIdle(w)) => self.waiters.push(w),
                    None => stopping = true,
                },
                Some(key) = backoff_rx.recv(), if !stopping => self.queue.release(key, None),
                Some(done) = running.join_next(), if !running.is_empty() => match done {
                    Ok(outcome) => self.finish(outcome, &backoff_tx),
                    // Tasks catch their panics; only an abort gets here, and only the loop aborts.
                    Err(e) => tracing::error!("sync task ended abnormally: {e}"),
                },
                _ = stop.changed(), if !stopping => stopping = true,
                _ = cancel.cancelled() => {
                    tracing::warn!(running = running.len(), "sync loop cancelled");
                    running.abort_all();
                    break;
                }
            }
        }
        stopped.cancel();
        tracing::info!("sync loop stopped");
    }

    /// Queues new work, with the work an eviction kept for the timeline in front of it.
    fn schedule(&mut self, key: TimelineKey, task: Task) {
        if let Some(upload) = &task.upload {
            self.shared
                .set_local_lsn(key, upload.metadata.disk_consistent_lsn);
        }
        match self.parked.remove(&key) {
            Some(mut kept) => {
                tracing::info!(tenant = %key.0, timeline = %key.1, "retrying an evicted timeline");
                kept.merge(task);
                self.queue.push(key, kept);
            }
            None => self.queue.push(key, task),
        }
    }

    /// Records a task's outcome: success resets the error count; failure backs off or evicts.
    fn finish(
        &mut self,
        (key, task, result): TaskOutcome,
        backoff_tx: &mpsc::UnboundedSender<TimelineKey>,
    ) {
        let (tenant, timeline) = key;
        self.shared.metrics.tasks_done.inc();
        let e = match result {
            Ok(lsn) => {
                self.attempts.remove(&key);
                self.queue.release(key, None);
                self.shared
                    .sink
                    .timeline_state(tenant, timeline, TimelineSyncState::Ready(lsn));
                return;
            }
            Err(e) => e,
        };
        self.shared.metrics.tasks_failed.inc();
        let n = self.attempts.entry(key).or_insert(0);
        *n += 1;
        let panicked = matches!(e, Error::TaskFailed(_));
        if panicked || *n >= self.remote.max_sync_errors {
            tracing::error!(%tenant, %timeline, "evicted after {n} failures: {e}");
            self.evict(key, task, e);
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

    /// Gives up on a timeline for now: frees it, keeps its work (with anything queued for it
    /// since) for the next schedule, and reports `Evicted` to the sink and its watch.
    fn evict(&mut self, key: TimelineKey, mut task: Task, e: Error) {
        self.attempts.remove(&key);
        self.queue.release(key, None);
        if let Some(newer) = self.queue.remove(&key) {
            task.merge(newer);
        }
        self.parked.insert(key, task);
        self.shared.metrics.evictions.inc();
        self.shared.durable.failed(key, e.to_string());
        let local = self.shared.local_lsn(&key);
        self.shared
            .sink
            .timeline_state(key.0, key.1, TimelineSyncState::Evicted(local));
    }
}

/// Runs one timeline's task (download first if asked and the store is newer, then upload); a
/// panic becomes [`Error::TaskFailed`], so the loop learns which timeline it was.
async fn run_task(shared: Arc<Shared>, key: TimelineKey, task: Task) -> TaskOutcome {
    let (tenant, timeline) = key;
    let lsn = task
        .upload
        .as_ref()
        .map(|u| u.metadata.disk_consistent_lsn.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("sync", %tenant, %timeline, lsn, download = task.download);
    let work = transfer::execute(shared, key, task.download, task.upload.clone());
    let result = match AssertUnwindSafe(work.instrument(span)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown payload".into());
            tracing::error!(%tenant, %timeline, "sync task panicked: {msg}");
            Err(Error::TaskFailed(format!(
                "the sync task of timeline {tenant}/{timeline} panicked: {msg}"
            )))
        }
    };
    (key, task, result)
}
