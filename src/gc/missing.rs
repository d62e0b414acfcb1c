//! gc's refusal to delete while verify-level errors exist (issue 10 item 3): before a run
//! deletes anything, every chunk a kept manifest references must resolve, through an index
//! object or through the own table of a listed pack no index object names.
//!
//! Owns that check and the reading of unindexed packs' tables it needs. Must not write: the
//! tables it reads are handed back so that planning keeps the packs holding referenced chunks
//! (`casctl repair index` is what turns them into index objects).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::manifest::{ChunkRef, Manifest};
use crate::format::pack::BlobEntry;
use crate::id::{ChunkId, IdMap, IdSet, PackId};
use crate::store::Store;

/// Referenced chunks found in no usable place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// How many distinct chunks are missing.
    pub count: usize,
    /// The first missing chunk, and the key of a manifest that references it.
    pub first_chunk: ChunkId,
    pub first_manifest: String,
}

impl Missing {
    /// The error gc fails with when it is not told to go on.
    pub fn to_error(&self) -> Error {
        Error::Integrity(format!(
            "gc refuses to delete: {} chunk(s) referenced by kept manifests are in no index \
             object and no pack table (first: chunk {} of {}); run `casctl verify` and \
             `casctl repair index`, or pass --allow-missing to collect anyway",
            self.count, self.first_chunk, self.first_manifest
        ))
    }
}

/// Checks that every chunk of `manifests` resolves. Tables of listed packs no section names are
/// read only when some chunk does not resolve through `sections`; those that read cleanly are
/// added to `sections` (a damaged one is skipped: what it holds is unknown). Returns what is
/// still missing.
pub async fn check<'a>(
    store: &Store,
    manifests: impl IntoIterator<Item = &'a Manifest>,
    sections: &mut BTreeMap<PackId, Vec<BlobEntry>>,
    packs: &IdMap<PackId, u64>,
) -> Result<Option<Missing>> {
    let mut unresolved: Vec<(ChunkId, &Manifest)> = Vec::new();
    let mut covered = covered_by(sections, packs);
    let mut seen = IdSet::default();
    for m in manifests {
        for id in m
            .added
            .iter()
            .flat_map(|f| f.chunks.iter())
            .flat_map(ChunkRef::stored_ids)
        {
            if !covered.contains(&id) && seen.insert(id) {
                unresolved.push((id, m));
            }
        }
    }
    if unresolved.is_empty() {
        return Ok(None);
    }
    let unindexed: Vec<(PackId, u64)> = packs
        .iter()
        .filter(|(p, _)| !sections.contains_key(*p))
        .map(|(p, s)| (*p, *s))
        .collect();
    for (p, size) in unindexed {
        match store.read_pack_table(p, size).await {
            Ok(table) => {
                sections.insert(p, table);
            }
            Err(e) => tracing::warn!(pack = %p, error = %e, "unindexed pack's table unreadable"),
        }
    }
    covered = covered_by(sections, packs);
    unresolved.retain(|(c, _)| !covered.contains(c));
    Ok(unresolved.first().map(|(c, m)| Missing {
        count: unresolved.len(),
        first_chunk: *c,
        first_manifest: layout::manifest_key(&m.tenant, &m.timeline, m.lsn).to_string(),
    }))
}

/// The chunks some listed pack of `sections` holds.
fn covered_by(
    sections: &BTreeMap<PackId, Vec<BlobEntry>>,
    packs: &IdMap<PackId, u64>,
) -> IdSet<ChunkId> {
    sections
        .iter()
        .filter(|(p, _)| packs.contains_key(*p))
        .flat_map(|(_, es)| es.iter().map(|e| e.chunk))
        .collect()
}
