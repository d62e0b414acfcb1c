//! layercas: a content-addressed, deduplicating archive store for pageserver timelines.
//!
//! A pageserver keeps each timeline as immutable layer files plus a `metadata` file. layercas
//! records checkpoints of timelines into a store (a local directory or S3), cutting files into
//! content-defined chunks, storing each distinct chunk once (compressed, in large pack objects),
//! and restores any recorded checkpoint byte-identically. The on-store format is specified in
//! `format-spec/README.md`.
//!
//! # Layout
//! Folders are layers; each module's doc says what it owns and what it must not touch.
//! - [`format`]: pure encoding of every stored object (envelope, config, pack, index, manifest,
//!   metadata), chunk boundaries, and the key layout. No I/O.
//! - [`backend`]: the object-store trait, the local and S3 implementations, the layers around
//!   them (retry, timeout, limit, metrics, fault injection) and `open`, which stacks them.
//! - [`store`]: an opened store and the reads every operation shares.
//! - [`write`]: recording checkpoints (chunk, pack, index, manifest, in that order).
//! - `restore` ([`Store::restore_timeline`]), [`verify`], [`inspect`]: reading a store back,
//!   checking it, summarising it.
//! - [`gc`]: retention, compaction and reclamation; writers announce what they reference with
//!   intent objects (`write`'s fence), so gc never waits for them.
//! - [`sync`]: the pageserver's front door, a loop that keeps a workdir and a store in step.
//! - [`id`], `error` ([`Error`], [`Result`]), [`progress`]: types shared by all of the above.
//! - `testkit` (feature `testkit`): sample workdirs and the backend conformance suite.
//!
//! The items a pageserver and `casctl` need are re-exported at the top: [`Store`], [`Writer`]
//! and its request types, the restore, verify and gc entry points, the sync front door
//! ([`start_local_timeline_sync`]), the ids, [`Error`]/[`Result`], and [`open_location`] /
//! [`StackConfig`] for opening a backend with the standard layers around it.
//!
//! # Example
//! ```no_run
//! # async fn example() -> layercas::Result<()> {
//! use std::sync::Arc;
//! use layercas::{backend::local::LocalBackend, StoreConfig, Store};
//! use layercas::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
//! use layercas::{Lsn, TimelineMetadata, progress};
//!
//! let backend = Arc::new(LocalBackend::new("/tmp/store").expect("store dir"));
//! let store = Store::open_or_create(backend, StoreConfig::default_config()).await?;
//! let (tenant, timeline) = ("00112233445566778899aabbccddeeff".parse().unwrap(), "ffeeddccbbaa99887766554433221100".parse().unwrap());
//! let writer = Writer::new(store.clone()).await?;
//! let files = vec![SourceFile { name: "layer_1".into(), path: "/data/layer_1".into() }];
//! let metadata = TimelineMetadata::at(Lsn(0x16_B374_D848));
//! let req = CheckpointRequest { tenant, timeline, metadata, files, mode: CheckpointMode::Full };
//! writer.checkpoint(req, progress::none()).await?;
//! store.restore_timeline(&tenant, &timeline, None, "/tmp/restored".as_ref(), progress::none()).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod backend;
mod error;
pub mod format;
pub mod gc;
pub mod id;
pub mod inspect;
pub mod progress;
mod restore;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;
pub mod write;

pub use backend::open::{
    Opened, StackConfig, open_existing_location, open_location, standard_stack,
};
pub use backend::{Backend, BackendError, DynBackend};
pub use error::{DecodeError, Error, Result};
pub use format::config::StoreConfig;
pub use format::metadata::{MetadataFormat, TimelineMetadata};
pub use gc::retention::{Policy, Retention};
pub use gc::{GcOptions, GcReport};
pub use id::{ChunkId, FileHash, Lsn, PackId, ParseIdError, TenantId, TimelineId};
pub use inspect::{StoreStats, TimelineListing, list_timelines, stats};
pub use progress::{DynProgress, Progress};
pub use restore::{RestoreOptions, RestorePlan, RestoreReport};
pub use store::Store;
pub use sync::once::{OnceOptions, SyncReport, sync_once};
pub use sync::{
    RemoteStorageConfig, RemoteStorageKind, SyncConfig, SyncHandle, SyncStartupData, SyncStateSink,
    TimelineKey, TimelineSyncState, start_local_timeline_sync, start_with_backend,
};
pub use sync::{RemoteTimeline, SyncMetrics, SyncOptions, start_with_backend_opts};
pub use verify::{VerifyOptions, VerifyReport, verify};
pub use write::{CheckpointMode, CheckpointReport, CheckpointRequest, SourceFile, Writer};
