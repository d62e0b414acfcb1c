//! The in-memory chunk index: where every stored chunk is, built from index objects
//! (`format::index`) and kept compact (48 bytes per chunk).
//!
//! Owns the lookup structure only. Must not read the store (loading and refreshing it is
//! `store::index_cache` and `Store::load_index`) or decide which packs are usable (the gc fence).

use std::collections::{HashMap, HashSet};

use crate::format::index::IndexObject;
use crate::format::pack::{self, BlobEntry, Compression};
use crate::id::{ChunkId, PackId};

/// Where one chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack holding the chunk.
    pub pack: PackId,
    /// Offset of the blob in the pack.
    pub offset: u64,
    /// Bytes to read there.
    pub stored_len: u32,
    /// Bytes after decoding, checked on read.
    pub raw_len: u32,
    /// How the blob is encoded.
    pub compression: Compression,
}

impl Location {
    /// The table entry this location came from.
    pub fn entry(&self, chunk: ChunkId) -> BlobEntry {
        BlobEntry {
            chunk,
            compression: self.compression,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        }
    }
}

/// One chunk's record in memory: 48 bytes, no padding. The pack is an ordinal into
/// `ChunkIndex::packs`; the top two bits of `stored` hold the compression ([`flag_bits`]).
#[derive(Clone, Copy, Debug)]
struct Slot {
    chunk: ChunkId,
    pack: u32,
    offset: u32,
    stored: u32,
    raw: u32,
}

const ZSTD_BIT: u32 = 1 << 31;
const DICT_BIT: u32 = 1 << 30;

/// The bits of `stored` that record `c` (stored lengths stay far below 2^30: section 9).
fn flag_bits(c: Compression) -> u32 {
    match c {
        Compression::None => 0,
        Compression::Zstd => ZSTD_BIT,
        Compression::ZstdDict => DICT_BIT,
        Compression::Delta => ZSTD_BIT | DICT_BIT,
    }
}

impl Slot {
    fn location(&self, packs: &[PackId]) -> Location {
        Location {
            pack: packs[self.pack as usize],
            offset: self.offset as u64,
            stored_len: self.stored & !(ZSTD_BIT | DICT_BIT),
            raw_len: self.raw,
            compression: match self.stored & (ZSTD_BIT | DICT_BIT) {
                ZSTD_BIT => Compression::Zstd,
                DICT_BIT => Compression::ZstdDict,
                0 => Compression::None,
                _ => Compression::Delta,
            },
        }
    }
}

/// New entries are gathered in a hash map and merged into the sorted run when there are this
/// many, or 1/32 of the run (about 2.5 bytes per chunk of buffer), whichever is more.
const MERGE_MIN: usize = 4096;

/// Every chunk a store holds, in memory, at 48 bytes per chunk plus a small buffer of recent
/// additions: a sorted run searched by binary search, and an unsorted tail merged into it now and
/// then. The first location recorded for a chunk wins. Packs can be dropped (when gc deletes
/// them): their entries stop resolving at once and are purged at the next merge.
#[derive(Default, Debug)]
pub struct ChunkIndex {
    packs: Vec<PackId>,
    pack_ordinals: HashMap<PackId, u32>,
    dropped: HashSet<u32>,
    sorted: Vec<Slot>,
    recent: HashMap<ChunkId, Slot>,
}

impl ChunkIndex {
    /// An empty index.
    pub fn new() -> ChunkIndex {
        ChunkIndex::default()
    }

    /// Records the blobs of one pack. Offsets past 4 GiB cannot occur in valid packs (their target
    /// size is at most 1 GiB); entries beyond are ignored rather than wrapped.
    pub fn add_pack(&mut self, pack: PackId, entries: &[BlobEntry]) {
        let next = self.packs.len() as u32;
        let ordinal = *self.pack_ordinals.entry(pack).or_insert(next);
        if ordinal == next {
            self.packs.push(pack);
        }
        self.dropped.remove(&ordinal);
        let (offsets, _) = pack::offsets(entries);
        for (e, off) in entries.iter().zip(offsets) {
            let Ok(offset) = u32::try_from(off) else {
                break;
            };
            let slot = Slot {
                chunk: e.chunk,
                pack: ordinal,
                offset,
                stored: e.stored_len | flag_bits(e.compression),
                raw: e.raw_len,
            };
            if self.slot(&e.chunk).is_none() {
                self.recent.insert(e.chunk, slot);
            }
        }
        if self.recent.len() >= MERGE_MIN.max(self.sorted.len() / 32) {
            self.compact();
        }
    }

    /// A new index holding only those of `chunks` this one knows, at the same locations: what a
    /// restore needs, so that it can plan without holding a lock on the whole index.
    pub fn subset<'a>(&self, chunks: impl IntoIterator<Item = &'a ChunkId>) -> ChunkIndex {
        ChunkIndex::from_locations(
            chunks
                .into_iter()
                .filter_map(|c| self.get(c).map(|l| (*c, l))),
        )
    }

    /// An index of exactly these chunks at these locations (the first location of a chunk wins).
    pub fn from_locations(found: impl IntoIterator<Item = (ChunkId, Location)>) -> ChunkIndex {
        let mut out = ChunkIndex::new();
        for (c, loc) in found {
            let Ok(offset) = u32::try_from(loc.offset) else {
                continue;
            };
            let next = out.packs.len() as u32;
            let pack = *out.pack_ordinals.entry(loc.pack).or_insert(next);
            if pack == next {
                out.packs.push(loc.pack);
            }
            let slot = Slot {
                chunk: c,
                pack,
                offset,
                stored: loc.stored_len | flag_bits(loc.compression),
                raw: loc.raw_len,
            };
            out.recent.entry(c).or_insert(slot);
        }
        out.compact();
        out
    }

    /// Records everything an index object describes.
    pub fn add_object(&mut self, object: &IndexObject) {
        for (pack, entries) in &object.packs {
            self.add_pack(*pack, entries);
        }
    }

    /// Forgets every chunk stored in `pack` (it was deleted).
    pub fn drop_pack(&mut self, pack: &PackId) {
        if let Some(&ordinal) = self.pack_ordinals.get(pack) {
            self.dropped.insert(ordinal);
            self.recent.retain(|_, s| s.pack != ordinal);
        }
    }

    fn find_sorted(&self, chunk: &ChunkId) -> Option<&Slot> {
        let i = self.sorted.binary_search_by(|s| s.chunk.cmp(chunk)).ok()?;
        Some(&self.sorted[i])
    }

    fn slot(&self, chunk: &ChunkId) -> Option<&Slot> {
        let live = |s: &&Slot| !self.dropped.contains(&s.pack);
        self.find_sorted(chunk)
            .filter(live)
            .or_else(|| self.recent.get(chunk).filter(live))
    }

    /// Moves the recent entries into the sorted run, purges dropped packs and releases spare
    /// capacity. Done automatically; call it after loading to get the smallest footprint.
    pub fn compact(&mut self) {
        let dropped = &self.dropped;
        self.sorted.retain(|s| !dropped.contains(&s.pack));
        self.sorted
            .extend(std::mem::take(&mut self.recent).into_values());
        self.sorted.sort_unstable_by(|a, b| a.chunk.cmp(&b.chunk));
        self.sorted.shrink_to_fit();
    }

    /// Where `chunk` is, if known.
    pub fn get(&self, chunk: &ChunkId) -> Option<Location> {
        self.slot(chunk).map(|s| s.location(&self.packs))
    }

    /// Whether `chunk` is known.
    pub fn contains(&self, chunk: &ChunkId) -> bool {
        self.slot(chunk).is_some()
    }

    /// Number of distinct chunks (including ones of dropped packs not yet purged).
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// True when no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pack named by some entry, dropped ones included.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Every live chunk with its location.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        self.sorted
            .iter()
            .chain(self.recent.values())
            .filter(|s| !self.dropped.contains(&s.pack))
            .map(|s| (s.chunk, s.location(&self.packs)))
    }

    /// Heap bytes held for chunk entries (the sorted run's and the recent buffer's capacity).
    pub fn entry_heap_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<Slot>()
            + self.recent.capacity() * (std::mem::size_of::<(ChunkId, Slot)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::tests::{entry, two_packs};

    #[test]
    fn index_locates_and_drops_packs() {
        let obj = two_packs();
        let mut idx = ChunkIndex::new();
        idx.add_object(&obj);
        let b = idx.get(&ChunkId::of(b"b")).unwrap();
        assert_eq!(
            (b.pack, b.offset, b.stored_len),
            (PackId::of(b"p1"), 10, 20)
        );
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.packs().len(), 2);
        idx.drop_pack(&PackId::of(b"p1"));
        assert!(idx.get(&ChunkId::of(b"b")).is_none());
        assert!(idx.contains(&ChunkId::of(b"c")));
        // A chunk of a dropped pack that is stored again elsewhere resolves to the new place.
        idx.compact();
        idx.add_pack(PackId::of(b"p3"), &[entry(b"b", 7)]);
        assert_eq!(idx.get(&ChunkId::of(b"b")).unwrap().pack, PackId::of(b"p3"));
    }

    #[test]
    fn a_subset_keeps_the_locations_of_the_chunks_asked_for() {
        let mut idx = ChunkIndex::new();
        idx.add_object(&two_packs());
        let (b, c, x) = (ChunkId::of(b"b"), ChunkId::of(b"c"), ChunkId::of(b"x"));
        let sub = idx.subset([&b, &c, &x]);
        assert_eq!(sub.len(), 2, "the unknown chunk is skipped");
        assert_eq!(sub.get(&b), idx.get(&b));
        assert_eq!(sub.get(&c), idx.get(&c));
        assert!(sub.get(&ChunkId::of(b"a")).is_none());
    }

    #[test]
    fn index_memory_is_at_most_48_bytes_per_chunk() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let mut idx = ChunkIndex::new();
        let n = 200_000u32;
        for p in 0..n / 100 {
            let entries: Vec<BlobEntry> = (0..100)
                .map(|i| entry(&(p * 100 + i).to_le_bytes(), 1000))
                .collect();
            idx.add_pack(PackId::of(&p.to_le_bytes()), &entries);
        }
        idx.compact();
        assert_eq!(idx.len(), n as usize);
        let per_chunk = idx.entry_heap_bytes() as f64 / n as f64;
        assert!(per_chunk <= 48.0, "{per_chunk} bytes per chunk");
        // Every chunk still resolves, to the right place, after merges.
        for k in (0..n).step_by(997) {
            let loc = idx.get(&ChunkId::of(&k.to_le_bytes())).unwrap();
            assert_eq!(loc.pack, PackId::of(&(k / 100).to_le_bytes()));
            assert_eq!(loc.offset, (k % 100) as u64 * 1000);
        }
        // Dropping a pack purges its entries at the next merge.
        idx.drop_pack(&PackId::of(&0u32.to_le_bytes()));
        idx.compact();
        assert_eq!(idx.len(), n as usize - 100);
    }
}
