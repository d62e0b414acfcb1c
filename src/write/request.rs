//! What a checkpoint is asked to record and what it reports back.
//!
//! Owns the request and report types and the rules that follow from the request alone (which
//! names a full checkpoint removes). Must not read files or the store.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::format::manifest::TimelineState;
use crate::format::metadata::TimelineMetadata;
use crate::id::{TenantId, TimelineId};

/// A local file to record under `name`.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Relative, `/`-separated name in the timeline.
    pub name: String,
    /// Where to read the file from.
    pub path: PathBuf,
}

/// Whether the given files are the whole timeline or only additions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// The files are the timeline's complete set: names in the previous checkpoint that are not
    /// given are recorded as removed.
    Full,
    /// The files are added to the previous checkpoint's set; nothing is removed.
    Incremental,
}

/// One checkpoint to record.
#[derive(Clone, Debug)]
pub struct CheckpointRequest {
    /// The tenant to record under.
    pub tenant: TenantId,
    /// The timeline to record under.
    pub timeline: TimelineId,
    /// Its `disk_consistent_lsn` is the checkpoint's LSN.
    pub metadata: TimelineMetadata,
    /// The files the checkpoint records (all, or only the changed ones; see `mode`).
    pub files: Vec<SourceFile>,
    /// Whether `files` is the whole timeline or only what changed.
    pub mode: CheckpointMode,
}

/// How a checkpoint may treat the request's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// The caller vouches that a file recorded in the timeline's previous checkpoint under the
    /// same name and with the same size still holds the recorded content: such a file is carried
    /// over without being read (a pageserver's layer files are immutable, so only the files the
    /// caller was told are new need reading). A file that is not in the previous checkpoint, or
    /// has another size, is read as always. Off by default: every file is read and hashed.
    pub immutable_names: bool,
    /// Store the new chunks of a file that has a previous version (the same name, or the same
    /// name up to `__`) as deltas against that version's chunks (format-spec 5.2). On by
    /// default; off, every new chunk is stored whole.
    pub deltas: bool,
}

impl Default for CheckpointOptions {
    fn default() -> CheckpointOptions {
        CheckpointOptions {
            immutable_names: false,
            deltas: true,
        }
    }
}

/// What a checkpoint did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckpointReport {
    /// The checkpoint's LSN, formatted `X/Y`.
    pub lsn: String,
    /// Key of the manifest created.
    pub manifest: String,
    /// Files in the request.
    pub files: usize,
    /// Files recorded as added (new or changed).
    pub files_added: usize,
    /// Files unchanged since the previous checkpoint.
    pub files_unchanged: usize,
    /// Of the unchanged files, those carried over by name and size without being read
    /// ([`CheckpointOptions::immutable_names`]).
    pub files_not_read: usize,
    /// Added files whose whole content was already stored (not chunked again).
    pub files_deduplicated: usize,
    /// How many names of the previous checkpoint the request left out (full mode only).
    pub files_removed: usize,
    /// Bytes of the added files.
    pub bytes_added: u64,
    /// Bytes of the added files that had to be chunked (not recognised whole), and their chunks.
    pub chunked_bytes: u64,
    /// Chunks cut from the chunked bytes.
    pub chunks: u64,
    /// Chunks not stored before, and their raw and stored bytes.
    pub new_chunks: u64,
    /// Raw bytes of the new chunks.
    pub new_raw_bytes: u64,
    /// Bytes the new chunks take stored (after compression).
    pub new_stored_bytes: u64,
    /// New chunks stored as deltas against a chunk of their file's previous version
    /// (format-spec 5.2).
    pub new_deltas: u64,
    /// Objects created: packs, index objects, manifests.
    pub packs_written: usize,
    /// Index objects created.
    pub index_objects_written: usize,
}

/// Names in the previous checkpoint that a [`CheckpointMode::Full`] request leaves out.
pub(crate) fn removed_names(req: &CheckpointRequest, prev: Option<&TimelineState>) -> Vec<String> {
    let (Some(prev), CheckpointMode::Full) = (prev, req.mode) else {
        return Vec::new();
    };
    let given: HashSet<&str> = req.files.iter().map(|f| f.name.as_str()).collect();
    prev.files
        .keys()
        .filter(|n| !given.contains(n.as_str()))
        .cloned()
        .collect()
}
