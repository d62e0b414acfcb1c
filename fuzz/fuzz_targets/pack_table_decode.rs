//! Pack decoding never panics: the table of a whole pack, and every blob it lists; a blob
//! decoded into a vector and into a slice gives the same verdict and the same bytes.
#![no_main]

use layercas::format::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = pack::decode_pack_table(data) {
        let (offsets, end) = pack::offsets(&table);
        assert!(end <= data.len() as u64);
        for (entry, off) in table.iter().zip(offsets) {
            let blob = &data[off as usize..(off + entry.stored_len as u64) as usize];
            let mut out = vec![0; entry.raw_len as usize];
            let into = pack::decode_blob_into(entry, blob, &mut out);
            match pack::decode_blob(entry, blob) {
                Ok(raw) => {
                    assert_eq!(raw.len(), entry.raw_len as usize);
                    assert!(into.is_ok() && raw == out);
                }
                Err(_) => assert!(into.is_err()),
            }
        }
    }
    let _ = pack::decode_table(data);
});
