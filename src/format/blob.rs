//! Blobs: one chunk as stored in a pack — raw, one zstd frame, or a dictionary id and one zstd
//! frame compressed with that dictionary — and the one implementation of encoding and decoding
//! them (restore, verify, gc and the fuzzers decode through [`decode_blob`]; a writer's delta
//! bases through [`decode_blob_into`], a caller's buffer, with the same checks).
//!
//! Owns compression, decompression and every check on a blob's bytes. Must not know pack or
//! table layout (`pack`) nor load dictionaries (`store::dicts`; decoding finds them in
//! [`dict`]'s table).

use bytes::Bytes;
use zstd::zstd_safe::WriteBuf;

use crate::error::DecodeError;
use crate::format::dict::{self, DictId, Encoder};
use crate::format::pack::{BlobEntry, Compression};
use crate::id::ChunkId;

/// Largest stored length of a zstd blob of `raw_len` raw bytes: zstd's compress bound
/// (`ZSTD_COMPRESSBOUND`), the most its compressor ever produces for that input.
pub fn max_zstd_len(raw_len: u32) -> u64 {
    zstd::zstd_safe::compress_bound(raw_len as usize) as u64
}

/// Largest stored length of a blob of `raw_len` raw bytes with `compression`: the raw length,
/// zstd's compress bound (also for a delta's frame), or the bound plus the dictionary id in
/// front of the frame.
pub fn max_stored_len(compression: Compression, raw_len: u32) -> u64 {
    match compression {
        Compression::None => raw_len as u64,
        Compression::Zstd | Compression::Delta => max_zstd_len(raw_len),
        Compression::ZstdDict => DICT_ID_LEN as u64 + max_zstd_len(raw_len),
    }
}

/// Bytes of the dictionary id in front of a [`Compression::ZstdDict`] blob's frame.
pub const DICT_ID_LEN: usize = 32;

/// The magic number at the start of every zstd frame (RFC 8878), little-endian 0xFD2FB528.
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Checks, from the frame header alone and before anything is decompressed, that `data` is
/// exactly one zstd frame (not a skippable frame, nothing after it) whose content size, when the
/// header records one, is `raw_len`.
pub fn check_zstd_frame(data: &[u8], raw_len: u32) -> Result<(), String> {
    if data.len() < 4 || data[..4] != ZSTD_FRAME_MAGIC {
        return Err("does not start with the zstd frame magic".into());
    }
    let frame = zstd::zstd_safe::find_frame_compressed_size(data)
        .map_err(|_| "is not a complete zstd frame".to_string())?;
    if frame != data.len() {
        return Err(format!(
            "holds {} bytes after its first zstd frame of {frame}",
            data.len() - frame.min(data.len())
        ));
    }
    match zstd::zstd_safe::get_frame_content_size(data) {
        Err(_) => Err("has an unreadable zstd frame header".into()),
        Ok(Some(n)) if n != raw_len as u64 => Err(format!(
            "zstd frame header says {n} content bytes, the entry says {raw_len}"
        )),
        Ok(_) => Ok(()),
    }
}

/// A compressed chunk ready to go into a pack.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Where the blob is in its pack and how it is encoded.
    pub entry: BlobEntry,
    /// The blob's bytes as stored (still compressed).
    pub data: Bytes,
}

/// Compresses `chunk` (whose id is `id`) with zstd at `level`, keeping the raw bytes when that
/// does not make it smaller.
pub fn encode_blob(id: ChunkId, chunk: &[u8], level: i32) -> Blob {
    blob_of(id, chunk, compress(chunk, level), Compression::Zstd)
}

/// Compresses `chunk` with the dictionary `dict` (at the level it was prepared for), keeping the
/// raw bytes when that does not make it smaller.
pub fn encode_blob_with(id: ChunkId, chunk: &[u8], dict: &Encoder) -> Blob {
    blob_of(id, chunk, compress_with(chunk, dict), Compression::ZstdDict)
}

/// The blob of `chunk`: `compressed` (encoded as `how`) when it is smaller, else the raw bytes.
fn blob_of(id: ChunkId, chunk: &[u8], compressed: Option<Vec<u8>>, how: Compression) -> Blob {
    let (compression, data) = match compressed.filter(|c| c.len() < chunk.len()) {
        Some(c) => (how, Bytes::from(c)),
        None => (Compression::None, Bytes::copy_from_slice(chunk)),
    };
    Blob {
        entry: BlobEntry {
            chunk: id,
            compression,
            stored_len: data.len() as u32,
            raw_len: chunk.len() as u32,
        },
        data,
    }
}

/// The raw chunk of a stored blob, checked: it decompresses to exactly `raw_len` bytes (never
/// more is allocated) and hashes to the entry's chunk id.
pub fn decode_blob(entry: &BlobEntry, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_stored(entry, data)?;
    let raw = match entry.compression {
        Compression::None => data.to_vec(),
        _ => {
            let mut out = Vec::with_capacity(entry.raw_len as usize);
            decompress_blob(entry, data, &mut out)?;
            out
        }
    };
    check_raw(entry, &raw)?;
    Ok(raw)
}

/// Like [`decode_blob`], into `out`, which must be exactly the entry's `raw_len` bytes.
pub fn decode_blob_into(entry: &BlobEntry, data: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    check_stored(entry, data)?;
    if out.len() != entry.raw_len as usize {
        return Err(len_error("given", out.len(), entry.raw_len));
    }
    let n = match entry.compression {
        Compression::None if data.len() == out.len() => {
            out.copy_from_slice(data);
            data.len()
        }
        Compression::None => return Err(len_error("stored as", data.len(), entry.raw_len)),
        _ => decompress_blob(entry, data, out)?,
    };
    check_raw(entry, &out[..n])
}

fn len_error(what: &str, got: usize, want: u32) -> DecodeError {
    DecodeError::new("blob", format!("{what} {got} bytes, expected {want}"))
}

/// Checks that `data` is as long as the entry says it is stored.
fn check_stored(entry: &BlobEntry, data: &[u8]) -> Result<(), DecodeError> {
    if data.len() != entry.stored_len as usize {
        return Err(len_error("stored as", data.len(), entry.stored_len));
    }
    Ok(())
}

/// Checks that `raw` is the entry's chunk: its length and its hash.
fn check_raw(entry: &BlobEntry, raw: &[u8]) -> Result<(), DecodeError> {
    if raw.len() != entry.raw_len as usize {
        return Err(len_error("decompressed to", raw.len(), entry.raw_len));
    }
    if ChunkId::of(raw) != entry.chunk {
        let why = "content does not hash to its chunk id".to_string();
        return Err(DecodeError::new("blob", why));
    }
    Ok(())
}

/// Decompresses a zstd or dictionary blob into `out` (at most its capacity); returns the
/// bytes written.
fn decompress_blob<C: WriteBuf + ?Sized>(
    entry: &BlobEntry,
    data: &[u8],
    out: &mut C,
) -> Result<usize, DecodeError> {
    const WHAT: &str = "blob";
    match entry.compression {
        Compression::Zstd => {
            check_zstd_frame(data, entry.raw_len).map_err(|e| DecodeError::new(WHAT, e))?;
            decompress(data, out).map_err(|e| DecodeError::new(WHAT, format!("zstd: {e}")))
        }
        Compression::ZstdDict => decode_dict_blob(data, entry.raw_len, out),
        Compression::Delta => Err(DecodeError::new(
            WHAT,
            "is a delta, decoded only with its base (format::delta)",
        )),
        Compression::None => Err(DecodeError::new(WHAT, "is not compressed")),
    }
}

/// Checks a blob as far as its pack alone allows: a whole blob decodes to its chunk; a delta's
/// frame is well formed (its content needs the base and the chunk id its manifest names:
/// `format::delta`).
pub fn check_blob(entry: &BlobEntry, data: &[u8]) -> Result<(), DecodeError> {
    if entry.compression != Compression::Delta {
        return decode_blob(entry, data).map(drop);
    }
    if data.len() != entry.stored_len as usize {
        let why = format!(
            "stored as {} bytes, expected {}",
            data.len(),
            entry.stored_len
        );
        return Err(DecodeError::new("delta blob", why));
    }
    check_zstd_frame(data, entry.raw_len).map_err(|e| DecodeError::new("delta blob", e))
}

/// Decompresses a [`Compression::ZstdDict`] blob with the loaded dictionary it names, into at
/// most `raw_len` bytes.
fn decode_dict_blob<C: WriteBuf + ?Sized>(
    data: &[u8],
    raw_len: u32,
    out: &mut C,
) -> Result<usize, DecodeError> {
    const WHAT: &str = "blob";
    if data.len() < DICT_ID_LEN {
        return Err(DecodeError::new(WHAT, "shorter than its dictionary id"));
    }
    let (id, frame) = data.split_at(DICT_ID_LEN);
    let id = DictId(id.try_into().expect("32 bytes"));
    check_zstd_frame(frame, raw_len).map_err(|e| DecodeError::new(WHAT, e))?;
    let d = dict::get(&id).ok_or_else(|| {
        DecodeError::new(WHAT, format!("names dictionary {id}, which is not loaded"))
    })?;
    DICT_DCTX
        .with(|cell| {
            let mut dctx = cell.borrow_mut();
            let dctx = dctx.get_or_insert_with(zstd::zstd_safe::DCtx::create);
            dctx.decompress_using_ddict(out, frame, d.ddict())
        })
        .map_err(|code| {
            let name = zstd::zstd_safe::get_error_name(code);
            DecodeError::new(WHAT, format!("zstd with dictionary {id}: {name}"))
        })
}

/// zstd-compresses `data` with `dict` and this thread's context, the dictionary id in front;
/// `None` if zstd fails.
fn compress_with(data: &[u8], dict: &Encoder) -> Option<Vec<u8>> {
    let mut out = vec![0; DICT_ID_LEN + zstd::zstd_safe::compress_bound(data.len())];
    out[..DICT_ID_LEN].copy_from_slice(&dict.id.0);
    // A context with the dictionary loaded (not a prepared CDict): zstd then picks parameters for
    // each chunk's known size, which stores about 5% less on pgbench data (benches/compression.rs).
    let n = DICT_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot
            .as_ref()
            .is_none_or(|(id, l, _)| (*id, *l) != (dict.id, dict.level))
        {
            let c = zstd::bulk::Compressor::with_dictionary(dict.level, dict.bytes()).ok()?;
            *slot = Some((dict.id, dict.level, c));
        }
        let c = &mut slot.as_mut()?.2;
        c.compress_to_buffer(data, &mut out[DICT_ID_LEN..]).ok()
    })?;
    out.truncate(DICT_ID_LEN + n);
    Some(out)
}

thread_local! {
    /// Contexts for dictionary blobs (the dictionary is passed per call).
    #[allow(clippy::type_complexity)]
    static DICT_COMPRESSOR: std::cell::RefCell<Option<(DictId, i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DICT_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd context per thread (and level): setting one up per chunk costs about as much as
    /// compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd-compresses `data` at `level` with this thread's context; `None` if zstd fails.
fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        slot.as_mut()?.1.compress(data).ok()
    })
}

/// Decompresses one zstd frame into `out` (at most its capacity) with this thread's context.
fn decompress<C: WriteBuf + ?Sized>(data: &[u8], out: &mut C) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut()
            .expect("just set")
            .decompress_to_buffer(data, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_into_a_slice_checks_what_decoding_into_a_vector_does() {
        let chunk = b"layercas blob ".repeat(2000);
        let id = ChunkId::of(&chunk);
        let zstd = encode_blob(id, &chunk, 3);
        let raw = BlobEntry {
            compression: Compression::None,
            stored_len: chunk.len() as u32,
            ..zstd.entry
        };
        for (entry, data) in [(zstd.entry, &zstd.data[..]), (raw, &chunk[..])] {
            let mut out = vec![0; chunk.len()];
            decode_blob_into(&entry, data, &mut out).unwrap();
            assert_eq!(out, chunk, "{:?}", entry.compression);
            let mut short = vec![0; chunk.len() - 1];
            let e = decode_blob_into(&entry, data, &mut short).unwrap_err();
            assert!(e.to_string().contains("expected"), "{e}");
            let other = BlobEntry {
                chunk: ChunkId::of(b"another chunk"),
                ..entry
            };
            let e = decode_blob_into(&other, data, &mut out).unwrap_err();
            assert!(e.to_string().contains("does not hash"), "{e}");
            assert!(decode_blob_into(&entry, &data[1..], &mut out).is_err());
        }
    }

    #[test]
    fn dictionary_blobs_round_trip_and_name_a_loaded_dictionary() {
        let samples: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("{i:05} account {} balance {}\n", i * 7 % 91, i * 13).repeat(40))
            .map(String::into_bytes)
            .collect();
        let trained = dict::train(samples.iter().map(Vec::as_slice), 4096).expect("trained");
        let object = dict::encode(&trained);
        let d = std::sync::Arc::new(dict::Dictionary::new(DictId::of(&object), trained).unwrap());
        let enc = Encoder::new(&d, 3).unwrap();
        let chunk = &samples[7];
        let blob = encode_blob_with(ChunkId::of(chunk), chunk, &enc);
        assert_eq!(blob.entry.compression, Compression::ZstdDict);
        assert_eq!(&blob.data[..DICT_ID_LEN], &d.id.0);
        // Not loaded in this process yet: a clear error, not a panic or a wrong chunk.
        let e = decode_blob(&blob.entry, &blob.data).unwrap_err();
        assert!(e.reason.contains("not loaded"), "{e}");
        assert!(dict::register(d.clone()));
        assert_eq!(&decode_blob(&blob.entry, &blob.data).unwrap(), chunk);
        // The frame is checked like a plain zstd blob's, and bounded by raw_len.
        let mut short = blob.entry;
        short.raw_len -= 1;
        assert!(decode_blob(&short, &blob.data).is_err());
        let e = decode_blob(&blob.entry, &blob.data[..20]).unwrap_err();
        assert!(e.reason.contains("stored as"), "{e}");
        let mut cut = blob.entry;
        cut.stored_len = 20;
        let e = decode_blob(&cut, &blob.data[..20]).unwrap_err();
        assert!(e.reason.contains("dictionary id"), "{e}");
        let bound = max_stored_len(Compression::ZstdDict, 100);
        assert_eq!(bound, 32 + max_zstd_len(100));
    }
}
