//! Index objects: which chunk is stored where, as written to the store. The in-memory chunk
//! index built from them is `store::chunk_index`.
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
//! Owns the index object encoding only. Must not read packs, hold lookups or decide what to index.

use std::collections::HashSet;

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};
use crate::format::pack::{self, BlobEntry};
use crate::id::PackId;

/// Largest index body a decoder accepts (about 6 million chunks).
pub const MAX_INDEX_BODY: u64 = 256 << 20;
/// Most sections (packs) one index object may hold: 16 TiB of 16 MiB packs.
pub const MAX_INDEX_SECTIONS: u32 = 1 << 20;
/// Fewest bytes a section takes: pack id and entry count.
const MIN_SECTION_LEN: usize = 32 + 4;

/// The packs and blobs one index object describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexObject {
    /// Each pack and the blobs it holds, in pack order.
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

    /// Parses an index object: at most [`MAX_INDEX_SECTIONS`] sections, each pack named once,
    /// and a body of exactly the length its counts give.
    pub fn decode(bytes: &[u8]) -> Result<IndexObject, DecodeError> {
        const WHAT: &str = "index";
        let body = envelope::open(Kind::Index, bytes, MAX_INDEX_BODY)?;
        let (count, mut rest) = take_u32(WHAT, body)?;
        if count > MAX_INDEX_SECTIONS {
            return Err(DecodeError::new(
                WHAT,
                format!("{count} sections exceed the limit of {MAX_INDEX_SECTIONS}"),
            ));
        }
        // Bound the count by the bytes present before allocating.
        if count as usize > rest.len() / MIN_SECTION_LEN {
            return Err(DecodeError::new(
                WHAT,
                format!("{count} packs cannot fit in {} bytes", rest.len()),
            ));
        }
        let mut packs = Vec::with_capacity(count as usize);
        let mut seen = HashSet::with_capacity(count as usize);
        for _ in 0..count {
            if rest.len() < MIN_SECTION_LEN {
                return Err(DecodeError::new(WHAT, "truncated section header"));
            }
            let id = PackId::from_slice(&rest[..32]).expect("32 bytes");
            if !seen.insert(id) {
                return Err(DecodeError::new(
                    WHAT,
                    format!("pack {id} has more than one section"),
                ));
            }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::pack::Compression;
    use crate::id::ChunkId;

    /// A table entry for chunk `c` (also used by the chunk index's tests).
    pub(crate) fn entry(c: &[u8], stored: u32) -> BlobEntry {
        BlobEntry {
            chunk: ChunkId::of(c),
            compression: Compression::Zstd,
            stored_len: stored,
            raw_len: stored * 2,
        }
    }

    /// Two packs: p1 with chunks a (10 bytes) and b (20), p2 with c (5).
    pub(crate) fn two_packs() -> IndexObject {
        IndexObject {
            packs: vec![
                (PackId::of(b"p1"), vec![entry(b"a", 10), entry(b"b", 20)]),
                (PackId::of(b"p2"), vec![entry(b"c", 5)]),
            ],
        }
    }

    #[test]
    fn index_round_trips_and_damage_is_an_error() {
        assert_eq!(
            IndexObject::decode(&two_packs().encode()).unwrap(),
            two_packs()
        );
        let obj = IndexObject {
            packs: vec![(PackId::of(b"p"), vec![entry(b"a", 1)])],
        };
        let bytes = obj.encode();
        for cut in 0..bytes.len() {
            assert!(IndexObject::decode(&bytes[..cut]).is_err());
        }
        // A huge pack count in a small body is refused before allocation.
        let mut body = MAX_INDEX_SECTIONS.to_le_bytes().to_vec();
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
