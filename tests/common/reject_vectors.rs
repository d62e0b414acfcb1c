//! The must-reject vectors of `format-spec/vectors/reject/`: objects that break one rule of the
//! spec each (with a valid checksum unless the rule is the checksum), built here from valid
//! objects by one change. Each file starts with `# object:` (which decoder), `# expect:` (a
//! phrase the error must contain) and `# reason:` (the rule, in one line); a `timeline` vector
//! holds several manifests separated by `# next` lines and is rejected by the fold.

use std::path::PathBuf;

use layercas::format::gc_state::GcState;
use layercas::format::index::IndexObject;
use layercas::format::intent::Intent;
use layercas::format::manifest::{Manifest, TimelineState};
use layercas::format::metadata::TimelineMetadata;
use layercas::format::pack::{self, BlobEntry, Compression};
use layercas::id::{ChunkId, Lsn, PackId, TenantId, TimelineId};
use layercas::testkit::manifests::{file, manifest};

use super::{read_text, seal, seal_version, writing_vectors};

/// One must-reject vector: its file name, decoder, expected phrase, rule, and objects.
struct Reject {
    name: &'static str,
    object: &'static str,
    expect: &'static str,
    reason: &'static str,
    objects: Vec<Vec<u8>>,
}

fn reject(
    name: &'static str,
    object: &'static str,
    expect: &'static str,
    reason: &'static str,
    bytes: Vec<u8>,
) -> Reject {
    Reject {
        name,
        object,
        expect,
        reason,
        objects: vec![bytes],
    }
}

fn body(m: &Manifest) -> Vec<u8> {
    rmp_serde::to_vec(m).unwrap()
}

/// `bytes` with the first occurrence of `from` replaced by `to`.
fn respell(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

fn base_body(m: &Manifest, flags: u8) -> Vec<u8> {
    let mut out = vec![0x92];
    out.extend_from_slice(&body(m));
    out.push(flags);
    out
}

fn manifest_rejects() -> Vec<Reject> {
    let ok = manifest(
        0x100,
        Some(0x80),
        vec![file("layer-1", b"hello")],
        &["layer-0"],
    );
    let base = manifest(0x100, None, vec![file("layer-1", b"hello")], &[]);
    let with = |f: &dyn Fn(&mut Manifest)| {
        let mut m = ok.clone();
        f(&mut m);
        seal(4, &body(&m))
    };
    let long = format!("{}/", "d".repeat(200)).repeat(5) + "f";
    let mut flipped = seal(4, &body(&ok));
    *flipped.last_mut().unwrap() ^= 1;
    let mut reserved = seal(4, &body(&ok));
    reserved[6] = 1;
    let mut trailing = body(&ok);
    trailing.push(0xc0);
    vec![
        reject(
            "envelope_checksum",
            "manifest",
            "checksum mismatch",
            "the last byte of the checksum is flipped",
            flipped,
        ),
        reject(
            "envelope_reserved",
            "manifest",
            "reserved",
            "reserved header byte 6 is 1",
            resealed(reserved),
        ),
        reject(
            "base_with_prev_lsn",
            "manifest",
            "no previous lsn",
            "a base (version 2) whose prev_lsn is set",
            seal_version(
                4,
                2,
                &base_body(&manifest(0x100, Some(0x80), base.added.clone(), &[]), 1),
            ),
        ),
        reject(
            "base_with_removed",
            "manifest",
            "removes nothing",
            "a base (version 2) that lists a removed name",
            seal_version(
                4,
                2,
                &base_body(&manifest(0x100, None, base.added.clone(), &["x"]), 1),
            ),
        ),
        reject(
            "base_flags",
            "manifest",
            "flags",
            "a base whose flags are 3 (only bit 0 may be set)",
            seal_version(4, 2, &base_body(&base, 3)),
        ),
        reject(
            "name_dotdot",
            "manifest",
            "not allowed",
            "a file named ../escape",
            with(&|m| m.added[0].name = "../escape".into()),
        ),
        reject(
            "name_under_metadata",
            "manifest",
            "reserved",
            "a file named metadata/x (first component metadata)",
            with(&|m| m.added[0].name = "metadata/x".into()),
        ),
        reject(
            "name_too_long",
            "manifest",
            "longer than 1024",
            "a file name of 1036 bytes (the limit is 1024)",
            with(&|m| m.added[0].name = long.clone() + &"g".repeat(30)),
        ),
        reject(
            "chunk_too_long",
            "manifest",
            "exceeds 16777216",
            "a chunk reference of 16 MiB + 1 bytes",
            with(&|m| {
                m.added[0].chunks[0].len = (16 << 20) + 1;
                m.added[0].size = (16 << 20) + 1;
            }),
        ),
        reject(
            "chunk_own_base",
            "manifest",
            "is its own base",
            "a chunk reference naming its own id as its base (format-spec 5.2)",
            with(&|m| {
                m.added[0].chunks[0].base = Some(m.added[0].chunks[0].id);
            }),
        ),
        reject(
            "sizes_disagree",
            "manifest",
            "add up",
            "a file whose size is not the sum of its chunk lengths",
            with(&|m| m.added[0].size = 6),
        ),
        reject(
            "lsn_not_metadata",
            "manifest",
            "differs from metadata",
            "lsn differs from metadata.disk_consistent_lsn",
            with(&|m| m.metadata.disk_consistent_lsn = Lsn(0x101)),
        ),
        reject(
            "noncanonical_str8",
            "manifest",
            "canonical",
            "the name \"layer-1\" spelled as str 8 (d9 07) instead of fixstr",
            seal(4, &respell(&body(&ok), b"\xa7layer-1", b"\xd9\x07layer-1")),
        ),
        reject(
            "noncanonical_bin16",
            "manifest",
            "canonical",
            "the tenant spelled as bin 16 (c5 00 10) instead of bin 8",
            seal(4, &respell(&body(&ok), b"\xc4\x10", b"\xc5\x00\x10")),
        ),
        reject(
            "noncanonical_array16",
            "manifest",
            "canonical",
            "the 7-field manifest array spelled as array 16 (dc 00 07)",
            seal(4, &respell(&body(&ok), b"\x97", b"\xdc\x00\x07")),
        ),
        reject(
            "noncanonical_uint",
            "manifest",
            "canonical",
            "lsn 0x100 spelled as uint 32 (ce) instead of uint 16 (cd)",
            seal(
                4,
                &respell(&body(&ok), b"\xcd\x01\x00", b"\xce\x00\x00\x01\x00"),
            ),
        ),
        reject(
            "trailing_byte",
            "manifest",
            "canonical",
            "a nil byte after the manifest array",
            seal(4, &trailing),
        ),
    ]
}

/// Re-computes the checksum of an envelope whose header was changed.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 32;
    let sum = blake3::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(sum.as_bytes());
    bytes
}

fn timeline_rejects() -> Vec<Reject> {
    let first = manifest(0x100, None, vec![file("x", b"x")], &[]);
    let absent = manifest(0x200, Some(0x100), vec![], &["y"]);
    let clash = manifest(0x200, Some(0x100), vec![file("x/y", b"y")], &[]);
    let m = |m: &Manifest| seal(4, &body(m));
    vec![
        Reject {
            name: "timeline_removes_absent_name",
            object: "timeline",
            expect: "does not hold",
            reason: "the second manifest removes y, which the first did not add",
            objects: vec![m(&first), m(&absent)],
        },
        Reject {
            name: "timeline_names_clash",
            object: "timeline",
            expect: "clashes",
            reason: "the folded state holds x and x/y, which cannot both exist on disk",
            objects: vec![m(&first), m(&clash)],
        },
    ]
}

fn table_body(entries: &[BlobEntry]) -> Vec<u8> {
    let mut body = (entries.len() as u32).to_le_bytes().to_vec();
    pack::encode_entries(entries, &mut body);
    body
}

/// A pack of `blobs` with a table of `entries` (given apart, so they can disagree).
fn pack_of(blobs: &[&[u8]], entries: &[BlobEntry], table_extra: &[u8]) -> Vec<u8> {
    let mut out = blobs.concat();
    let mut body = table_body(entries);
    body.extend_from_slice(table_extra);
    let table = seal(2, &body);
    out.extend_from_slice(&table);
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    out.extend_from_slice(b"LCPK");
    out
}

fn entry(raw: &[u8], compression: Compression, stored: usize, raw_len: usize) -> BlobEntry {
    BlobEntry {
        chunk: ChunkId::of(raw),
        compression,
        stored_len: stored as u32,
        raw_len: raw_len as u32,
    }
}

fn pack_rejects() -> Vec<Reject> {
    let zeros = [0u8; 64];
    let frame = zstd::bulk::compress(&zeros, 3).unwrap();
    let two = [frame.clone(), frame.clone()].concat();
    let zstd = |data: &[u8], raw_len| entry(&zeros, Compression::Zstd, data.len(), raw_len);
    let big = vec![0u8; pack::max_zstd_len(64) as usize + 1];
    let dict_entry = |data: &[u8]| entry(&zeros, Compression::ZstdDict, data.len(), 64);
    let dict_big = vec![0u8; pack::max_stored_len(Compression::ZstdDict, 64) as usize + 1];
    let unknown_dict = [&[0x77u8; 32][..], &frame].concat();
    let mut unknown = pack_of(&[b"raw"], &[entry(b"raw", Compression::None, 3, 3)], &[]);
    let at = 3 + 16 + 4 + 32;
    unknown[at] = 4;
    let table_len = unknown.len() - 8 - 3;
    let table = resealed(unknown[3..3 + table_len].to_vec());
    unknown[3..3 + table_len].copy_from_slice(&table);
    vec![
        reject(
            "pack_table_extra_byte",
            "pack",
            "after the last entry",
            "a pack table body one byte longer than count x 41 + 4",
            pack_of(&[b"raw"], &[entry(b"raw", Compression::None, 3, 3)], &[0]),
        ),
        reject(
            "pack_unknown_compression",
            "pack",
            "unknown compression",
            "a table entry with compression 4",
            unknown,
        ),
        reject(
            "pack_dict_stored_len_bound",
            "pack",
            "exceeds the bound",
            "a dictionary (compression 2) entry whose stored_len exceeds 32 + zstd's compress bound",
            pack_of(&[&dict_big], &[dict_entry(&dict_big)], &[]),
        ),
        reject(
            "pack_dict_blob_too_short",
            "pack",
            "shorter than its dictionary id",
            "a dictionary (compression 2) blob of 20 bytes, less than its 32-byte dictionary id",
            pack_of(&[&[7u8; 20]], &[dict_entry(&[7u8; 20])], &[]),
        ),
        reject(
            "pack_dict_not_loaded",
            "pack",
            "not loaded",
            "a dictionary blob naming a dictionary the store does not hold (id 77 x 32)",
            pack_of(&[&unknown_dict], &[dict_entry(&unknown_dict)], &[]),
        ),
        reject(
            "pack_raw_lengths_differ",
            "pack",
            "uncompressed blob",
            "a raw (compression 0) entry whose stored_len is not raw_len",
            pack_of(&[b"raw"], &[entry(b"raw", Compression::None, 3, 4)], &[]),
        ),
        reject(
            "pack_blobs_do_not_fill",
            "pack",
            "blobs end at",
            "a byte between the last blob and the table",
            pack_of(
                &[b"raw", b"!"],
                &[entry(b"raw", Compression::None, 3, 3)],
                &[],
            ),
        ),
        reject(
            "pack_zstd_two_frames",
            "pack",
            "after its first zstd frame",
            "a zstd blob holding two frames",
            pack_of(&[&two], &[zstd(&two, 64)], &[]),
        ),
        reject(
            "pack_zstd_content_size",
            "pack",
            "header says 64",
            "a zstd frame whose header content size (64) is not raw_len (63)",
            pack_of(&[&frame], &[zstd(&frame, 63)], &[]),
        ),
        reject(
            "pack_zstd_stored_len_bound",
            "pack",
            "exceeds the bound",
            "a zstd entry whose stored_len exceeds zstd's compress bound of raw_len",
            pack_of(&[&big], &[zstd(&big, 64)], &[]),
        ),
    ]
}

fn index_rejects() -> Vec<Reject> {
    let section = |id: u8| {
        (
            PackId([id; 32]),
            vec![entry(b"raw", Compression::None, 3, 3)],
        )
    };
    let body_of = |packs: Vec<(PackId, Vec<BlobEntry>)>| {
        let bytes = IndexObject { packs }.encode();
        bytes[16..bytes.len() - 32].to_vec()
    };
    let mut extra = body_of(vec![section(1)]);
    extra.push(0);
    let mut dup = body_of(vec![section(1), section(2)]);
    dup[4 + 32 + 4 + 41..4 + 32 + 4 + 41 + 32].copy_from_slice(&[1; 32]);
    let mut many = (1u32 << 20).wrapping_add(1).to_le_bytes().to_vec();
    many.extend_from_slice(&[0; 36]);
    vec![
        reject(
            "index_extra_byte",
            "index",
            "after the last section",
            "an index body one byte longer than its sections",
            seal(3, &extra),
        ),
        reject(
            "index_duplicate_pack",
            "index",
            "more than one section",
            "two sections naming the same pack",
            seal(3, &dup),
        ),
        reject(
            "index_too_many_sections",
            "index",
            "exceed the limit",
            "a section count of 2^20 + 1",
            seal(3, &many),
        ),
    ]
}

fn other_rejects() -> Vec<Reject> {
    // A generation-7 state: `lists` is the hex of its condemned and deleted arrays.
    let state = |lists: &str, phase: &str| {
        let mut b = vec![0x96, 0x07, 0xcd, 0xea, 0x60];
        b.extend_from_slice(&[0xa0 | phase.len() as u8]);
        b.extend_from_slice(phase.as_bytes());
        b.extend_from_slice(&hex::decode(lists).unwrap());
        b.push(0x00);
        seal(6, &b)
    };
    let p = |b: &str| format!("c420{}", b.repeat(32));
    let unsorted = format!("92{}{}", p("02"), p("01"));
    let mut intent = rmp_serde::to_vec(&Intent::new(
        TenantId([1; 16]),
        TimelineId([2; 16]),
        Lsn(9),
        vec![],
    ))
    .unwrap();
    intent.pop();
    intent.extend_from_slice(&hex::decode(&unsorted).unwrap());
    let config = hex::decode("94c4106c617965726361732d766563746f722195ad666173746364632d763230323001cd4000cd8000ce00020000ce0100000014").unwrap();
    let mut md = rmp_serde::to_vec(&TimelineMetadata::at(Lsn(1))).unwrap();
    md.push(0xc0);
    vec![
        reject(
            "gc_state_unsorted",
            "gc_state",
            "not sorted",
            "condemned packs 02.. before 01..",
            state(&format!("{unsorted}90"), "Condemned"),
        ),
        reject(
            "gc_state_unknown_phase",
            "gc_state",
            "unknown variant",
            "phase \"Sweeping\", which is not a phase",
            state("9090", "Sweeping"),
        ),
        reject(
            "gc_state_deleted_in_future",
            "gc_state",
            "after the state's generation",
            "packs listed as deleted in generation 8 of a generation-7 state",
            state(&format!("9091920891{}", p("03")), "Idle"),
        ),
        reject(
            "manifest_cache_unsorted",
            "manifest_cache",
            "ascending",
            "a manifest cache shard with manifests/b before manifests/a",
            seal(
                9,
                &hex::decode(format!(
                    "020000000b00{}000000000b00{}00000000",
                    hex::encode("manifests/b"),
                    hex::encode("manifests/a")
                ))
                .unwrap(),
            ),
        ),
        reject(
            "manifest_cache_trailing",
            "manifest_cache",
            "after the last entry",
            "a manifest cache shard of no entries followed by one byte",
            seal(9, &[0, 0, 0, 0, 0]),
        ),
        reject(
            "intent_unsorted",
            "intent",
            "ascending",
            "intent packs 02.. before 01..",
            seal(7, &intent),
        ),
        reject(
            "config_zstd_level",
            "config",
            "zstd level 20",
            "the config vector with zstd level 20 (limit 19)",
            seal(1, &config),
        ),
        reject(
            "metadata_trailing_byte",
            "metadata",
            "canonical",
            "a nil byte after the metadata array",
            seal(5, &md),
        ),
    ]
}

fn dict_rejects() -> Vec<Reject> {
    let mut body = layercas::format::dict::ZSTD_DICT_MAGIC.to_vec();
    body.extend_from_slice(&[0u8; 60]);
    let mut too_long = seal(8, &body);
    let claimed = layercas::format::dict::MAX_DICT_LEN as u64 + 1;
    too_long[8..16].copy_from_slice(&claimed.to_le_bytes());
    vec![
        reject(
            "dict_no_magic",
            "dictionary",
            "zstd dictionary magic",
            "a dictionary object whose body does not start with 37 A4 30 EC",
            seal(8, b"not a zstd dictionary"),
        ),
        reject(
            "dict_unloadable",
            "dictionary",
            "cannot load",
            "a dictionary body with the magic but no valid zstd dictionary after it",
            seal(8, &body),
        ),
        reject(
            "dict_too_long",
            "dictionary",
            "exceeds",
            "a dictionary envelope whose length field claims 112 KiB + 1 bytes of body",
            too_long,
        ),
    ]
}

fn all_rejects() -> Vec<Reject> {
    let mut all = manifest_rejects();
    all.extend(timeline_rejects());
    all.extend(pack_rejects());
    all.extend(index_rejects());
    all.extend(other_rejects());
    all.extend(dict_rejects());
    all
}

fn reject_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/reject")
}

/// The error the decoder named by `object` gives for `objects`, or `None` if it accepts them.
fn decode_error(object: &str, objects: &[Vec<u8>]) -> Option<String> {
    let e = |r: Result<(), String>| r.err();
    let one = &objects[0];
    match object {
        "manifest" => e(Manifest::decode(one).map(drop).map_err(|x| x.to_string())),
        "index" => e(IndexObject::decode(one)
            .map(drop)
            .map_err(|x| x.to_string())),
        "gc_state" => e(GcState::decode(one).map(drop).map_err(|x| x.to_string())),
        "intent" => e(Intent::decode(one).map(drop).map_err(|x| x.to_string())),
        "manifest_cache" => e(layercas::format::manifest_cache::CacheShard::decode(one)
            .map(drop)
            .map_err(|x| x.to_string())),
        "metadata" => e(TimelineMetadata::from_file_bytes(one)
            .map(drop)
            .map_err(|x| x.to_string())),
        "config" => e(layercas::format::config::StoreConfig::decode(one)
            .map(drop)
            .map_err(|x| x.to_string())),
        "pack" => e(decode_pack(one)),
        "dictionary" => {
            use layercas::format::dict;
            e(dict::decode(&dict::DictId::of(one), one)
                .map(drop)
                .map_err(|x| x.to_string()))
        }
        "timeline" => {
            let ms: Vec<Manifest> = objects
                .iter()
                .map(|o| Manifest::decode(o).expect("each manifest is valid"))
                .collect();
            e(TimelineState::fold_checked(ms)
                .map(drop)
                .map_err(|x| x.to_string()))
        }
        other => panic!("unknown object kind {other:?}"),
    }
}

/// Decodes a pack's table and every blob in it.
fn decode_pack(bytes: &[u8]) -> Result<(), String> {
    let table = pack::decode_pack_table(bytes).map_err(|e| e.to_string())?;
    let (offsets, _) = pack::offsets(&table);
    for (e, off) in table.iter().zip(offsets) {
        let blob = &bytes[off as usize..off as usize + e.stored_len as usize];
        pack::decode_blob(e, blob).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn render(r: &Reject) -> String {
    let mut text = format!(
        "# object: {}\n# expect: {}\n# reason: {}\n",
        r.object, r.expect, r.reason
    );
    let parts: Vec<String> = r
        .objects
        .iter()
        .map(|o| o.chunks(32).map(hex::encode).collect::<Vec<_>>().join("\n"))
        .collect();
    text.push_str(&parts.join("\n# next\n"));
    text.push('\n');
    text
}

/// A vector file's header fields and objects.
fn parse(text: &str) -> (String, String, Vec<Vec<u8>>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {name}: ")))
            .unwrap_or_else(|| panic!("no '# {name}:' line"))
            .to_string()
    };
    let objects = text
        .split("# next\n")
        .map(|part| {
            let digits: String = part
                .lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
                .collect();
            hex::decode(digits).unwrap()
        })
        .collect();
    (field("object"), field("expect"), objects)
}

#[test]
fn must_reject_vectors_are_rejected_with_their_reason() {
    let all = all_rejects();
    if writing_vectors() {
        std::fs::create_dir_all(reject_dir()).unwrap();
        for r in &all {
            std::fs::write(reject_dir().join(format!("{}.hex", r.name)), render(r)).unwrap();
        }
    }
    // The stored files are exactly the ones built here, byte for byte.
    for r in &all {
        let path = reject_dir().join(format!("{}.hex", r.name));
        assert_eq!(
            read_text(&path),
            render(r),
            "{} differs from what this test builds",
            r.name
        );
    }
    let (mut checked, mut wrong) = (0, Vec::new());
    for entry in std::fs::read_dir(reject_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (object, expect, objects) = parse(&read_text(&path));
        match decode_error(&object, &objects) {
            None => wrong.push(format!("{name}: accepted")),
            Some(err) if !err.contains(&expect) => {
                wrong.push(format!("{name}: {err:?} lacks {expect:?}"))
            }
            Some(_) => {}
        }
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "must-reject vectors:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        checked,
        all.len(),
        "a file in vectors/reject/ is not built by this test"
    );
}
