//! Packs: many compressed chunks ("blobs") in one object, followed by a table of its blobs so the
//! pack can be checked alone.
//!
//! ```text
//! pack    = blob_0 || ... || blob_{n-1} || table || table_len (u32 LE) || "LCPK"
//! table   = envelope(kind PackTable, body = count (u32 LE) || entry_0 || ... || entry_{n-1})
//! entry   = chunk id (32) || compression (u8) || stored_len (u32 LE) || raw_len (u32 LE)
//! blob    = raw chunk (compression 0) | zstd frame (1) | dictionary id (32) || zstd frame (2)
//!         | zstd frame against a base chunk (3, `format::delta`)
//! ```
//! Blob `i` starts at the sum of the stored lengths of the blobs before it. A pack's key is the
//! blake3 of all its bytes.
//!
//! Owns pack/table layout (blob encoding is `format::blob`, re-exported here). Must not decide
//! which chunks go into a pack or upload anything.

use bytes::Bytes;

use crate::error::DecodeError;
pub use crate::format::blob::*;
use crate::format::envelope::{self, Kind};
use crate::id::{ChunkId, PackId};

/// Bytes per table entry.
pub const ENTRY_LEN: usize = 32 + 1 + 4 + 4;
/// The last four bytes of every pack.
pub const PACK_MAGIC: [u8; 4] = *b"LCPK";
/// Bytes after the table: its length and the magic.
pub const TRAILER_LEN: usize = 8;
/// Most blobs one pack (and one index section) may list.
pub const MAX_BLOBS_PER_PACK: usize = 1 << 20;
/// Largest raw chunk any decoder accepts (FastCDC's own maximum).
pub const MAX_RAW_LEN: u32 = 16 << 20;

/// How a blob's bytes are stored. The values are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    /// The raw chunk bytes.
    None = 0,
    /// One zstd frame that decompresses to the raw chunk.
    Zstd = 1,
    /// The id of a dictionary object (32 bytes), then one zstd frame that decompresses to the
    /// raw chunk with that dictionary (format-spec section 5.1).
    ZstdDict = 2,
    /// One zstd frame that decompresses to the raw chunk with the raw bytes of another chunk,
    /// the base, as prefix; indexed under `format::delta::delta_id` of the chunk and the base,
    /// which the referencing manifest names (format-spec section 5.2).
    Delta = 3,
}

impl Compression {
    fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::ZstdDict),
            3 => Some(Compression::Delta),
            _ => None,
        }
    }
}

/// One row of a pack table or index section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// The chunk stored in the blob.
    pub chunk: ChunkId,
    /// How the blob's bytes are encoded.
    pub compression: Compression,
    /// Bytes the blob occupies in the pack.
    pub stored_len: u32,
    /// Bytes of the chunk once decoded, checked on read.
    pub raw_len: u32,
}

/// Appends the fixed-width encoding of `entries`.
pub fn encode_entries(entries: &[BlobEntry], out: &mut Vec<u8>) {
    out.reserve(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(e.chunk.as_bytes());
        out.push(e.compression as u8);
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
}

/// Decodes `count` entries from the front of `bytes`, returning them and the rest. `count` is
/// checked against the bytes present before allocating.
pub fn decode_entries<'a>(
    what: &'static str,
    bytes: &'a [u8],
    count: usize,
) -> Result<(Vec<BlobEntry>, &'a [u8]), DecodeError> {
    if count > MAX_BLOBS_PER_PACK {
        return Err(DecodeError::new(
            what,
            format!("{count} blobs exceed the limit of {MAX_BLOBS_PER_PACK}"),
        ));
    }
    let need = count * ENTRY_LEN;
    if bytes.len() < need {
        return Err(DecodeError::new(
            what,
            format!("{count} entries need {need} bytes, {} present", bytes.len()),
        ));
    }
    let (mine, rest) = bytes.split_at(need);
    let mut out = Vec::with_capacity(count);
    for (i, row) in mine.chunks_exact(ENTRY_LEN).enumerate() {
        let chunk = ChunkId::from_slice(&row[..32]).expect("32 bytes");
        let compression = Compression::from_byte(row[32]).ok_or_else(|| {
            DecodeError::new(what, format!("entry {i}: unknown compression {}", row[32]))
        })?;
        let stored_len = u32::from_le_bytes(row[33..37].try_into().expect("4 bytes"));
        let raw_len = u32::from_le_bytes(row[37..41].try_into().expect("4 bytes"));
        if raw_len > MAX_RAW_LEN {
            return Err(DecodeError::new(
                what,
                format!("entry {i}: raw length {raw_len} exceeds {MAX_RAW_LEN}"),
            ));
        }
        if compression == Compression::None && stored_len != raw_len {
            return Err(DecodeError::new(
                what,
                format!("entry {i}: uncompressed blob with stored {stored_len} != raw {raw_len}"),
            ));
        }
        let bound = max_stored_len(compression, raw_len);
        if stored_len as u64 > bound {
            return Err(DecodeError::new(
                what,
                format!(
                    "entry {i}: zstd blob of {stored_len} bytes exceeds the bound of {bound} for \
                     {raw_len} raw bytes"
                ),
            ));
        }
        out.push(BlobEntry {
            chunk,
            compression,
            stored_len,
            raw_len,
        });
    }
    Ok((out, rest))
}

/// Offsets of the blobs described by `entries`, in order, and the end of the last one.
pub fn offsets(entries: &[BlobEntry]) -> (Vec<u64>, u64) {
    let mut pos = 0u64;
    let offs = entries
        .iter()
        .map(|e| {
            let at = pos;
            pos += e.stored_len as u64;
            at
        })
        .collect();
    (offs, pos)
}

/// Collects blobs until a pack is full.
#[derive(Default, Debug)]
pub struct PackBuilder {
    blobs: Vec<Bytes>,
    entries: Vec<BlobEntry>,
    size: u64,
}

/// A finished pack: its id, bytes (as parts, never concatenated) and table.
#[derive(Debug)]
pub struct SealedPack {
    /// The pack's hash, its name in the store.
    pub id: PackId,
    /// The blobs, then the table and trailer: the pack is their concatenation.
    pub parts: Vec<Bytes>,
    /// The pack's blob table, for the index object written after it.
    pub entries: Vec<BlobEntry>,
}

impl SealedPack {
    /// Bytes of the whole pack.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    /// True for a pack of no bytes (never the case for a sealed pack: it has a table).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pack's bytes in one buffer (for tests and vectors; uploads send the parts).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

impl PackBuilder {
    /// Adds a blob.
    pub fn push(&mut self, blob: Blob) {
        self.size += blob.data.len() as u64;
        self.entries.push(blob.entry);
        self.blobs.push(blob.data);
    }

    /// Bytes of blob data so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the pack should be sealed before taking more.
    pub fn is_full(&self, target: u64) -> bool {
        self.size >= target || self.entries.len() >= MAX_BLOBS_PER_PACK
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the table and trailer and names the pack by its hash.
    pub fn seal(self) -> SealedPack {
        let mut body = Vec::with_capacity(4 + self.entries.len() * ENTRY_LEN);
        body.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        encode_entries(&self.entries, &mut body);
        let mut tail = envelope::seal(Kind::PackTable, &body);
        let table_len = tail.len() as u32;
        tail.extend_from_slice(&table_len.to_le_bytes());
        tail.extend_from_slice(&PACK_MAGIC);
        let mut parts = self.blobs;
        parts.push(Bytes::from(tail));
        let mut hasher = blake3::Hasher::new();
        for p in &parts {
            hasher.update(p);
        }
        let id = PackId(*hasher.finalize().as_bytes());
        SealedPack {
            id,
            parts,
            entries: self.entries,
        }
    }
}

/// Length of the table envelope given a pack's last [`TRAILER_LEN`] bytes.
pub fn table_len_from_trailer(trailer: &[u8]) -> Result<u32, DecodeError> {
    if trailer.len() != TRAILER_LEN || trailer[4..] != PACK_MAGIC {
        return Err(DecodeError::new(
            "pack trailer",
            "missing LCPK magic at the end of the pack",
        ));
    }
    Ok(u32::from_le_bytes(
        trailer[..4].try_into().expect("4 bytes"),
    ))
}

/// Largest table body a decoder accepts.
const MAX_TABLE_BODY: u64 = (4 + MAX_BLOBS_PER_PACK * ENTRY_LEN) as u64;

/// Decodes a pack table envelope.
pub fn decode_table(table: &[u8]) -> Result<Vec<BlobEntry>, DecodeError> {
    const WHAT: &str = "pack table";
    let body = envelope::open(Kind::PackTable, table, MAX_TABLE_BODY)?;
    if body.len() < 4 {
        return Err(DecodeError::new(WHAT, "body shorter than its count"));
    }
    let count = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
    let (entries, rest) = decode_entries(WHAT, &body[4..], count)?;
    if !rest.is_empty() {
        return Err(DecodeError::new(
            WHAT,
            format!("{} bytes after the last entry", rest.len()),
        ));
    }
    Ok(entries)
}

/// Decodes the table of a whole pack held in memory and checks the blobs fill the space before it.
pub fn decode_pack_table(pack: &[u8]) -> Result<Vec<BlobEntry>, DecodeError> {
    if pack.len() < TRAILER_LEN {
        return Err(DecodeError::new(
            "pack",
            format!("{} bytes is too short for a pack", pack.len()),
        ));
    }
    let table_len = table_len_from_trailer(&pack[pack.len() - TRAILER_LEN..])? as usize;
    let table_end = pack.len() - TRAILER_LEN;
    let table_start = table_end.checked_sub(table_len).ok_or_else(|| {
        DecodeError::new("pack", format!("table length {table_len} exceeds the pack"))
    })?;
    let entries = decode_table(&pack[table_start..table_end])?;
    check_blobs_fill(&entries, table_start as u64)?;
    Ok(entries)
}

/// Checks that `entries`' blobs end exactly where the table begins.
pub fn check_blobs_fill(entries: &[BlobEntry], table_start: u64) -> Result<(), DecodeError> {
    let (_, end) = offsets(entries);
    if end != table_start {
        return Err(DecodeError::new(
            "pack",
            format!("blobs end at {end} but the table starts at {table_start}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pack() -> (SealedPack, Vec<Vec<u8>>) {
        let chunks: Vec<Vec<u8>> = vec![
            vec![b'a'; 5000],
            (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            vec![],
        ];
        let mut b = PackBuilder::default();
        for c in &chunks {
            b.push(encode_blob(ChunkId::of(c), c, 3));
        }
        (b.seal(), chunks)
    }

    #[test]
    fn pack_round_trips_and_is_named_by_its_hash() {
        let (sealed, chunks) = sample_pack();
        let bytes = sealed.to_vec();
        assert_eq!(PackId::of(&bytes), sealed.id);
        let entries = decode_pack_table(&bytes).unwrap();
        assert_eq!(entries, sealed.entries);
        assert_eq!(entries[0].compression, Compression::Zstd);
        let (offs, _) = offsets(&entries);
        for ((e, off), raw) in entries.iter().zip(offs).zip(&chunks) {
            let data = &bytes[off as usize..(off + e.stored_len as u64) as usize];
            assert_eq!(&decode_blob(e, data).unwrap(), raw);
        }
    }

    #[test]
    fn damaged_packs_and_blobs_are_typed_errors() {
        let (sealed, _) = sample_pack();
        let bytes = sealed.to_vec();
        for cut in 1..bytes.len() {
            assert!(
                decode_pack_table(&bytes[cut..]).is_err(),
                "front cut {cut} accepted"
            );
            assert!(
                decode_pack_table(&bytes[..cut]).is_err(),
                "end cut {cut} accepted"
            );
        }
        let e = sealed.entries[0];
        let mut blob = bytes[..e.stored_len as usize].to_vec();
        blob[10] ^= 0x40;
        assert!(decode_blob(&e, &blob).is_err());
        // A zstd frame that claims more output than raw_len is refused, not allocated.
        let big = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        let lie = BlobEntry {
            chunk: ChunkId::of(b""),
            compression: Compression::Zstd,
            stored_len: big.len() as u32,
            raw_len: 10,
        };
        assert!(decode_blob(&lie, &big).is_err());
    }
}
