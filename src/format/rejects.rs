//! Must-reject tests of the decoders: one test per rule of format-spec that an object can break
//! while its envelope is intact (valid checksum), each checking the decoder refuses it with an
//! error naming the rule. Test-only; the vectors in `format-spec/vectors/reject/` repeat these
//! cases for other implementations.

use crate::format::envelope::{self, Kind};
use crate::format::index::{IndexObject, MAX_INDEX_SECTIONS};
use crate::format::manifest::{MAX_FILE_SIZE, MAX_NAME_LEN, Manifest, TimelineState};
use crate::format::pack::{self, BlobEntry, Compression, MAX_RAW_LEN};
use crate::id::{ChunkId, Lsn, PackId};
use crate::testkit::manifests::{file, manifest};

fn reason_of(bytes: &[u8]) -> String {
    Manifest::decode(bytes).unwrap_err().reason
}

#[test]
fn base_manifests_with_a_predecessor_removals_or_other_flags_are_rejected() {
    let mut base = manifest(0x10, None, vec![file("a", b"a")], &[]);
    base.base = true;
    assert!(Manifest::decode(&base.encode()).is_ok());
    let mut with_prev = base.clone();
    with_prev.prev_lsn = Some(Lsn(1));
    assert!(reason_of(&with_prev.encode()).contains("no previous lsn"));
    let mut with_removed = base.clone();
    with_removed.removed = vec!["b".into()];
    assert!(reason_of(&with_removed.encode()).contains("removes nothing"));
    for flags in [0u8, 2, 3, 0x81] {
        let body = envelope::encode_msgpack(&(&base, flags));
        let bytes = envelope::seal_version(Kind::Manifest, 2, &body);
        assert!(reason_of(&bytes).contains("flags"), "flags {flags}");
    }
}

#[test]
fn chunk_and_file_size_limits_and_name_rules_are_enforced() {
    let mut m = manifest(0x10, None, vec![file("a", b"a")], &[]);
    m.added[0].chunks[0].len = MAX_RAW_LEN + 1;
    m.added[0].size = (MAX_RAW_LEN + 1) as u64;
    assert!(reason_of(&m.encode()).contains("exceeds"));
    m.added[0].size = MAX_FILE_SIZE + 1;
    assert!(reason_of(&m.encode()).contains("limit of"));
    for bad in ["metadata/x", "metadata"] {
        let m = manifest(0x10, None, vec![file(bad, b"a")], &[]);
        assert!(reason_of(&m.encode()).contains("reserved"), "{bad}");
    }
    let long = format!("{}/{}", "d".repeat(200), "f".repeat(200)).repeat(3);
    assert!(long.len() > MAX_NAME_LEN);
    let m = manifest(0x10, None, vec![file(&long, b"a")], &[]);
    assert!(reason_of(&m.encode()).contains("longer than"));
    let m = manifest(0x10, Some(8), vec![], &["a", "a"]);
    assert!(reason_of(&m.encode()).contains("twice"));
}

#[test]
fn the_fold_rejects_removing_absent_names_and_names_that_clash_on_disk() {
    let first = manifest(0x10, None, vec![file("x", b"x")], &[]);
    let absent = manifest(0x20, Some(0x10), vec![], &["y"]);
    let e = TimelineState::fold_checked([first.clone(), absent]).unwrap_err();
    assert!(e.reason.contains("does not hold"), "{e}");
    let clash = manifest(0x20, Some(0x10), vec![file("x/y", b"y")], &[]);
    let e = TimelineState::fold_checked([first.clone(), clash]).unwrap_err();
    assert!(e.reason.contains("clashes"), "{e}");
    // What a writer checks before creating a manifest: the same two rules, one step at a time.
    let state = TimelineState::fold([first.clone()]);
    let clash = manifest(0x20, Some(0x10), vec![file("x/y", b"y")], &[]);
    assert!(
        TimelineState::next_checked(state.clone(), clash)
            .unwrap_err()
            .contains("clashes")
    );
    let absent = manifest(0x20, Some(0x10), vec![], &["y"]);
    assert!(
        TimelineState::next_checked(state, absent)
            .unwrap_err()
            .contains("does not hold")
    );
    // Replacing `x` by a directory `x/` in one step is fine: removals come first.
    let replace = manifest(0x20, Some(0x10), vec![file("x/y", b"y")], &["x"]);
    let s = TimelineState::fold_checked([first, replace])
        .unwrap()
        .unwrap();
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["x/y"]);
}

/// A msgpack body with one header replaced by a longer (non-canonical) form, resealed.
fn respelled(m: &Manifest, from: &[u8], to: &[u8]) -> Vec<u8> {
    let body = envelope::encode_msgpack(m);
    let at = body.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = body[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&body[at + from.len()..]);
    envelope::seal(Kind::Manifest, &out)
}

#[test]
fn non_canonical_str_bin_and_array_headers_are_rejected() {
    let m = manifest(0x10, None, vec![file("abc", b"a")], &[]);
    assert!(Manifest::decode(&m.encode()).is_ok());
    // fixstr "abc" as str 8; the tenant's bin 8 as bin 16; the 7-field array as array 16.
    let cases: [(&[u8], &[u8]); 3] = [
        (b"\xa3abc", b"\xd9\x03abc"),
        (b"\xc4\x10", b"\xc5\x00\x10"),
        (b"\x97\xc4", b"\xdc\x00\x07\xc4"),
    ];
    for (from, to) in cases {
        let e = Manifest::decode(&respelled(&m, from, to)).unwrap_err();
        assert!(e.reason.contains("canonical"), "{to:02x?}: {e}");
    }
}

fn index_body(sections: &[(PackId, Vec<BlobEntry>)], count: u32) -> Vec<u8> {
    let obj = IndexObject {
        packs: sections.to_vec(),
    };
    let mut body = envelope::open(Kind::Index, &obj.encode(), u64::MAX)
        .unwrap()
        .to_vec();
    body[..4].copy_from_slice(&count.to_le_bytes());
    body
}

#[test]
fn index_objects_with_extra_bytes_duplicate_packs_or_too_many_sections_are_rejected() {
    let e = |c: &[u8]| BlobEntry {
        chunk: ChunkId::of(c),
        compression: Compression::None,
        stored_len: c.len() as u32,
        raw_len: c.len() as u32,
    };
    let p = PackId([7; 32]);
    let decode = |body: &[u8]| IndexObject::decode(&envelope::seal(Kind::Index, body));
    let mut body = index_body(&[(p, vec![e(b"a")])], 1);
    assert!(decode(&body).is_ok());
    body.push(0);
    assert!(decode(&body).unwrap_err().reason.contains("after the last"));
    let dup = index_body(&[(p, vec![e(b"a")]), (p, vec![e(b"b")])], 2);
    assert!(decode(&dup).unwrap_err().reason.contains("more than one"));
    let many = index_body(&[], MAX_INDEX_SECTIONS + 1);
    assert!(
        decode(&many)
            .unwrap_err()
            .reason
            .contains("exceed the limit")
    );
}

/// A pack table envelope around `body`.
fn table(body: &[u8]) -> Vec<u8> {
    envelope::seal(Kind::PackTable, body)
}

#[test]
fn pack_tables_of_the_wrong_length_or_unbounded_zstd_blobs_are_rejected() {
    let entry = |compression: Compression, stored: u32, raw: u32| {
        let mut body = 1u32.to_le_bytes().to_vec();
        let e = BlobEntry {
            chunk: ChunkId::of(b"x"),
            compression,
            stored_len: stored,
            raw_len: raw,
        };
        pack::encode_entries(&[e], &mut body);
        body
    };
    let ok = entry(Compression::Zstd, 20, 100);
    assert!(pack::decode_table(&table(&ok)).is_ok());
    let mut long = ok.clone();
    long.push(0);
    assert!(pack::decode_table(&table(&long)).is_err());
    let bound = pack::max_zstd_len(100) as u32;
    assert!(pack::decode_table(&table(&entry(Compression::Zstd, bound, 100))).is_ok());
    let over = entry(Compression::Zstd, bound + 1, 100);
    let err = pack::decode_table(&table(&over)).unwrap_err();
    assert!(err.reason.contains("exceeds the bound"), "{err}");
}

#[test]
fn zstd_blobs_must_be_one_frame_of_the_recorded_size() {
    let raw = vec![5u8; 1000];
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    let entry = |data: &[u8], raw_len: u32| BlobEntry {
        chunk: ChunkId::of(&raw),
        compression: Compression::Zstd,
        stored_len: data.len() as u32,
        raw_len,
    };
    assert_eq!(
        pack::decode_blob(&entry(&frame, 1000), &frame).unwrap(),
        raw
    );
    let reason = |data: &[u8], raw_len: u32| {
        pack::decode_blob(&entry(data, raw_len), data)
            .unwrap_err()
            .reason
    };
    // The header's content size is checked against raw_len before decompressing.
    assert!(reason(&frame, 999).contains("header says 1000"));
    let two = [frame.clone(), frame.clone()].concat();
    assert!(reason(&two, 2000).contains("after its first zstd frame"));
    let trailing = [frame.clone(), vec![0]].concat();
    assert!(reason(&trailing, 1000).contains("after its first zstd frame"));
    // A skippable frame (magic 0x184D2A50) holding nothing is not a blob.
    let skippable = [0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
    assert!(reason(&skippable, 0).contains("magic"));
    assert!(reason(&frame[..frame.len() - 1], 1000).contains("complete"));
}
