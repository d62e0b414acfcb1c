//! Checkpointing: turning local files into chunks, packs, an index object and a manifest.
//!
//! Owns the write path and its ordering, which is the whole of crash safety:
//! 1. every new chunk is compressed into a pack, and every pack is uploaded and durable;
//! 2. then one index object naming those packs is created;
//! 3. then the manifest is created (conditionally: a checkpoint is never overwritten).
//! A crash before 3 leaves packs or an index that nothing references (gc removes them); the
//! checkpoint is invisible until its manifest exists.
//!
//! Work is spread over both cores: files are processed in parallel, and within a file the chunks
//! of each batch are hashed and compressed in parallel (rayon), while packs upload concurrently
//! on the async runtime. Memory stays bounded: a file is read in batches, at most a few packs
//! are in flight. Must not read manifests of other timelines or delete anything.
//!
//! Concurrent gc is fenced by [`fence`]: the writer applies the gc state before
//! deduplicating, validates its references after uploading, and creates its index object and
//! manifest only within the window of that validation; references into condemned packs are
//! stored again (in salted packs) instead.
//!
//! Modules: [`request`] (what to record, what was done), `source` (reading, hashing, chunking
//! files; `stream` for large ones, in pooled blocks), `packer` (packs, their upload and index
//! object; shared with gc's repack), `bases` and `deltas` (delta blobs: which base a chunk is compressed against, and the second pass that
//! reads the bases and stores those chunks), `commit`
//! ([`Writer`]: the checkpoint's order and its manifest), [`fence`] (the writer's side of gc),
//! `turns` (which checkpoints of one writer run at once: one per tenant, so that concurrent
//! checkpoints of a tenant's timelines deduplicate against each other), `training` (the
//! store's dictionary: sampling new chunks, and which checkpoint trains it).

mod bases;
mod commit;
mod deltas;
pub(crate) mod fence;
pub(crate) mod packer;
pub(crate) mod request;
mod source;
mod stream;
mod training;
mod turns;

pub use commit::Writer;
pub use packer::UPLOAD_CONCURRENCY;
pub use request::{
    CheckpointMode, CheckpointOptions, CheckpointReport, CheckpointRequest, SourceFile,
};
pub(crate) use source::open_regular;
