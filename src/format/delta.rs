//! Delta blobs (`compression` 3, format-spec section 5.2): a chunk compressed with the raw bytes
//! of another stored chunk, its *base*, as zstd's prefix, and the one implementation of encoding
//! and decoding them.
//!
//! A delta blob is indexed under [`delta_id`] of its chunk and base, never under the chunk's own
//! id: a manifest that references a chunk as a delta names the base beside it
//! (`ChunkRef::base`), so the ids it references say exactly which blobs it needs, and gc keeps
//! them by the same rules as any other. A base is always a whole blob (its own id), so a read
//! needs two blobs at most and never follows a chain.
//!
//! Owns the delta encoding and its checks. Must not find or fetch bases (restore, the writer) nor
//! know pack layout (`pack`).

use bytes::Bytes;

use crate::error::DecodeError;
use crate::format::blob::{Blob, check_zstd_frame};
use crate::format::pack::{BlobEntry, Compression};
use crate::id::ChunkId;

/// The first bytes of a zstd dictionary. zstd reads a dictionary that starts with them as a
/// structured dictionary, not as raw content, so no base may start with them.
const DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];

/// The context string of [`delta_id`]'s key derivation (blake3 `derive_key`).
const DELTA_ID_CONTEXT: &str = "layercas 2026-11 delta blob id v1";

/// The id under which the delta blob of `chunk` against `base` is indexed: blake3 in key
/// derivation mode over the two ids. It is the hash of no content, so it never names a whole
/// blob.
pub fn delta_id(chunk: &ChunkId, base: &ChunkId) -> ChunkId {
    let mut h = blake3::Hasher::new_derive_key(DELTA_ID_CONTEXT);
    h.update(chunk.as_bytes());
    h.update(base.as_bytes());
    ChunkId(*h.finalize().as_bytes())
}

/// Whether `base_raw` may serve as a base: not empty and not starting like a zstd dictionary.
pub fn usable_base(base_raw: &[u8]) -> bool {
    !base_raw.is_empty() && !base_raw.starts_with(&DICT_MAGIC)
}

/// Compresses `chunk` (whose id is `id`) at `level` with the bytes of `base` as the prefix.
/// `None` when the base is not usable (see [`usable_base`]) or zstd fails. The frame may be
/// larger than the chunk (an unrelated base): still a valid delta, whose id callers may already
/// have promised.
pub fn encode_delta_blob(
    id: ChunkId,
    chunk: &[u8],
    base: ChunkId,
    base_raw: &[u8],
    level: i32,
) -> Option<Blob> {
    if !usable_base(base_raw) || base == id {
        return None;
    }
    let frame = DELTA_CCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let cctx = slot.get_or_insert_with(zstd::zstd_safe::CCtx::create);
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(chunk.len()));
        cctx.compress_using_dict(&mut out, chunk, base_raw, level)
            .ok()
            .map(|_| out)
    })?;
    Some(Blob {
        entry: BlobEntry {
            chunk: delta_id(&id, &base),
            compression: Compression::Delta,
            stored_len: frame.len() as u32,
            raw_len: chunk.len() as u32,
        },
        data: Bytes::from(frame),
    })
}

/// The raw bytes of chunk `want`, stored as the delta blob `data` (table entry `entry`) against
/// `base`, whose raw bytes are `base_raw`. Checks that the entry is the delta of `want` against
/// `base`, the frame as for any zstd blob, and the result's length and hash.
pub fn decode_delta_blob(
    entry: &BlobEntry,
    data: &[u8],
    want: &ChunkId,
    base: &ChunkId,
    base_raw: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    const WHAT: &str = "delta blob";
    let fail = |why: String| Err(DecodeError::new(WHAT, why));
    if entry.compression != Compression::Delta || entry.chunk != delta_id(want, base) {
        return fail(format!(
            "entry {} is not the delta of chunk {want} against {base}",
            entry.chunk
        ));
    }
    if data.len() != entry.stored_len as usize {
        return fail(format!(
            "stored as {} bytes, expected {}",
            data.len(),
            entry.stored_len
        ));
    }
    if !usable_base(base_raw) {
        return fail(format!(
            "base {base} is empty or starts like a zstd dictionary"
        ));
    }
    check_zstd_frame(data, entry.raw_len).map_err(|e| DecodeError::new(WHAT, e))?;
    let mut out = Vec::with_capacity(entry.raw_len as usize);
    DELTA_DCTX
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            let dctx = slot.get_or_insert_with(zstd::zstd_safe::DCtx::create);
            dctx.decompress_using_dict(&mut out, data, base_raw)
        })
        .map_err(|code| {
            let name = zstd::zstd_safe::get_error_name(code);
            DecodeError::new(WHAT, format!("zstd with base {base}: {name}"))
        })?;
    if out.len() != entry.raw_len as usize {
        return fail(format!(
            "decompressed to {} bytes, expected {}",
            out.len(),
            entry.raw_len
        ));
    }
    if ChunkId::of(&out) != *want {
        return fail(format!("content does not hash to chunk {want}"));
    }
    Ok(out)
}

thread_local! {
    static DELTA_CCTX: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DELTA_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seed: u32) -> Vec<u8> {
        (0..32 * 1024u32)
            .map(|i| ((i / 7) ^ (i % 251) ^ seed) as u8)
            .collect()
    }

    #[test]
    fn a_delta_round_trips_only_with_its_base_and_chunk() {
        let base = page(0);
        let mut chunk = base.clone();
        chunk[1000..1010].copy_from_slice(b"0123456789");
        let (bid, cid) = (ChunkId::of(&base), ChunkId::of(&chunk));
        let blob = encode_delta_blob(cid, &chunk, bid, &base, 3).expect("smaller");
        assert!(blob.data.len() < 200, "{} bytes", blob.data.len());
        assert_eq!(blob.entry.chunk, delta_id(&cid, &bid));
        assert_eq!(blob.entry.compression, Compression::Delta);
        let back = decode_delta_blob(&blob.entry, &blob.data, &cid, &bid, &base).unwrap();
        assert_eq!(back, chunk);
        // Another base's bytes, another claimed chunk or base id: typed errors.
        let other = page(9);
        assert!(decode_delta_blob(&blob.entry, &blob.data, &cid, &bid, &other).is_err());
        assert!(decode_delta_blob(&blob.entry, &blob.data, &bid, &bid, &base).is_err());
        let oid = ChunkId::of(&other);
        assert!(decode_delta_blob(&blob.entry, &blob.data, &cid, &oid, &other).is_err());
        let mut cut = blob.entry;
        cut.stored_len -= 1;
        let short = &blob.data[..blob.data.len() - 1];
        assert!(decode_delta_blob(&cut, short, &cid, &bid, &base).is_err());
    }

    #[test]
    fn bases_that_zstd_would_read_as_dictionaries_are_refused() {
        let mut base = page(1);
        base[..4].copy_from_slice(&DICT_MAGIC);
        let chunk = page(2);
        let (bid, cid) = (ChunkId::of(&base), ChunkId::of(&chunk));
        assert!(encode_delta_blob(cid, &chunk, bid, &base, 3).is_none());
        assert!(encode_delta_blob(cid, &chunk, cid, &chunk, 3).is_none());
        assert!(!usable_base(&[]));
        // A delta id is never the id of the chunk or the base.
        assert_ne!(delta_id(&cid, &bid), cid);
        assert_ne!(delta_id(&cid, &bid), delta_id(&bid, &cid));
    }
}
