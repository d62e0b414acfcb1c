//! Synthetic data for the scale benchmark: layer files of a pageserver fleet (small, lognormal
//! sizes around a 60 KiB median, half compressible, never shared between timelines), and index
//! objects of "other writers" written straight into a local store's directory.
//!
//! Owns generation only: no measurement, no store reads.

use std::path::Path;

use layercas::format::index::IndexObject;
use layercas::format::layout;
use layercas::format::pack::{BlobEntry, Compression};
use layercas::id::{ChunkId, IndexId, PackId, TenantId, TimelineId};

/// Median size of a generated layer file.
pub const MEDIAN_FILE: f64 = 60.0 * 1024.0;

/// The tenant and timeline ids of timeline number `n` (`per_tenant` timelines per tenant).
pub fn ids(n: u64, per_tenant: u64) -> (TenantId, TimelineId) {
    let tenant = n / per_tenant.max(1);
    let mut t = [0x7e; 16];
    t[8..].copy_from_slice(&tenant.to_be_bytes());
    let mut tl = [0x5c; 16];
    tl[8..].copy_from_slice(&n.to_be_bytes());
    (TenantId(t), TimelineId(tl))
}

/// A standard normal sample (Irwin-Hall of 12 uniforms: good enough for file sizes).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0
}

/// The bytes of file `file` of checkpoint `round` of timeline `n`: deterministic, distinct
/// from every other file (a random seed block each 4 KiB), half of the 4 KiB blocks a
/// repeated pattern (compressible, as real layer files are).
pub fn file_bytes(n: u64, round: u64, file: u64) -> Vec<u8> {
    let seed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (round << 40) ^ (file << 56) ^ 0xA5;
    let mut rng = fastrand::Rng::with_seed(seed);
    let size = (MEDIAN_FILE * (0.8 * normal(&mut rng)).exp()).clamp(4096.0, 2.0 * 1048576.0);
    let mut out = vec![0u8; size as usize];
    for block in out.chunks_mut(4096) {
        if rng.bool() {
            rng.fill(block);
        } else {
            let tag = rng.u64(..).to_le_bytes();
            for (i, b) in block.iter_mut().enumerate() {
                *b = tag[i % 8] ^ (i / 64) as u8;
            }
        }
    }
    out
}

/// A layer-file-like name for file `file` of checkpoint `round`.
pub fn file_name(round: u64, file: u64) -> String {
    format!(
        "000000067F00000001000000000000000000-{:08X}__{:016X}-{file}",
        round, round
    )
}

/// The tenant of the `n`th foreign writer (never one of [`ids`]'s).
pub fn foreign_tenant(n: u64) -> TenantId {
    let mut t = [0x3d; 16];
    t[8..].copy_from_slice(&n.to_be_bytes());
    TenantId(t)
}

/// Writes index objects (and empty pack files, so that they list) placing `chunks` random
/// chunks, 512 to a pack and 64 packs to an index object, directly into the local store at
/// `root` (no fsync: this only feeds a memory measurement). With `tenants` > 0 the objects go
/// round-robin into the level-0 domains of that many foreign tenants (as checkpoints of other
/// writers put them); with 0, into the legacy domain (as every writer did before tenant
/// domains). Returns the index objects written.
pub fn foreign_index(root: &Path, chunks: u64, tenants: u64) -> std::io::Result<u64> {
    const PER_PACK: u64 = 512;
    const PACKS_PER_OBJECT: u64 = 64;
    let mut rng = fastrand::Rng::with_seed(42);
    let (mut left, mut objects) = (chunks, 0);
    while left > 0 {
        let mut obj = IndexObject::default();
        for _ in 0..PACKS_PER_OBJECT {
            if left == 0 {
                break;
            }
            let n = left.min(PER_PACK);
            left -= n;
            let entries: Vec<BlobEntry> = (0..n)
                .map(|_| {
                    let mut id = [0u8; 32];
                    rng.fill(&mut id);
                    BlobEntry {
                        chunk: ChunkId(id),
                        compression: Compression::Zstd,
                        stored_len: 20_000,
                        raw_len: 32_768,
                    }
                })
                .collect();
            let mut pid = [0u8; 32];
            rng.fill(&mut pid);
            let pack = PackId(pid);
            write_key(root, layout::pack_key(&pack).as_str(), &[])?;
            obj.packs.push((pack, entries));
        }
        obj.packs.sort_by_key(|(p, _)| *p);
        let bytes = obj.encode();
        let id = IndexId::of(&bytes);
        let key = match tenants {
            0 => layout::index_key(&id),
            n => layout::tenant_index_key(&foreign_tenant(objects % n), 0, &id),
        };
        write_key(root, key.as_str(), &bytes)?;
        objects += 1;
    }
    Ok(objects)
}

fn write_key(root: &Path, key: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().expect("a key has a directory"))?;
    std::fs::write(path, bytes)
}
