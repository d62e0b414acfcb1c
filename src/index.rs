//! Index objects (which chunk is where) and the in-memory chunk index built from them.
//!
//! ```text
//! index object = envelope(kind Index, body)
//! body         = pack_count (u32 LE) || section_0 || ... || section_{pack_count-1}
//! section      = pack id (32) || entry_count (u32 LE) || entries (as in a pack table)
//! ```
//! A section repeats its pack's table, so a blob's offset is the sum of the stored lengths before
//! it. An index object is written only after every pack it names is durable, and its key is the
//! blake3 of its bytes.
//!
//! Owns the index encoding and lookups. Must not read packs or decide what to index.

use std::collections::HashMap;

use crate::envelope::{self, Kind};
use crate::error::DecodeError;
use crate::id::{ChunkId, PackId};
use crate::pack::{self, BlobEntry, Compression};

/// Largest index body a decoder accepts (about 6 million chunks).
pub const MAX_INDEX_BODY: u64 = 256 << 20;

/// The packs and blobs one index object describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexObject {
    pub packs: Vec<(PackId, Vec<BlobEntry>)>,
}

impl IndexObject {
    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (id, entries) in &self.packs {
            body.extend_from_slice(id.as_bytes());
            body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            pack::encode_entries(entries, &mut body);
        }
        envelope::seal(Kind::Index, &body)
    }

    /// Parses an index object.
    pub fn decode(bytes: &[u8]) -> Result<IndexObject, DecodeError> {
        const WHAT: &str = "index";
        let body = envelope::open(Kind::Index, bytes, MAX_INDEX_BODY)?;
        let (count, mut rest) = take_u32(WHAT, body)?;
        // Every section takes at least 36 bytes: bound the count before allocating.
        if count as usize > rest.len() / 36 {
            return Err(DecodeError::new(
                WHAT,
                format!("{count} packs cannot fit in {} bytes", rest.len()),
            ));
        }
        let mut packs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            if rest.len() < 32 {
                return Err(DecodeError::new(WHAT, "truncated pack id"));
            }
            let id = PackId::from_slice(&rest[..32]).expect("32 bytes");
            let (n, after) = take_u32(WHAT, &rest[32..])?;
            let (entries, after) = pack::decode_entries(WHAT, after, n as usize)?;
            packs.push((id, entries));
            rest = after;
        }
        if !rest.is_empty() {
            return Err(DecodeError::new(
                WHAT,
                format!("{} bytes after the last section", rest.len()),
            ));
        }
        Ok(IndexObject { packs })
    }
}

fn take_u32<'a>(what: &'static str, b: &'a [u8]) -> Result<(u32, &'a [u8]), DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::new(what, "truncated count"));
    }
    Ok((
        u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
        &b[4..],
    ))
}

/// Where one chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
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

/// Compact per-chunk record: the pack is an ordinal into `ChunkIndex::packs`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    compression: Compression,
}

/// Every chunk a store holds, in memory. The first location recorded for a chunk wins.
#[derive(Default, Debug)]
pub struct ChunkIndex {
    packs: Vec<PackId>,
    pack_ordinals: HashMap<PackId, u32>,
    chunks: HashMap<ChunkId, Slot>,
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
        let (offsets, _) = pack::offsets(entries);
        for (e, off) in entries.iter().zip(offsets) {
            let Ok(offset) = u32::try_from(off) else {
                break;
            };
            let slot = Slot {
                pack: ordinal,
                offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                compression: e.compression,
            };
            self.chunks.entry(e.chunk).or_insert(slot);
        }
    }

    /// Records everything an index object describes.
    pub fn add_object(&mut self, object: &IndexObject) {
        for (pack, entries) in &object.packs {
            self.add_pack(*pack, entries);
        }
    }

    /// Where `chunk` is, if known.
    pub fn get(&self, chunk: &ChunkId) -> Option<Location> {
        let s = self.chunks.get(chunk)?;
        Some(Location {
            pack: self.packs[s.pack as usize],
            offset: s.offset as u64,
            stored_len: s.stored_len,
            raw_len: s.raw_len,
            compression: s.compression,
        })
    }

    /// Whether `chunk` is known.
    pub fn contains(&self, chunk: &ChunkId) -> bool {
        self.chunks.contains_key(chunk)
    }

    /// Number of distinct chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Every pack named by some entry.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Every chunk with its location.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        self.chunks
            .keys()
            .map(|c| (*c, self.get(c).expect("present")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(c: &[u8], stored: u32) -> BlobEntry {
        BlobEntry {
            chunk: ChunkId::of(c),
            compression: Compression::Zstd,
            stored_len: stored,
            raw_len: stored * 2,
        }
    }

    #[test]
    fn index_round_trips_and_locates() {
        let obj = IndexObject {
            packs: vec![
                (PackId::of(b"p1"), vec![entry(b"a", 10), entry(b"b", 20)]),
                (PackId::of(b"p2"), vec![entry(b"c", 5)]),
            ],
        };
        let bytes = obj.encode();
        assert_eq!(IndexObject::decode(&bytes).unwrap(), obj);
        let mut idx = ChunkIndex::new();
        idx.add_object(&obj);
        let b = idx.get(&ChunkId::of(b"b")).unwrap();
        assert_eq!(
            (b.pack, b.offset, b.stored_len),
            (PackId::of(b"p1"), 10, 20)
        );
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.packs().len(), 2);
    }

    #[test]
    fn damaged_index_is_an_error() {
        let obj = IndexObject {
            packs: vec![(PackId::of(b"p"), vec![entry(b"a", 1)])],
        };
        let bytes = obj.encode();
        for cut in 0..bytes.len() {
            assert!(IndexObject::decode(&bytes[..cut]).is_err());
        }
        // A huge pack count in a small body is refused before allocation.
        let mut body = u32::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 40]);
        let forged = envelope::seal(Kind::Index, &body);
        assert!(
            IndexObject::decode(&forged)
                .unwrap_err()
                .reason
                .contains("cannot fit")
        );
    }
}
