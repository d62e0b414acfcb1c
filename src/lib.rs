//! layercas: a content-addressed, deduplicating archive store for pageserver timelines.
//!
//! A pageserver keeps each timeline as immutable layer files plus a `metadata` file. layercas
//! records checkpoints of timelines into a store (a local directory or S3), cutting files into
//! content-defined chunks, storing each distinct chunk once (compressed, in large pack objects),
//! and restores any recorded checkpoint byte-identically. The on-store format is specified in
//! `format-spec/README.md`.
//!
//! # Layout
//! - Formats: [`envelope`] (framing and checksums shared by every small object), [`config`],
//!   [`pack`], [`index`], [`manifest`], [`metadata`], and [`layout`] (which key holds what).
//! - Content: [`chunker`] (where chunks end), [`id`] (typed ids and LSNs).
//! - Storage: [`backend`] (the object-store trait and its implementations).
//! - Operations: [`store`] (opening a store, shared reads), [`ingest`] (recording checkpoints),
//!   [`gc`] (retention, compaction, reclamation and the writers' fence),
//!   [`restore`], [`verify`], [`inspect`] (listings and statistics).
//! - Support: [`sample`] (a realistic generated workdir for demos, tests and benchmarks),
//!   [`progress`], [`error`].
//!
//! # Example
//! ```no_run
//! # async fn example() -> layercas::Result<()> {
//! use std::sync::Arc;
//! use layercas::{backend::local::LocalBackend, config::StoreConfig, store::Store};
//! use layercas::ingest::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
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
pub mod chunker;
pub mod config;
pub mod envelope;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
pub mod ingest;
pub mod inspect;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod pack;
pub mod progress;
pub mod restore;
pub mod sample;
pub mod store;
pub mod sync;
pub mod verify;

pub use error::{DecodeError, Error, Result};
