//! The test vectors of format-spec/vectors/: each decodes to the value written here, and
//! re-encodes to the same bytes. Set LAYERCAS_WRITE_VECTORS=1 to (re)write them from these values
//! after a deliberate format change (refused when `CI` is set).
//!
//! Either way each vector is also checked against values derived here from the spec alone
//! (envelope framing and checksum, msgpack bodies spelled out byte by byte, blake3 of known
//! inputs), so rewritten vectors are still compared with something the encoder did not produce.

#[path = "common/reject_vectors.rs"]
mod reject_vectors;

use std::path::{Path, PathBuf};

use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::delta;
use layercas::format::dict;
use layercas::format::gc_seal::GcSeal;
use layercas::format::gc_state::{GcState, Phase};
use layercas::format::index::IndexObject;
use layercas::format::intent::Intent;
use layercas::format::manifest::{ChunkRef, FileEntry, Manifest};
use layercas::format::manifest_cache::CacheShard;
use layercas::format::metadata::TimelineMetadata;
use layercas::format::pack::{self, PackBuilder};
use layercas::id::{ChunkId, FileHash, Lsn, PackId, TenantId, TimelineId};

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("format-spec/vectors")
        .join(format!("{name}.hex"))
}

/// A vector file's text.
fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("vector {}: {e}", path.display()))
}

/// Hex with whitespace and `#` comments allowed.
fn read_hex(name: &str) -> Vec<u8> {
    let text = read_text(&vector_path(name));
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn writing_vectors() -> bool {
    let writing = std::env::var_os("LAYERCAS_WRITE_VECTORS").is_some();
    assert!(
        !(writing && std::env::var_os("CI").is_some()),
        "LAYERCAS_WRITE_VECTORS is refused under CI: vectors are written deliberately, locally"
    );
    writing
}

/// The stored vector `name`. Normally it must equal the encoder's output; when writing vectors,
/// it is (re)written from that output first, and only the spec-derived checks of the caller
/// compare it with something independent.
fn check(name: &str, comment: &str, encoded: &[u8]) -> Vec<u8> {
    if writing_vectors() {
        let lines: Vec<String> = encoded.chunks(32).map(hex::encode).collect();
        std::fs::write(
            vector_path(name),
            format!("# {comment}\n{}\n", lines.join("\n")),
        )
        .unwrap();
    }
    let stored = read_hex(name);
    assert_eq!(
        hex::encode(&stored),
        hex::encode(encoded),
        "vector {name} differs from the encoder's output"
    );
    stored
}

/// The body of an envelope of `kind`, framed as the spec says (not parsed by the library); its
/// blake3 checksum is recomputed.
fn envelope_body(bytes: &[u8], kind: u8) -> &[u8] {
    envelope_body_version(bytes, kind, 1)
}

/// Like [`envelope_body`], for an envelope of body format `version`.
fn envelope_body_version(bytes: &[u8], kind: u8, version: u8) -> &[u8] {
    assert_eq!(&bytes[..4], b"LCAS", "magic");
    assert_eq!(
        &bytes[4..8],
        &[kind, version, 0, 0],
        "kind, version, reserved"
    );
    let n = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 16 + n + 32, "length");
    assert_eq!(
        &bytes[16 + n..],
        blake3::hash(&bytes[..16 + n]).as_bytes(),
        "checksum"
    );
    &bytes[16..16 + n]
}

/// Hex with spaces, for bodies spelled out by hand.
fn spelled(hex_digits: &str) -> Vec<u8> {
    hex::decode(hex_digits.replace(' ', "")).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn metadata() -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: Lsn(0x16_B374_D848),
        prev_record_lsn: Some(Lsn(0x16_B374_D810)),
        ancestor_timeline: Some(TimelineId([0x11; 16])),
        ancestor_lsn: Lsn(0x15_0000_0000),
        latest_gc_cutoff_lsn: Lsn(0x16_0000_0000),
        initdb_lsn: Lsn(0x0169_AD18),
        file: None,
    }
}

#[test]
fn timeline_metadata_vector() {
    let bytes = check(
        "metadata",
        "timeline metadata file: see README.md, 'Timeline metadata'",
        &metadata().to_file_bytes(),
    );
    // msgpack array of 6: uint64 LSNs (cf), the ancestor as bin 16 (c4 10), initdb as uint32.
    assert_eq!(
        envelope_body(&bytes, 5),
        spelled(
            "96 cf 00000016b374d848 cf 00000016b374d810 c4 10 11111111111111111111111111111111 \
             cf 0000001500000000 cf 0000001600000000 ce 0169ad18"
        )
    );
    assert_eq!(
        TimelineMetadata::from_file_bytes(&bytes).unwrap(),
        metadata()
    );
}

#[test]
fn config_vector() {
    let config = StoreConfig {
        store_id: *b"layercas-vector!",
        chunker: ChunkerParams::fastcdc(16384, 32768, 131072),
        pack_target_size: 16 << 20,
        zstd_level: 3,
    };
    let bytes = check(
        "config",
        "store config: id 'layercas-vector!', fastcdc-v2020 16K/32K/128K, 16 MiB packs, zstd 3",
        &config.encode(),
    );
    // msgpack [id (bin 16), [algorithm, normalization, min, avg, max], pack target, zstd level].
    assert_eq!(
        envelope_body(&bytes, 1),
        spelled(
            "94 c4 10 6c617965726361732d766563746f7221 \
             95 ad 666173746364632d7632303230 01 cd 4000 cd 8000 ce 00020000 \
             ce 01000000 03"
        )
    );
    assert_eq!(StoreConfig::decode(&bytes).unwrap(), config);
}

fn hello_chunks() -> Vec<(&'static [u8], ChunkId)> {
    [b"hello, ".as_slice(), b"pageserver".as_slice()]
        .into_iter()
        .map(|c| (c, ChunkId::of(c)))
        .collect()
}

#[test]
fn manifest_vector() {
    let chunks: Vec<ChunkRef> = hello_chunks()
        .iter()
        .map(|(c, id)| ChunkRef::whole(*id, c.len() as u32))
        .collect();
    let m = Manifest {
        tenant: TenantId([0xaa; 16]),
        timeline: TimelineId([0xbb; 16]),
        lsn: Lsn(0x16_B374_D848),
        prev_lsn: Some(Lsn(0x16_0000_0000)),
        metadata: metadata(),
        added: vec![FileEntry {
            name: "layer-1".into(),
            size: 17,
            hash: FileHash(*blake3::hash(b"hello, pageserver").as_bytes()),
            chunks,
        }],
        removed: vec!["layer-0".into()],
        base: false,
        dropped_from: None,
    };
    let bytes = check(
        "manifest",
        "manifest: one file 'layer-1' = 'hello, ' + 'pageserver', removes 'layer-0'",
        &m.encode(),
    );
    let body = envelope_body(&bytes, 4);
    assert_eq!(
        &body[..3],
        &[0x97, 0xc4, 0x10],
        "array of 7, tenant as bin 16"
    );
    let file_hash = blake3::hash(b"hello, pageserver");
    for needle in [
        &[0xaa; 16][..],
        &[0xbb; 16],
        b"\xa7layer-1",
        b"\xa7layer-0",
        file_hash.as_bytes(),
        blake3::hash(b"hello, ").as_bytes(),
        blake3::hash(b"pageserver").as_bytes(),
    ] {
        assert!(
            contains(body, needle),
            "manifest lacks {}",
            hex::encode(needle)
        );
    }
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
}

#[test]
fn base_manifest_vector() {
    let (hello, pageserver) = (ChunkId::of(b"hello, "), ChunkId::of(b"pageserver"));
    let base = Manifest {
        tenant: TenantId([0xaa; 16]),
        timeline: TimelineId([0xbb; 16]),
        lsn: Lsn(0x16_B374_D848),
        prev_lsn: None,
        metadata: metadata(),
        added: vec![FileEntry {
            name: "layer-1".into(),
            size: 17,
            hash: FileHash(*blake3::hash(b"hello, pageserver").as_bytes()),
            chunks: vec![ChunkRef::whole(hello, 7), ChunkRef::whole(pageserver, 10)],
        }],
        removed: vec![],
        base: true,
        dropped_from: None,
    };
    let bytes = check(
        "base_manifest",
        "base manifest (kind 4, version 2): the state of manifest.hex's timeline, whole: one file \
         'layer-1', no prev_lsn, nothing removed, flags 1",
        &base.encode(),
    );
    // [Manifest, flags]: an array of 2 whose first item is the 7-field manifest (prev_lsn nil),
    // ending with an empty `removed` array and the flags 1.
    let body = envelope_body_version(&bytes, 4, 2);
    assert_eq!(&body[..4], &[0x92, 0x97, 0xc4, 0x10]);
    assert_eq!(&body[body.len() - 2..], &[0x90, 0x01]);
    let prev_at = 1 + 1 + 2 * 18 + 9;
    assert_eq!(body[prev_at], 0xc0, "prev_lsn is nil");
    let back = Manifest::decode(&bytes).unwrap();
    assert!(back.base);
    assert_eq!(back, base);
}

/// The dictionary of `dict.hex`: trained (only when writing vectors) on fixed text rows.
fn dict_vector() -> Vec<u8> {
    if !writing_vectors() {
        return read_hex("dict");
    }
    let rows: Vec<Vec<u8>> = (0..300u32)
        .map(|i| format!("{i:05} account {} balance {}\n", i * 7 % 91, i * 13).repeat(40))
        .map(String::into_bytes)
        .collect();
    dict::encode(&dict::train(rows.iter().map(Vec::as_slice), 1024).expect("trained"))
}

#[test]
fn dictionary_and_dictionary_pack_vectors() {
    let object = dict_vector();
    let stored = check(
        "dict",
        "dictionary object (kind 8): a 1 KiB zstd dictionary trained on text rows",
        &object,
    );
    // Spec-derived: envelope kind 8 version 1, body starting with the zstd dictionary magic.
    let body = envelope_body_version(&stored, 8, 1);
    assert_eq!(&body[..4], &[0x37, 0xa4, 0x30, 0xec]);
    let id = dict::DictId::of(&stored);
    assert_eq!(id.0, *blake3::hash(&stored).as_bytes());
    assert_eq!(dict::decode(&id, &stored).unwrap(), body);
    assert_eq!(dict::encode(body), stored);
    let d = std::sync::Arc::new(dict::Dictionary::new(id, body.to_vec()).unwrap());
    let enc = dict::Encoder::new(&d, 3).unwrap();
    assert!(dict::register(d));

    let chunk = b"00042 account 21 balance 546\n".repeat(20);
    let mut b = PackBuilder::default();
    b.push(pack::encode_blob_with(ChunkId::of(&chunk), &chunk, &enc));
    let sealed = b.seal();
    let stored_pack = check(
        "pack_dict",
        "pack: one blob = the id of dict.hex, then a zstd frame of a 600-byte text row compressed with that dictionary",
        &sealed.to_vec(),
    );
    let table = pack::decode_pack_table(&stored_pack).unwrap();
    assert_eq!(table[0].compression, pack::Compression::ZstdDict);
    let blob = &stored_pack[..table[0].stored_len as usize];
    assert_eq!(
        &blob[..32],
        &id.0,
        "the blob starts with the dictionary's id"
    );
    assert_eq!(
        &blob[32..36],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "then a zstd frame"
    );
    assert_eq!(pack::decode_blob(&table[0], blob).unwrap(), chunk);
}

#[test]
fn pack_and_index_vectors() {
    let mut b = PackBuilder::default();
    // One chunk that compresses (stored zstd) and one that does not (stored raw).
    let zeros = vec![0u8; 64];
    b.push(pack::encode_blob(ChunkId::of(&zeros), &zeros, 3));
    b.push(pack::encode_blob(ChunkId::of(b"raw"), b"raw", 3));
    let sealed = b.seal();
    let bytes = sealed.to_vec();
    let stored = check(
        "pack",
        "pack: blob 0 = 64 zero bytes (zstd), blob 1 = 'raw' (stored raw), then table and trailer",
        &bytes,
    );
    assert_eq!(PackId::of(&stored), sealed.id);
    let table_body = check_pack_layout(&stored, &zeros);
    let table = pack::decode_pack_table(&stored).unwrap();
    assert_eq!(table, sealed.entries);
    assert_eq!(
        (table[0].compression, table[1].compression),
        (pack::Compression::Zstd, pack::Compression::None)
    );
    let (offs, _) = pack::offsets(&table);
    let raw0 = pack::decode_blob(
        &table[0],
        &stored[offs[0] as usize..(offs[0] + table[0].stored_len as u64) as usize],
    )
    .unwrap();
    assert_eq!(raw0, zeros);

    let index = IndexObject {
        packs: vec![(sealed.id, sealed.entries.clone())],
    };
    let ibytes = check(
        "index",
        "index: the one pack of pack.hex with its two blobs",
        &index.encode(),
    );
    // One section: pack count 1, the pack's blake3, entry count 2, the pack table's entries.
    let mut expected = 1u32.to_le_bytes().to_vec();
    expected.extend_from_slice(blake3::hash(&stored).as_bytes());
    expected.extend_from_slice(&table_body);
    assert_eq!(envelope_body(&ibytes, 3), expected);
    assert_eq!(IndexObject::decode(&ibytes).unwrap(), index);
}

/// Checks the pack vector against the spec: blobs, then the table envelope, its length and
/// "LCPK". Returns the table body (entry count and entries).
fn check_pack_layout(pack: &[u8], zeros: &[u8]) -> Vec<u8> {
    assert_eq!(&pack[pack.len() - 4..], b"LCPK");
    let table_len = u32::from_le_bytes(pack[pack.len() - 8..pack.len() - 4].try_into().unwrap());
    let table_start = pack.len() - 8 - table_len as usize;
    let body = envelope_body(&pack[table_start..pack.len() - 8], 2).to_vec();
    assert_eq!(&body[..4], &2u32.to_le_bytes(), "two entries");
    let (e0, e1) = (&body[4..45], &body[45..86]);
    assert_eq!(body.len(), 86);
    // Entry: chunk id (32), compression (1 = zstd, 0 = none), stored len, raw len (u32 LE).
    assert_eq!(&e0[..32], blake3::hash(zeros).as_bytes());
    assert_eq!(e0[32], 1);
    assert_eq!(&e0[37..41], &64u32.to_le_bytes());
    let stored0 = u32::from_le_bytes(e0[33..37].try_into().unwrap()) as usize;
    assert_eq!(&e1[..32], blake3::hash(b"raw").as_bytes());
    assert_eq!(&e1[32..41], &[0, 3, 0, 0, 0, 3, 0, 0, 0]);
    // Blob 0 is a zstd frame of the zeros; blob 1 the raw bytes; then the table.
    assert_eq!(zstd::decode_all(&pack[..stored0]).unwrap(), zeros);
    assert_eq!(&pack[stored0..table_start], b"raw");
    body
}

#[test]
fn manifest_cache_vector() {
    let key = |k: &str| layercas::backend::Key::new(k).unwrap();
    let shard = CacheShard {
        entries: vec![
            (key("manifests/a"), b"LCAS".to_vec()),
            (key("manifests/b"), vec![]),
        ],
    };
    let bytes = check(
        "manifest_cache",
        "manifest cache shard (kind 9): manifests/a -> \"LCAS\", manifests/b -> empty",
        &shard.encode(),
    );
    // u32 count, then per entry: u16 key length, key, u32 length, bytes (format-spec 13.7).
    assert_eq!(
        envelope_body(&bytes, 9),
        spelled(&format!(
            "02000000 0b00 {} 04000000 4c434153 0b00 {} 00000000",
            hex::encode("manifests/a"),
            hex::encode("manifests/b")
        ))
    );
    assert_eq!(CacheShard::decode(&bytes).unwrap(), shard);
}

#[test]
fn intent_vector() {
    let intent = Intent::new(
        TenantId([0xaa; 16]),
        TimelineId([0xbb; 16]),
        Lsn(0x16_B374_D848),
        vec![PackId([0x02; 32]), PackId([0x01; 32]), PackId([0x02; 32])],
    );
    let bytes = check(
        "intent",
        "intent (kind 7): tenant aa.., timeline bb.., LSN 16/B374D848, packs 01.. and 02..",
        &intent.encode(),
    );
    // msgpack [tenant (bin 16), timeline (bin 16), lsn (uint), packs (array of bin 32, sorted
    // ascending, without duplicates)].
    assert_eq!(
        envelope_body(&bytes, 7),
        spelled(&format!(
            "94 c4 10 {} c4 10 {} cf 00000016b374d848 92 c4 20 {} c4 20 {}",
            "aa".repeat(16),
            "bb".repeat(16),
            "01".repeat(32),
            "02".repeat(32)
        ))
    );
    assert_eq!(Intent::decode(&bytes).unwrap(), intent);
    assert_eq!(intent.packs, vec![PackId([0x01; 32]), PackId([0x02; 32])]);
    // Packs out of order, or repeated, are refused (format-spec 13.2).
    for packs in ["92 c4 20 {2} c4 20 {1}", "92 c4 20 {1} c4 20 {1}"] {
        let packs = packs
            .replace("{1}", &"01".repeat(32))
            .replace("{2}", &"02".repeat(32));
        let body = spelled(&format!(
            "94 c4 10 {} c4 10 {} cf 00000016b374d848 {packs}",
            "aa".repeat(16),
            "bb".repeat(16)
        ));
        assert!(Intent::decode(&seal(7, &body)).is_err(), "{packs}");
    }
}

#[test]
fn gc_state_vector() {
    let state = GcState {
        generation: 7,
        window_ms: 60_000,
        phase: Phase::Condemned,
        condemned: vec![PackId([0x01; 32]), PackId([0x02; 32])],
        deleted: vec![(5, vec![PackId([0x03; 32])])],
        history_from: 0,
    };
    let bytes = check(
        "gc_state",
        "gc state (kind 6, version 3): generation 7, window 60000 ms, Condemned 01.. and 02.., \
         03.. deleted in generation 5, history from 0",
        &state.encode(),
    );
    // msgpack [generation, window_ms, phase (str), condemned (array of bin 32, sorted),
    // deleted (array of [generation, array of bin 32]), history_from]. Version 3 (writers
    // delete gc's seal, format-spec 11 and 13.8); versions 1 and 2 have the same body and
    // still read.
    let body = envelope_body_version(&bytes, 6, 3);
    assert_eq!(GcState::decode(&seal(6, body)).unwrap(), state);
    assert_eq!(GcState::decode(&seal_version(6, 2, body)).unwrap(), state);
    assert!(GcState::decode(&seal_version(6, 4, body)).is_err());
    assert_eq!(
        body,
        spelled(&format!(
            "96 07 cd ea60 a9 436f6e64656d6e6564 92 c4 20 {} c4 20 {} 91 92 05 91 c4 20 {} 00",
            "01".repeat(32),
            "02".repeat(32),
            "03".repeat(32)
        ))
    );
    assert_eq!(GcState::decode(&bytes).unwrap(), state);
    // Unsorted condemned packs are refused (format-spec 13.1).
    let unsorted = spelled(&format!(
        "96 07 cd ea60 a9 436f6e64656d6e6564 92 c4 20 {} c4 20 {} 90 00",
        "02".repeat(32),
        "01".repeat(32)
    ));
    assert!(GcState::decode(&seal(6, &unsorted)).is_err());
    // The other phases are spelled as their names.
    let idle = spelled("96 01 cd ea60 a4 49646c65 90 90 00");
    assert_eq!(GcState::decode(&seal(6, &idle)).unwrap().phase, Phase::Idle);
    let deleting = spelled("96 01 cd ea60 a8 44656c6574696e67 90 90 00");
    assert_eq!(
        GcState::decode(&seal(6, &deleting)).unwrap().phase,
        Phase::Deleting
    );
}

#[test]
fn gc_seal_vector() {
    let sealed = GcSeal {
        generation: 7,
        options: "ab".repeat(32),
        confirmed: true,
    };
    let bytes = check(
        "gc_seal",
        "gc seal (kind 10): generation 7, options digest abab.., confirmed",
        &sealed.encode(),
    );
    // msgpack [generation (uint), options (str, 64 lower-case hex), confirmed (bool)].
    assert_eq!(
        envelope_body(&bytes, 10),
        spelled(&format!("93 07 d9 40 {} c3", hex::encode("ab".repeat(32))))
    );
    assert_eq!(GcSeal::decode(&bytes).unwrap(), sealed);
    // Upper-case hex is no digest this format writes: refused.
    let upper = spelled(&format!("93 07 d9 40 {} c3", hex::encode("AB".repeat(32))));
    assert!(GcSeal::decode(&seal(10, &upper)).is_err());
}

/// An envelope of `kind` around `body`, framed as the spec says (not by the library).
fn seal(kind: u8, body: &[u8]) -> Vec<u8> {
    seal_version(kind, 1, body)
}

/// An envelope of `kind` and body format `version` around `body`.
fn seal_version(kind: u8, version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = b"LCAS".to_vec();
    out.extend_from_slice(&[kind, version, 0, 0]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

#[test]
fn delta_pack_vector() {
    let base = b"00042 account 21 balance 546 filler ........\n".repeat(12);
    let mut chunk = base.clone();
    chunk[100..106].copy_from_slice(b"999999");
    let (bid, cid) = (ChunkId::of(&base), ChunkId::of(&chunk));
    let mut b = PackBuilder::default();
    b.push(pack::encode_blob(bid, &base, 3));
    b.push(delta::encode_delta_blob(cid, &chunk, bid, &base, 3).unwrap());
    let stored = check(
        "delta",
        "pack: blob 0 = a 540-byte text row (zstd), blob 1 = the same row with 6 bytes changed, as a delta against blob 0",
        &b.seal().to_vec(),
    );
    let table = pack::decode_pack_table(&stored).unwrap();
    // Spec-derived: compression 3, indexed under blake3's derive_key of the two ids.
    assert_eq!(table[1].compression as u8, 3);
    let mut h = blake3::Hasher::new_derive_key("layercas 2026-11 delta blob id v1");
    h.update(cid.as_bytes());
    h.update(bid.as_bytes());
    assert_eq!(table[1].chunk.0, *h.finalize().as_bytes());
    let at = table[0].stored_len as usize;
    let frame = &stored[at..at + table[1].stored_len as usize];
    assert!(frame.len() < 40, "a small delta: {} bytes", frame.len());
    // zstd alone decodes it with the base's bytes as raw-content dictionary.
    let mut z = zstd::bulk::Decompressor::with_dictionary(&base).unwrap();
    assert_eq!(z.decompress(frame, chunk.len()).unwrap(), chunk);
    let back = delta::decode_delta_blob(&table[1], frame, &cid, &bid, &base).unwrap();
    assert_eq!(back, chunk);
}
