//! The test vectors of format-spec/vectors/: each decodes to the value written here, and
//! re-encodes to the same bytes. Set LAYERCAS_WRITE_VECTORS=1 to (re)write them from these values
//! after a deliberate format change.

use std::path::PathBuf;

use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::index::IndexObject;
use layercas::format::manifest::{ChunkRef, FileEntry, Manifest};
use layercas::format::metadata::TimelineMetadata;
use layercas::format::pack::{self, PackBuilder};
use layercas::id::{ChunkId, FileHash, Lsn, PackId, TenantId, TimelineId};

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("format-spec/vectors")
        .join(format!("{name}.hex"))
}

/// Hex with whitespace and `#` comments allowed.
fn read_hex(name: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(vector_path(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn check(name: &str, comment: &str, encoded: &[u8]) -> Vec<u8> {
    if std::env::var_os("LAYERCAS_WRITE_VECTORS").is_some() {
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

fn metadata() -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: Lsn(0x16_B374_D848),
        prev_record_lsn: Some(Lsn(0x16_B374_D810)),
        ancestor_timeline: Some(TimelineId([0x11; 16])),
        ancestor_lsn: Lsn(0x15_0000_0000),
        latest_gc_cutoff_lsn: Lsn(0x16_0000_0000),
        initdb_lsn: Lsn(0x0169_AD18),
    }
}

#[test]
fn timeline_metadata_vector() {
    let bytes = check(
        "metadata",
        "timeline metadata file: see README.md, 'Timeline metadata'",
        &metadata().to_file_bytes(),
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
        .map(|(c, id)| ChunkRef {
            id: *id,
            len: c.len() as u32,
        })
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
    };
    let bytes = check(
        "manifest",
        "manifest: one file 'layer-1' = 'hello, ' + 'pageserver', removes 'layer-0'",
        &m.encode(),
    );
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
}

#[test]
fn pack_and_index_vectors() {
    let mut b = PackBuilder::default();
    // One chunk that compresses (stored zstd) and one that does not (stored raw).
    let zeros = vec![0u8; 64];
    b.push(pack::encode_blob(ChunkId::of(&zeros), &zeros, 3));
    b.push(pack::encode_blob(ChunkId::of(b"raw"), b"raw", 3));
    let sealed = b.seal();
    let bytes = futures::executor::block_on(sealed.payload.to_bytes()).unwrap();
    let stored = check(
        "pack",
        "pack: blob 0 = 64 zero bytes (zstd), blob 1 = 'raw' (stored raw), then table and trailer",
        &bytes,
    );
    assert_eq!(PackId::of(&stored), sealed.id);
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
    assert_eq!(IndexObject::decode(&ibytes).unwrap(), index);
}
