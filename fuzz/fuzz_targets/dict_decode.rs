//! Dictionary objects, and blobs compressed with a dictionary (compression 2), never make a
//! decoder panic. Input: dictionary length (u16 LE), raw_len / 16 (u16 LE), the dictionary
//! object, then the blob's frame. A dictionary object that decodes re-encodes to the same bytes;
//! the dictionary (or, failing the envelope, the raw bytes as a dictionary body) is loaded and
//! the frame, behind its id, decodes to exactly raw_len bytes or fails cleanly.
#![no_main]

use std::sync::Arc;

use layercas::format::dict::{self, DictId, Dictionary};
use layercas::format::pack::{self, BlobEntry, Compression};
use layercas::id::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let raw_len = u16::from_le_bytes([data[2], data[3]]) as u32 * 16;
    let rest = &data[4..];
    let (object, frame) = rest.split_at(n.min(rest.len()));
    let id = DictId::of(object);
    let body = match dict::decode(&id, object) {
        Ok(body) => {
            assert_eq!(dict::encode(&body), object);
            body
        }
        Err(_) => object.to_vec(),
    };
    let Some(d) = Dictionary::new(id, body) else {
        return;
    };
    if !dict::register(Arc::new(d)) {
        return; // the table is full: decoding would only say "not loaded"
    }
    let blob = [&id.0[..], frame].concat();
    let entry = BlobEntry {
        chunk: ChunkId::of(b""),
        compression: Compression::ZstdDict,
        stored_len: blob.len() as u32,
        raw_len,
    };
    if let Ok(raw) = pack::decode_blob(&entry, &blob) {
        assert_eq!(raw.len(), raw_len as usize);
    }
});
