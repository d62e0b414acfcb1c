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
//! - [`restore`], [`verify`], [`inspect`]: reading a store back, checking it, summarising it.
//! - [`gc`]: retention, compaction, reclamation and the writers' fence.
//! - [`sync`]: the pageserver's front door, a loop that keeps a workdir and a store in step.
//! - [`id`], [`error`], [`progress`]: types shared by all of the above.
//! - `testkit` (feature `testkit`): sample workdirs and the backend conformance suite.
//!
//! # Example
//! ```no_run
//! # async fn example() -> layercas::Result<()> {
//! use std::sync::Arc;
//! use layercas::{backend::local::LocalBackend, config::StoreConfig, store::Store};
//! use layercas::write::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
//! use layercas::{id::Lsn, metadata::TimelineMetadata, progress};
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

pub mod backend;
pub mod error;
pub mod format;
pub mod gc;
pub mod id;
pub mod inspect;
pub mod progress;
pub mod restore;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;
pub mod write;

pub use error::{DecodeError, Error, Result};
