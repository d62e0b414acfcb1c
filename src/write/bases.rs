//! Bases for delta blobs (format-spec 5.2): which stored chunk a new chunk is compressed
//! against, and reading those chunks' bytes back from the store.
//!
//! A file's *previous version* is the file of the timeline's previous state with the same name,
//! else, of the files whose name has the same part before `__` (a pageserver's layer names carry
//! the key range there, the LSNs after it, in fixed-width hex), the one with the greatest name:
//! the newest image of that key range. A new chunk's base is the chunk that covers the same
//! offset in that version, or that chunk's own base when it was stored as a delta, so that every
//! base is a whole blob.
//!
//! Owns base choice and base reads. Must not encode blobs or build packs (`packer`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use futures::{StreamExt, TryStreamExt};

use crate::backend::DynBackend;
use crate::error::{DecodeError, Error, Result};
use crate::format::manifest::{ChunkRef, FileEntry, TimelineState};
use crate::format::pack::{self, Compression};
use crate::format::{delta, layout};
use crate::id::{ChunkId, PackId};
use crate::store::chunk_index::Location;
use crate::store::index_cache::DomainIndex;
use crate::write::request::SourceFile;

/// Base reads in flight at once.
const READ_CONCURRENCY: usize = 4;
/// Blobs closer than this in a pack are read in one request.
const COALESCE_GAP: u64 = 256 << 10;

/// The previous version of a file: where each of its chunks starts, and how it was stored.
#[derive(Debug)]
pub(crate) struct Prior {
    starts: Vec<u64>,
    refs: Vec<ChunkRef>,
}

impl Prior {
    fn of(entry: &FileEntry) -> Prior {
        let mut at = 0;
        let starts = entry
            .chunks
            .iter()
            .map(|c| {
                let s = at;
                at += c.len as u64;
                s
            })
            .collect();
        Prior {
            starts,
            refs: entry.chunks.clone(),
        }
    }

    /// The base for a new chunk starting at `offset`: the whole chunk the previous version's
    /// chunk covering that offset was stored as (itself, or its base).
    pub(crate) fn base_at(&self, offset: u64) -> Option<ChunkId> {
        let i = self
            .starts
            .partition_point(|s| *s <= offset)
            .checked_sub(1)?;
        let r = self.refs.get(i)?;
        Some(r.base.unwrap_or(r.id))
    }
}

/// The previous versions of `files` in `prev`, by file name.
pub(crate) fn priors(
    files: &[SourceFile],
    prev: Option<&TimelineState>,
) -> HashMap<String, Arc<Prior>> {
    let Some(prev) = prev else {
        return HashMap::new();
    };
    let stem = |name: &str| name.split_once("__").map(|(s, _)| s.to_string());
    // Files by name, in order: the last of a stem is its newest version.
    let mut by_stem: BTreeMap<String, &FileEntry> = BTreeMap::new();
    for f in prev.files.values() {
        if let Some(s) = stem(&f.name) {
            by_stem.insert(s, f);
        }
    }
    files
        .iter()
        .filter_map(|f| {
            let same = prev.files.get(&f.name);
            let old = same.or_else(|| by_stem.get(&stem(&f.name)?).copied())?;
            Some((f.name.clone(), Arc::new(Prior::of(old))))
        })
        .collect()
}

/// Blobs of bases as read from their packs, still encoded: a [`Decoder`] turns them into bytes
/// on blocking workers.
pub(crate) type Fetched = Vec<(ChunkId, Location, bytes::Bytes)>;

/// The blobs of those of `bases` that `index` places in a whole blob, read from the store in
/// coalesced ranged reads, a few at a time. A base whose pack is gone is left out: the chunks
/// based on it are then stored whole.
pub(crate) async fn fetch(
    backend: &DynBackend,
    index: &DomainIndex,
    bases: impl IntoIterator<Item = ChunkId>,
) -> Result<Fetched> {
    let bases: std::collections::BTreeSet<ChunkId> = bases.into_iter().collect();
    let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, Location)>> = BTreeMap::new();
    for b in bases {
        if let Some(loc) = whole(index, &b) {
            by_pack.entry(loc.pack).or_default().push((b, loc));
        }
    }
    let reads = by_pack.into_values().flat_map(coalesce);
    let found = futures::stream::iter(reads.map(|blobs| read_range(backend, blobs)))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// The fetched bases, decoded into the caller's buffer where a chunk needs one: decoding runs
/// in the same parallel loop as the encoding that uses it, on every core, and the base is still
/// in cache when its chunk is compressed against it. A base two chunks need is decoded twice;
/// memory holds only the encoded blobs, and no decoded base outlives its use.
pub(crate) struct Decoder<'a> {
    slots: HashMap<ChunkId, Slot<'a>>,
}

struct Slot<'a> {
    blob: &'a (ChunkId, Location, bytes::Bytes),
    /// Whether the base can serve as one, once it was decoded.
    usable: OnceLock<std::result::Result<bool, DecodeError>>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(fetched: &'a Fetched) -> Decoder<'a> {
        let slots = fetched.iter().map(|blob| {
            let usable = OnceLock::new();
            (blob.0, Slot { blob, usable })
        });
        Decoder {
            slots: slots.collect(),
        }
    }

    /// The bytes of base `id`, decoded into `buf`; `None` when it was not fetched or cannot
    /// serve as a base. A blob that does not decode to its id fails as a corrupt pack.
    pub(crate) fn decode<'b>(
        &self,
        id: &ChunkId,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<&'b [u8]>> {
        let Some(slot) = self.slots.get(id) else {
            return Ok(None);
        };
        if let Some(Ok(false)) = slot.usable.get() {
            return Ok(None);
        }
        let (id, loc, data) = slot.blob;
        let entry = loc.entry(*id);
        let len = entry.raw_len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let out = &mut buf[..len];
        let decoded = pack::decode_blob_into(&entry, data, out).map(|()| delta::usable_base(out));
        let _ = slot.usable.set(decoded.clone());
        match decoded {
            Ok(usable) => Ok(usable.then_some(&buf[..len])),
            Err(e) => Err(Error::corrupt(layout::pack_key(&loc.pack), e)),
        }
    }

    /// Whether base `id` was fetched and can serve as one (decoding it if no chunk did yet).
    pub(crate) fn usable(&self, id: &ChunkId) -> Result<bool> {
        match self.slots.get(id).and_then(|s| s.usable.get()) {
            Some(Ok(usable)) => Ok(*usable),
            _ => Ok(self.decode(id, &mut Vec::new())?.is_some()),
        }
    }
}

/// Where `index` places `id` as a whole blob (one a delta can be based on).
pub(crate) fn whole(index: &DomainIndex, id: &ChunkId) -> Option<Location> {
    index
        .get(id)
        .filter(|l| l.compression != Compression::Delta)
}

/// Blobs of one pack, sorted by offset, in groups read by one request each.
fn coalesce(mut blobs: Vec<(ChunkId, Location)>) -> Vec<Vec<(ChunkId, Location)>> {
    blobs.sort_by_key(|(_, l)| l.offset);
    let mut out: Vec<Vec<(ChunkId, Location)>> = Vec::new();
    for b in blobs {
        match out.last_mut() {
            Some(g) if b.1.offset <= end_of(g) + COALESCE_GAP => g.push(b),
            _ => out.push(vec![b]),
        }
    }
    out
}

fn end_of(group: &[(ChunkId, Location)]) -> u64 {
    group
        .iter()
        .map(|(_, l)| l.offset + l.stored_len as u64)
        .max()
        .unwrap_or(0)
}

/// Reads one coalesced group; a gone pack gives none.
async fn read_range(backend: &DynBackend, blobs: Vec<(ChunkId, Location)>) -> Result<Fetched> {
    let (pack, start) = (blobs[0].1.pack, blobs[0].1.offset);
    let key = layout::pack_key(&pack);
    let bytes = match backend.get_range(&key, start..end_of(&blobs)).await {
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::with_capacity(blobs.len());
    for (id, loc) in blobs {
        let at = (loc.offset - start) as usize;
        let end = at + loc.stored_len as usize;
        if end > bytes.len() {
            return Err(Error::Integrity(format!(
                "pack {pack} is shorter than its index says"
            )));
        }
        out.push((id, loc, bytes.slice(at..end)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::ChunkRef;

    #[test]
    fn a_chunk_is_based_on_the_whole_chunk_at_its_offset() {
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        let entry = FileEntry {
            name: "x__1".into(),
            size: 30,
            hash: crate::id::FileHash([0; 32]),
            chunks: vec![
                ChunkRef::whole(a, 10),
                ChunkRef {
                    id: b,
                    len: 10,
                    base: Some(c),
                },
                ChunkRef::whole(c, 10),
            ],
        };
        let p = Prior::of(&entry);
        assert_eq!(p.base_at(0), Some(a));
        assert_eq!(p.base_at(9), Some(a));
        // The chunk there is a delta: its base, never a delta, is the base.
        assert_eq!(p.base_at(10), Some(c));
        assert_eq!(p.base_at(29), Some(c));
        assert_eq!(p.base_at(500), Some(c));
    }

    #[test]
    fn previous_versions_are_found_by_name_then_by_newest_of_the_stem() {
        let f = |name: &str| FileEntry {
            name: name.into(),
            size: 0,
            hash: crate::id::FileHash([0; 32]),
            chunks: vec![],
        };
        let mut state = TimelineState {
            lsn: crate::id::Lsn(1),
            metadata: crate::format::metadata::TimelineMetadata::at(crate::id::Lsn(1)),
            files: BTreeMap::new(),
        };
        for n in ["img_a__10", "img_b__10", "img_b__20", "wal"] {
            state.files.insert(n.into(), f(n));
        }
        let src = |n: &str| SourceFile {
            name: n.into(),
            path: n.into(),
        };
        let files = [
            src("img_a__30"),
            src("img_b__30"),
            src("wal"),
            src("new__1"),
        ];
        for n in ["img_b__10", "img_b__20"] {
            let mut e = f(n);
            e.size = n.len() as u64;
            e.chunks = vec![ChunkRef::whole(ChunkId::of(n.as_bytes()), n.len() as u32)];
            state.files.insert(n.into(), e);
        }
        let found = priors(&files, Some(&state));
        assert!(found.contains_key("img_a__30"));
        let newest = ChunkId::of(b"img_b__20");
        assert_eq!(
            found["img_b__30"].base_at(0),
            Some(newest),
            "the newest of the stem"
        );
        assert!(found.contains_key("wal"));
        assert!(!found.contains_key("new__1"));
    }
}
