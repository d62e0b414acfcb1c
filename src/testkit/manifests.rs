//! Small manifests for tests of the format: one-chunk files and manifests of tenant `aa..`,
//! timeline `bb..` (the ids of the format vectors).

use crate::format::manifest::{ChunkRef, FileEntry, Manifest};
use crate::format::metadata::TimelineMetadata;
use crate::id::{ChunkId, FileHash, Lsn, TenantId, TimelineId};

/// A file named `name` holding `body` as one chunk.
pub fn file(name: &str, body: &[u8]) -> FileEntry {
    FileEntry {
        name: name.into(),
        size: body.len() as u64,
        hash: FileHash(*blake3::hash(body).as_bytes()),
        chunks: vec![ChunkRef::whole(ChunkId::of(body), body.len() as u32)],
    }
}

/// A delta manifest at `lsn` (metadata at `lsn`) after `prev`.
pub fn manifest(lsn: u64, prev: Option<u64>, added: Vec<FileEntry>, removed: &[&str]) -> Manifest {
    Manifest {
        tenant: TenantId([0xaa; 16]),
        timeline: TimelineId([0xbb; 16]),
        lsn: Lsn(lsn),
        prev_lsn: prev.map(Lsn),
        metadata: TimelineMetadata::at(Lsn(lsn)),
        added,
        removed: removed.iter().map(|s| s.to_string()).collect(),
        base: false,
        dropped_from: None,
    }
}
