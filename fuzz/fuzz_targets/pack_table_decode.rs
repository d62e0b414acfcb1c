//! Pack decoding never panics: the table of a whole pack, and every blob it lists.
#![no_main]

use layercas::format::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = pack::decode_pack_table(data) {
        let (offsets, end) = pack::offsets(&table);
        assert!(end <= data.len() as u64);
        for (entry, off) in table.iter().zip(offsets) {
            let blob = &data[off as usize..(off + entry.stored_len as u64) as usize];
            if let Ok(raw) = pack::decode_blob(entry, blob) {
                assert_eq!(raw.len(), entry.raw_len as usize);
            }
        }
    }
    let _ = pack::decode_table(data);
});
