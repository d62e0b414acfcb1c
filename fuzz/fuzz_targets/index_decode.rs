//! Index decoding never panics; what decodes re-encodes to the same bytes and loads into a chunk
//! index.
#![no_main]

use layercas::format::index::IndexObject;
use layercas::store::chunk_index::ChunkIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(obj) = IndexObject::decode(data) {
        assert_eq!(obj.encode(), data);
        let mut index = ChunkIndex::new();
        index.add_object(&obj);
    }
});
