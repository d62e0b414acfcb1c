//! The sync loop: keeps a pageserver's timelines and a layercas store in step, in the background.
//!
//! # Overview
//! The pageserver links this module, calls [`start_local_timeline_sync`] once at startup with
//! its `[remote_storage]` section ([`RemoteStorageConfig`]), a sink for timeline states, its
//! metrics registry and a cancellation token. It then hands every new checkpoint to
//! [`SyncHandle::schedule_upload`] (the timeline's new layer files and its `metadata` file's
//! bytes, kept verbatim) and asks for timelines with [`SyncHandle::schedule_timeline_download`].
//! A tokio task does the work, a few timelines at a time, and reports each timeline's
//! [`TimelineSyncState`] to the sink.
//!
//! # API
//! - [`start_local_timeline_sync`]: scans the workdir (`tenants/<t>/timelines/<tl>/`, metadata
//!   read in the configured [`MetadataFormat`]) off the async runtime, lists the store's
//!   manifests once (under `manifests/`, never the whole store), reports every timeline's state
//!   once, schedules uploads of local checkpoints the store lacks, and starts the loop. A
//!   timeline it cannot read is in [`SyncStartupData::skipped`] with the reason, never silently
//!   left out. Without remote storage it only reports local timelines as `Ready`.
//! - Scheduling returns at once; work for one timeline is merged, never dropped (an evicted
//!   timeline's work is kept and merged into the next work scheduled for it).
//! - Per-timeline completion: [`SyncHandle::remote_timeline`] is a watch of the timeline's
//!   remote consistent LSN; [`SyncHandle::wait_uploaded`] waits until an LSN is durable.
//! - [`SyncHandle::wait_idle`] waits until nothing is pending or running; [`SyncHandle::shutdown`]
//!   finishes the tasks in flight, starts no new one, and returns.
//!
//! # Cancellation
//! The token given at start cancels startup and, later, the loop: running tasks are dropped at
//! their next await (as if the process died there, which the write order makes safe: the store
//! keeps unreferenced packs at worst, a download leaves `.layercas-*.tmp` files that scans skip
//! and `workdir::remove_temporaries` removes), and every wait returns [`Error::Cancelled`].
//! Each wait takes its own token too. [`SyncHandle::shutdown`] is the graceful stop.
//!
//! # Consistency
//! - Uploads use the store's write order (packs, then index object, then manifest created
//!   conditionally), so a checkpoint is visible (and reported durable) only when complete.
//! - One writer per timeline: two loops may share a store only for disjoint sets of tenants.
//! - Downloads write each layer file under a temporary name and rename it when its hash matched;
//!   the `metadata` file (the recorded bytes, verbatim) is written last.
//!
//! # Retries and errors
//! - Requests are retried by the backend's wrappers (transient errors only; attempts, delays and
//!   timeouts from the configuration). A task that still fails goes back to the queue, merged with
//!   anything scheduled since, after an exponential backoff (`base_backoff` doubling to
//!   `max_backoff`) during which other timelines go on.
//! - After `max_sync_errors` consecutive failures, or at once when its task panics, the timeline
//!   is reported `Evicted`, its watch carries the error and its work is kept; scheduling new
//!   work for it tries again with both.
//!
//! # Blocking I/O
//! Workdir scans, file listings and whole transfers (which read and write local files) run on
//! tokio's blocking pool, never on the async workers; so does opening a local store. A fifo in
//! the workdir is refused, never opened in a way that blocks (`runtime_tests` holds each of these
//! points and checks the runtime goes on).

pub(crate) mod config;
mod driver;
pub mod durable;
mod io_gate;
pub mod metrics;
pub mod once;
pub(crate) mod queue;
pub mod sources;
mod startup;
pub(crate) mod state;
mod transfer;
pub mod workdir;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::format::metadata::{MetadataFormat, TimelineMetadata};
use crate::id::{Lsn, TenantId, TimelineId};
#[cfg(test)]
use crate::store::Store;
use crate::write::Writer;
pub use config::{RemoteStorageConfig, RemoteStorageKind};
pub use durable::RemoteTimeline;
pub use metrics::SyncMetrics;
pub use queue::{Queue, Task, Upload, UploadFiles};
pub use state::{StateBoard, SyncStateSink, TimelineKey, TimelineSyncState};
/// The token type the loop's start and waits take (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;
pub use workdir::Skipped;

/// What the sync loop needs to know.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The pageserver's workdir (holding `tenants/`).
    pub workdir: PathBuf,
    /// The store; `None` runs without remote storage.
    pub remote: Option<RemoteStorageConfig>,
}

impl SyncConfig {
    /// The workdir and the `[remote_storage]` section of a TOML document (none: no remote).
    pub fn from_toml(workdir: impl Into<PathBuf>, toml: &str) -> Result<SyncConfig> {
        Ok(SyncConfig {
            workdir: workdir.into(),
            remote: RemoteStorageConfig::from_toml(toml)?,
        })
    }
}

/// What the loop is started with besides its configuration.
#[derive(Clone)]
pub struct SyncOptions {
    /// Where timeline states go.
    pub sink: Arc<dyn SyncStateSink>,
    /// Metric handles (registered by the caller, or [`SyncMetrics::default`]).
    pub metrics: SyncMetrics,
    /// Cancels startup and then the running loop.
    pub cancel: CancellationToken,
}

impl SyncOptions {
    /// States to `sink`, metrics nobody reads, a token nobody cancels.
    pub fn new(sink: Arc<dyn SyncStateSink>) -> SyncOptions {
        SyncOptions {
            sink,
            metrics: SyncMetrics::default(),
            cancel: CancellationToken::new(),
        }
    }
}

/// What startup found, and the loop's handle when remote storage is configured.
pub struct SyncStartupData {
    /// Every timeline's initial state (also delivered to the sink).
    pub states: BTreeMap<TimelineKey, TimelineSyncState>,
    /// Timelines the workdir scan could not take (unreadable metadata, symbolic links...).
    pub skipped: Vec<Skipped>,
    /// The running loop, or `None` when no remote storage is configured.
    pub handle: Option<SyncHandle>,
}

/// Scans the workdir and the store, reports initial states to `sink`, registers the loop's
/// metrics (and the backend's) in `registry`, and starts the loop; `cancel` stops it.
pub async fn start_local_timeline_sync(
    config: &SyncConfig,
    sink: impl SyncStateSink,
    registry: &mut prometheus_client::registry::Registry,
    cancel: &CancellationToken,
) -> Result<SyncStartupData> {
    let opts = SyncOptions {
        sink: Arc::new(sink),
        metrics: SyncMetrics::register(registry),
        cancel: cancel.clone(),
    };
    match &config.remote {
        None => {
            let scan =
                startup::scan_workdir(config.workdir.clone(), MetadataFormat::Auto, &opts.cancel);
            let scan = scan.await?;
            let states = scan
                .timelines
                .iter()
                .map(|(k, t)| (*k, TimelineSyncState::Ready(t.metadata.disk_consistent_lsn)))
                .collect();
            startup::report_all(&*opts.sink, &states);
            Ok(SyncStartupData {
                states,
                skipped: scan.skipped,
                handle: None,
            })
        }
        Some(remote) => {
            let opened =
                startup::cancellable(&opts.cancel, "opening the store", remote.open()).await?;
            SyncMetrics::register_backend(registry, opened.metrics);
            startup::start_with_options(config.workdir.clone(), remote, opened.backend, opts).await
        }
    }
}

/// [`start_with_options`] with [`SyncOptions::new`].
pub async fn start_with_backend(
    workdir: PathBuf,
    remote: &RemoteStorageConfig,
    backend: DynBackend,
    sink: Arc<dyn SyncStateSink>,
) -> Result<SyncStartupData> {
    start_with_backend_opts(workdir, remote, backend, SyncOptions::new(sink)).await
}

/// [`start_local_timeline_sync`] over a backend the caller built (e.g. wrapped for metrics or
/// fault injection).
pub async fn start_with_backend_opts(
    workdir: PathBuf,
    remote: &RemoteStorageConfig,
    backend: DynBackend,
    opts: SyncOptions,
) -> Result<SyncStartupData> {
    startup::start_with_options(workdir, remote, backend, opts).await
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
    durable: Arc<durable::DurableBoard>,
    format: MetadataFormat,
    /// Cancelled when the loop has ended (or its start token fired).
    stopped: CancellationToken,
}

impl SyncHandle {
    /// Schedules an upload of a timeline's new checkpoint: `new_layer_files` (names in the
    /// timeline directory) added, and `metadata_file`, the timeline's `metadata` file as written
    /// (recorded verbatim, read in the configured format). Returns the checkpoint's LSN, to wait
    /// for with [`SyncHandle::wait_uploaded`]; an unreadable file is an error naming the timeline.
    pub fn schedule_upload(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        new_layer_files: Vec<String>,
        metadata_file: &[u8],
    ) -> Result<Lsn> {
        let metadata = self.format.parse(metadata_file).map_err(|e| {
            Error::corrupt(format!("metadata file of timeline {tenant}/{timeline}"), e)
        })?;
        let lsn = metadata.disk_consistent_lsn;
        self.schedule_timeline_checkpoint_upload(tenant, timeline, new_layer_files, metadata)?;
        Ok(lsn)
    }

    /// [`SyncHandle::schedule_upload`] with metadata already parsed. Returns at once.
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
        self.schedule((tenant, timeline), Some(upload), false)
    }

    /// Schedules a download of a timeline's newest checkpoint into the workdir. Returns at once.
    pub fn schedule_timeline_download(&self, tenant: TenantId, timeline: TimelineId) -> Result<()> {
        self.schedule((tenant, timeline), None, true)
    }

    fn schedule(&self, key: TimelineKey, upload: Option<Upload>, download: bool) -> Result<()> {
        self.durable.clear_error(key);
        self.send(Command::Schedule(key, Task { upload, download }))
    }

    /// A watch of the timeline's remote consistent LSN (and of its eviction error).
    pub fn remote_timeline(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
    ) -> watch::Receiver<RemoteTimeline> {
        self.durable.subscribe((tenant, timeline))
    }

    /// Waits until the store durably holds the timeline at `lsn` or later; returns the remote
    /// consistent LSN. Fails with [`Error::TaskFailed`] if the timeline is evicted first, and with
    /// [`Error::Cancelled`] when `cancel` fires or the loop stops.
    pub async fn wait_uploaded(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        lsn: Lsn,
        cancel: &CancellationToken,
    ) -> Result<Lsn> {
        let rx = self.remote_timeline(tenant, timeline);
        durable::wait_durable(rx, lsn, cancel, &self.stopped).await
    }

    /// Waits until nothing is pending, backing off or running.
    pub async fn wait_idle(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::WaitIdle(tx))?;
        rx.await
            .map_err(|_| Error::Cancelled("the sync loop stopped".into()))
    }

    /// Lets running tasks finish, starts no new one, and waits for the loop to end (or for the
    /// start token to cancel it).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.lock().await.take() {
            if let Err(e) = join.await {
                tracing::error!("the sync loop ended abnormally: {e}");
            }
        }
    }

    fn send(&self, c: Command) -> Result<()> {
        self.tx
            .send(c)
            .map_err(|_| Error::Cancelled("the sync loop has shut down".into()))
    }
}

/// What the loop's tasks share.
struct Shared {
    writer: Writer,
    workdir: PathBuf,
    sink: Arc<dyn SyncStateSink>,
    /// The LSN each timeline has locally, as far as the loop knows (scanned, scheduled or
    /// downloaded).
    local_lsns: Mutex<HashMap<TimelineKey, Lsn>>,
    durable: Arc<durable::DurableBoard>,
    metrics: SyncMetrics,
    /// The start token: stops transfers at their next await.
    cancel: CancellationToken,
}

impl Shared {
    fn local_lsn(&self, key: &TimelineKey) -> Option<Lsn> {
        self.local_lsns.lock().expect("lsn lock").get(key).copied()
    }

    /// Records that `key` has `lsn` locally (keeps the newest) and updates the lag gauge.
    fn set_local_lsn(&self, key: TimelineKey, lsn: Lsn) {
        let mut lsns = self.local_lsns.lock().expect("lsn lock");
        let entry = lsns.entry(key).or_insert(lsn);
        *entry = (*entry).max(lsn);
        self.update_lag(&lsns);
    }

    fn update_lag(&self, lsns: &HashMap<TimelineKey, Lsn>) {
        let lag = self.durable.max_lag(lsns);
        self.metrics
            .upload_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
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

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod runtime_tests;
