//! Manifest (and the other msgpack envelopes) decoding never panics; what decodes re-encodes to
//! the same bytes.
#![no_main]

use layercas::format::config::StoreConfig;
use layercas::format::manifest::Manifest;
use layercas::format::metadata::TimelineMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data, "a decoded manifest must re-encode to its bytes");
        for f in &m.added {
            assert!(layercas::format::manifest::validate_name(&f.name).is_ok());
        }
    }
    if let Ok(c) = StoreConfig::decode(data) {
        assert_eq!(c.encode(), data);
    }
    if let Ok(md) = TimelineMetadata::from_file_bytes(data) {
        assert_eq!(md.to_file_bytes(), data);
    }
});
