//! Chunks stored as deltas (`CheckpointOptions::deltas`) against the previous version of their
//! file (format-spec 5.2): a rewritten layer stores a fraction of what it would whole, restores
//! byte-identically at every checkpoint, every base is a whole chunk, verify finds nothing wrong,
//! and gc that drops the checkpoints holding the bases (and repacks) keeps everything readable.
mod common;

use std::collections::BTreeMap;

use common::*;
use layercas::format::layout;
use layercas::format::manifest::Manifest;
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions};
use layercas::id::{ChunkId, IdSet, Lsn};
use layercas::progress;
use layercas::store::Store;
use layercas::write::{CheckpointMode, CheckpointOptions, CheckpointRequest, Writer};

/// A relation-like file: 8 KiB pages of text rows; `version` rewrites one row in every fourth
/// page, so that every chunk of the file changes a little.
fn relation(pages: usize, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * 8192);
    for p in 0..pages {
        let mut page = String::new();
        for row in 0..80 {
            let v = if row == 3 && p % 4 == 0 { version } else { 0 };
            let key = ((p * 80 + row) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            page.push_str(&format!("{p:06}:{row:03} {key:016x} balance {v:09}\n"));
        }
        let mut bytes = page.into_bytes();
        bytes.resize(8192, b' ');
        out.extend_from_slice(&bytes);
    }
    out
}

fn workdir(version: u32) -> BTreeMap<String, Vec<u8>> {
    let lsn = 10 * version;
    let mut files = BTreeMap::new();
    files.insert(format!("rel_16384__{lsn:08X}"), relation(512, version));
    files.insert(format!("wal__{lsn:08X}"), noise(100_000, version as u64));
    files
}

async fn manifests(store: &Store) -> Vec<Manifest> {
    let refs = store
        .list_manifests(&layout::prefix(layout::MANIFESTS))
        .await
        .unwrap();
    store.read_manifests(&refs).await.unwrap()
}

/// Every chunk of every manifest reads back (through its base when it is a delta).
async fn all_chunks_read(store: &Store) -> usize {
    let index = store.load_index().await.unwrap();
    let mut n = 0;
    for m in manifests(store).await {
        for c in m.added.iter().flat_map(|f| &f.chunks) {
            let raw = store.read_chunk(&index, c).await.unwrap();
            assert_eq!(ChunkId::of(&raw), c.id);
            n += 1;
        }
    }
    n
}

async fn restores_to(store: &Store, lsn: u64, want: &BTreeMap<String, Vec<u8>>) {
    let (_r, out) = tempdir();
    store
        .restore_timeline(&TENANT, &TIMELINE, Some(Lsn(lsn)), &out, progress::none())
        .await
        .unwrap();
    assert_eq!(&read_tree(&out), want, "restore at {lsn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_layers_store_as_deltas_and_survive_gc() {
    let (_s, store_dir) = tempdir();
    let store = local_store(&store_dir).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    let mut stored = Vec::new();
    let opts = CheckpointOptions {
        deltas: true,
        ..Default::default()
    };
    for v in 1..=3 {
        let (_w, work) = tempdir();
        write_files(&work, &workdir(v));
        let req = CheckpointRequest {
            tenant: TENANT,
            timeline: TIMELINE,
            metadata: TimelineMetadata::at(Lsn(10 * v as u64)),
            files: sources(&work),
            mode: CheckpointMode::Full,
        };
        let report = writer.checkpoint_with(req, opts, progress::none()).await;
        let report = report.unwrap();
        assert_eq!(report.new_deltas > 0, v > 1, "checkpoint {v}: {report:?}");
        stored.push(report.new_stored_bytes);
    }
    // The rewritten relation costs a fraction of its first version (the new WAL is the same
    // size every time and incompressible: 100,000 bytes of it are in every checkpoint).
    let rel = |s: u64| s.saturating_sub(100_000);
    assert!(
        rel(stored[1]) * 5 < rel(stored[0]) && rel(stored[2]) * 5 < rel(stored[0]),
        "stored per checkpoint: {stored:?}"
    );
    let ms = manifests(&store).await;
    let whole_first: IdSet<ChunkId> = ms[0]
        .added
        .iter()
        .flat_map(|f| &f.chunks)
        .filter(|c| c.base.is_none())
        .map(|c| c.id)
        .collect();
    for m in &ms[1..] {
        let rel = m.added.iter().find(|f| f.name.starts_with("rel_")).unwrap();
        let deltas = rel.chunks.iter().filter(|c| c.base.is_some()).count();
        assert!(
            deltas * 2 > rel.chunks.len(),
            "{deltas} of {}",
            rel.chunks.len()
        );
        // Depth 1: every base is a chunk the first checkpoint stored whole.
        assert!(
            rel.chunks
                .iter()
                .flat_map(|c| c.base)
                .all(|b| whole_first.contains(&b))
        );
    }
    for v in 1..=3 {
        restores_to(&store, 10 * v as u64, &workdir(v)).await;
    }
    let verified = layercas::verify::verify(
        &store,
        layercas::verify::VerifyOptions {
            read_data: true,
            subset: None,
        },
        progress::none(),
    )
    .await
    .unwrap();
    assert_eq!(verified.errors(), 0, "{:?}", verified.problems);

    // Keep only the newest: the checkpoints that hold the bases go, the bases stay.
    let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
    opts.window = std::time::Duration::ZERO;
    let report = gc::run(&store, &opts, progress::none()).await.unwrap();
    assert!(report.manifests_deleted > 0, "{report:?}");
    assert!(all_chunks_read(&store).await > 0);
    restores_to(&store, 30, &workdir(3)).await;
    // A second run repacks what the first left sparse: delta blobs move verbatim.
    let again = gc::run(&store, &opts, progress::none()).await.unwrap();
    assert!(all_chunks_read(&store).await > 0, "{again:?}");
    restores_to(&store, 30, &workdir(3)).await;
}
