//! Manifests: one per checkpoint of a timeline, naming the files the checkpoint added (with their
//! chunk lists) and the names it removed, plus the timeline metadata. Folding a timeline's
//! manifests in LSN order gives its file set at any recorded LSN.
//!
//! Encoding: an envelope of kind `Manifest` around the canonical msgpack encoding of
//! [`Manifest`] (structs as arrays of fields in declaration order). A *delta* (what writers
//! create) is version 1; a *base* (what gc writes: the whole state, so folding may start there)
//! is version 2, whose body is `[manifest, flags]` with flag bit 0 set, so that a version-1
//! reader refuses it instead of folding it as a delta. Decoding is total: any bytes give a
//! manifest or a [`DecodeError`], and no name that could leave a directory is accepted.
//!
//! Owns the manifest type, its validation and the fold. Must not read or write a store.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::delta::delta_id;
use crate::format::envelope::{self, Kind};
use crate::format::metadata::{METADATA_FILE_NAME, TimelineMetadata};
use crate::format::pack::MAX_RAW_LEN;
use crate::id::{ChunkId, FileHash, Lsn, TenantId, TimelineId};

/// Largest manifest body accepted: about 12 million chunk references.
pub const MAX_MANIFEST_BODY: u64 = 512 << 20;
/// Longest file name (a relative path) accepted: well below PATH_MAX (4096 on Linux), so that a
/// restore directory's own path and a temporary name still fit beside it.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest file a manifest may record (1 TiB); a restorer never writes more for one file.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Longest component of a file name.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Names whose components start with this are reserved for temporary files.
pub const RESERVED_PREFIX: &str = ".layercas";

/// One chunk of a file: its id and raw length, and the base it is stored against, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's hash: the id of its content.
    pub id: ChunkId,
    /// Raw length, so offsets in the file can be computed without reading chunks.
    pub len: u32,
    /// The chunk whose bytes the stored delta blob needs (format-spec 5.2); the blob is indexed
    /// under `delta_id(id, base)`. Absent (encoded as a 2-element array) for a whole blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ChunkId>,
}

impl ChunkRef {
    /// A chunk stored as a whole blob.
    pub fn whole(id: ChunkId, len: u32) -> ChunkRef {
        ChunkRef {
            id,
            len,
            base: None,
        }
    }

    /// The id of the index entry holding this chunk's blob.
    pub fn blob_id(&self) -> ChunkId {
        match &self.base {
            Some(b) => delta_id(&self.id, b),
            None => self.id,
        }
    }

    /// Every id whose blob a reader of this chunk needs, so every id gc keeps live for it: the
    /// blob's, then the base's.
    pub fn stored_ids(&self) -> impl Iterator<Item = ChunkId> {
        std::iter::once(self.blob_id()).chain(self.base)
    }

    /// What is wrong with this reference on its own, if anything.
    fn fault(&self) -> Option<String> {
        if self.len == 0 || self.len > MAX_RAW_LEN {
            return Some(format!(
                "chunk {} of {} bytes is empty or exceeds {MAX_RAW_LEN}",
                self.id, self.len
            ));
        }
        (self.base == Some(self.id)).then(|| format!("chunk {} is its own base", self.id))
    }
}

/// A file a checkpoint added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the timeline directory, `/`-separated.
    pub name: String,
    /// Size in bytes, checked after restore.
    pub size: u64,
    /// blake3 of the whole file.
    pub hash: FileHash,
    /// The file's chunks in order; their lengths add up to `size`.
    pub chunks: Vec<ChunkRef>,
}

/// One checkpoint of a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The tenant the checkpoint belongs to (also in the key; checked to match).
    pub tenant: TenantId,
    /// The timeline the checkpoint belongs to (also in the key; checked to match).
    pub timeline: TimelineId,
    /// The checkpoint's disk_consistent_lsn; also in the key.
    pub lsn: Lsn,
    /// The LSN of the timeline's previous manifest, `None` for the first.
    pub prev_lsn: Option<Lsn>,
    /// The timeline's metadata at this checkpoint, restored as the `metadata` file.
    pub metadata: TimelineMetadata,
    /// Files added (or replaced) by this checkpoint.
    pub added: Vec<FileEntry>,
    /// Names removed by this checkpoint (applied before `added`).
    pub removed: Vec<String>,
    /// A base holds the timeline's whole state: folding starts afresh at it. Not a msgpack
    /// field: it is the envelope version (2) and the flags of the version-2 body.
    #[serde(skip)]
    pub base: bool,
    /// Only in a base: every checkpoint of the timeline with an LSN in `[dropped_from, lsn)` was
    /// dropped by gc. A manifest found there is a late-landing create of a dropped checkpoint
    /// (its chunks may be gone) and is ignored and deleted ([`Manifest::drops`]). Not a msgpack
    /// field of `Manifest`: the optional third element of the version-2 body.
    #[serde(skip)]
    pub dropped_from: Option<Lsn>,
}

/// The version-2 body: `[manifest, flags]`, or `[manifest, flags, dropped_from]`.
#[derive(Serialize, Deserialize)]
struct BaseBody {
    manifest: Manifest,
    flags: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dropped_from: Option<Lsn>,
}

/// Envelope version of a delta manifest.
pub const DELTA_VERSION: u8 = 1;
/// Envelope version of a base manifest.
pub const BASE_VERSION: u8 = 2;
/// Flag bit of a version-2 body saying the manifest is a base; other bits are reserved.
const FLAG_BASE: u8 = 1;

impl Manifest {
    /// The manifest object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        if self.base {
            let body = envelope::encode_msgpack(&BaseBody {
                manifest: self.clone(),
                flags: FLAG_BASE,
                dropped_from: self.dropped_from,
            });
            envelope::seal_version(Kind::Manifest, BASE_VERSION, &body)
        } else {
            envelope::seal(Kind::Manifest, &envelope::encode_msgpack(self))
        }
    }

    /// Parses and validates a manifest object (a delta or a base).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        let versions = [DELTA_VERSION, BASE_VERSION];
        let (version, body) =
            envelope::open_versions(Kind::Manifest, &versions, bytes, MAX_MANIFEST_BODY)?;
        let manifest = if version == BASE_VERSION {
            let b: BaseBody = envelope::decode_msgpack("manifest", body)?;
            let (mut m, flags) = (b.manifest, b.flags);
            m.dropped_from = b.dropped_from;
            if flags != FLAG_BASE {
                return Err(DecodeError::new(
                    "manifest",
                    format!("version-2 flags {flags:#x}: only the base bit may be set, and must"),
                ));
            }
            m.base = true;
            m
        } else {
            envelope::decode_msgpack("manifest", body)?
        };
        manifest
            .validate()
            .map_err(|e| DecodeError::new("manifest", e))?;
        Ok(manifest)
    }

    /// Whether this manifest is a base saying that the checkpoint at `lsn` was dropped.
    pub fn drops(&self, lsn: Lsn) -> bool {
        self.base
            && self
                .dropped_from
                .is_some_and(|from| from <= lsn && lsn < self.lsn)
    }

    /// Checks the rules every manifest keeps: safe unique names, chunk lengths adding up to file
    /// sizes, LSNs consistent with the metadata and the previous manifest.
    pub fn validate(&self) -> Result<(), String> {
        if self.base && (self.prev_lsn.is_some() || !self.removed.is_empty()) {
            return Err("a base has no previous lsn and removes nothing".into());
        }
        if let Some(from) = self.dropped_from.filter(|f| !self.base || *f > self.lsn) {
            return Err(format!(
                "dropped range from {from} is only allowed in a base, and not above its lsn {}",
                self.lsn
            ));
        }
        if self.metadata.disk_consistent_lsn != self.lsn {
            return Err(format!(
                "lsn {} differs from metadata disk_consistent_lsn {}",
                self.lsn, self.metadata.disk_consistent_lsn
            ));
        }
        if let Some(prev) = self.prev_lsn.filter(|p| *p >= self.lsn) {
            return Err(format!(
                "previous lsn {prev} is not before lsn {}",
                self.lsn
            ));
        }
        let mut seen = HashSet::new();
        for f in &self.added {
            validate_name(&f.name).map_err(|e| format!("file {:?}: {e}", f.name))?;
            if !seen.insert(f.name.as_str()) {
                return Err(format!("file {:?} is listed twice", f.name));
            }
            if f.size > MAX_FILE_SIZE {
                return Err(format!(
                    "file {:?}: size {} exceeds the limit of {MAX_FILE_SIZE}",
                    f.name, f.size
                ));
            }
            if let Some(why) = f.chunks.iter().find_map(ChunkRef::fault) {
                return Err(format!("file {:?}: {why}", f.name));
            }
            let total: u64 = f.chunks.iter().map(|c| c.len as u64).sum();
            if total != f.size {
                return Err(format!(
                    "file {:?}: chunks add up to {total} bytes, size says {}",
                    f.name, f.size
                ));
            }
        }
        let mut removed = HashSet::new();
        for name in &self.removed {
            validate_name(name).map_err(|e| format!("removed name {name:?}: {e}"))?;
            if !removed.insert(name.as_str()) {
                return Err(format!("removed name {name:?} is listed twice"));
            }
        }
        Ok(())
    }
}

/// Checks that `name` is a relative path that stays inside its directory: `/`-separated
/// components, none empty, `.` or `..`, none starting with the reserved prefix, no NUL or
/// backslash, within the length limits, and neither the metadata file's name nor under it (a
/// first component `metadata` would need a directory where the metadata file is).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} bytes"));
    }
    if name.starts_with('/') {
        return Err("absolute path".into());
    }
    if name.split('/').next() == Some(METADATA_FILE_NAME) {
        return Err("'metadata' is reserved for the timeline metadata file".into());
    }
    for comp in name.split('/') {
        match comp {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("path component {comp:?} is not allowed")),
            _ if comp.len() > MAX_COMPONENT_LEN => {
                return Err(format!("component longer than {MAX_COMPONENT_LEN} bytes"));
            }
            _ if comp.starts_with(RESERVED_PREFIX) => {
                return Err(format!(
                    "components starting with {RESERVED_PREFIX:?} are reserved"
                ));
            }
            _ if comp.contains(['\0', '\\']) => return Err("NUL or backslash in name".into()),
            _ => {}
        }
    }
    Ok(())
}

/// A timeline's state as of one manifest: its files and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineState {
    /// The LSN of the newest manifest folded in.
    pub lsn: Lsn,
    /// The metadata that manifest recorded.
    pub metadata: TimelineMetadata,
    /// Every file of the timeline at that LSN, by name.
    pub files: BTreeMap<String, FileEntry>,
}

impl TimelineState {
    /// Applies one manifest: removals first, then additions (which replace same-named files).
    /// A base replaces the state entirely.
    pub fn apply(state: Option<TimelineState>, m: Manifest) -> TimelineState {
        let mut files = state
            .filter(|_| !m.base)
            .map(|s| s.files)
            .unwrap_or_default();
        for name in &m.removed {
            files.remove(name);
        }
        for f in m.added {
            files.insert(f.name.clone(), f);
        }
        TimelineState {
            lsn: m.lsn,
            metadata: m.metadata,
            files,
        }
    }

    /// Like [`TimelineState::apply`], but a delta may remove only names the state before it
    /// holds (format-spec section 7.2): removing an absent name means a manifest is missing or
    /// was written for another state.
    pub fn apply_checked(
        state: Option<TimelineState>,
        m: Manifest,
    ) -> Result<TimelineState, String> {
        if !m.base {
            let held = |n: &String| state.as_ref().is_some_and(|s| s.files.contains_key(n));
            if let Some(name) = m.removed.iter().find(|n| !held(n)) {
                return Err(format!(
                    "the manifest at {} removes {name:?}, which the state before it does not hold",
                    m.lsn
                ));
            }
        }
        Ok(TimelineState::apply(state, m))
    }

    /// Checks that the files can all exist on disk at once: no name is a directory of another
    /// (`x` beside `x/y`). Per-name rules (section 7) are checked when a manifest is decoded.
    pub fn check_paths(&self) -> Result<(), String> {
        for name in self.files.keys() {
            let dir = format!("{name}/");
            let under = self.files.range(dir.clone()..).next();
            if let Some((other, _)) = under.filter(|(k, _)| k.starts_with(&dir)) {
                return Err(format!(
                    "file {name:?} clashes with file {other:?}, which needs it as a directory"
                ));
            }
        }
        Ok(())
    }

    /// The state after `m`, checked as a writer must before creating `m` (format-spec 7.2 rules
    /// 5 and 6): it removes only names `prev` holds, and its files can all exist on disk.
    pub fn next_checked(prev: Option<TimelineState>, m: Manifest) -> Result<TimelineState, String> {
        let next = TimelineState::apply_checked(prev, m)?;
        next.check_paths()?;
        Ok(next)
    }

    /// Folds manifests in ascending LSN order as a reader must (format-spec section 7.2):
    /// removals of absent names and names that clash on disk are errors.
    pub fn fold_checked(
        manifests: impl IntoIterator<Item = Manifest>,
    ) -> Result<Option<TimelineState>, DecodeError> {
        let mut state = None;
        for m in manifests {
            let next = TimelineState::apply_checked(state, m);
            state = Some(next.map_err(|e| DecodeError::new("timeline", e))?);
        }
        if let Some(s) = &state {
            s.check_paths()
                .map_err(|e| DecodeError::new("timeline", format!("state at {}: {e}", s.lsn)))?;
        }
        Ok(state)
    }

    /// Folds manifests that are already in ascending LSN order, checking nothing across them
    /// (writers and gc, which fold states they then check or rewrite; readers use
    /// [`TimelineState::fold_checked`]).
    pub fn fold(manifests: impl IntoIterator<Item = Manifest>) -> Option<TimelineState> {
        manifests
            .into_iter()
            .fold(None, |s, m| Some(TimelineState::apply(s, m)))
    }

    /// The state as a base manifest: every file added, nothing removed, no predecessor.
    pub fn to_base(&self, tenant: TenantId, timeline: TimelineId) -> Manifest {
        Manifest {
            tenant,
            timeline,
            lsn: self.lsn,
            prev_lsn: None,
            metadata: self.metadata.clone(),
            added: self.files.values().cloned().collect(),
            removed: Vec::new(),
            base: true,
            dropped_from: None,
        }
    }

    /// Total bytes of all files.
    pub fn logical_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
