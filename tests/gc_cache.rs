//! gc's cache (format-spec 13.7) on the real S3 server and on local disk: a run reads only the
//! manifests and index objects that changed since the last run, and a damaged or lying cache
//! costs reads and never changes what gc decides (manifest copies are checked against their MD5
//! etag, index copies against their key).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::backend::wrap::Op;
use layercas::backend::{BackendExt, Payload, PutMode};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::layout;
use layercas::format::manifest_cache::CacheShard;
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions, GcReport};
use layercas::id::{Lsn, TimelineId};
use layercas::progress;
use layercas::store::Store;
use layercas::write::{CheckpointMode, CheckpointRequest, Writer};

fn config() -> StoreConfig {
    StoreConfig::new(ChunkerParams::fastcdc(256, 1024, 4096), 64 << 10, 1)
}

/// Checkpoints timelines `timelines` (ids `[t + 1; 16]`) with `per_timeline` small full
/// checkpoints each (one new file each).
async fn fill(writer: &Writer, root: &Path, timelines: std::ops::Range<u8>, per_timeline: u64) {
    for t in timelines {
        let dir = root.join(format!("tl{t}"));
        for c in 0..per_timeline {
            let mut files = BTreeMap::new();
            for i in 0..=c {
                files.insert(format!("layer_{i}"), noise(3000, t as u64 * 100 + i));
            }
            write_files(&dir, &files);
            let req = CheckpointRequest {
                tenant: TENANT,
                timeline: TimelineId([t + 1; 16]),
                metadata: TimelineMetadata::at(Lsn(0x100 * (c + 1))),
                files: sources(&dir),
                mode: CheckpointMode::Full,
            };
            writer.checkpoint(req, progress::none()).await.unwrap();
        }
    }
}

/// Each of `timelines` restores exactly the files `fill` wrote for it last.
async fn restore_as_written(store: &Store, root: &Path, timelines: std::ops::Range<u8>) {
    for t in timelines {
        let (_o, out) = tempdir();
        let tl = TimelineId([t + 1; 16]);
        store
            .restore_timeline(&TENANT, &tl, None, &out, progress::none())
            .await
            .unwrap();
        let want = read_tree(&root.join(format!("tl{t}")));
        assert!(!want.is_empty());
        assert!(read_tree(&out) == want, "timeline {tl} restores as written");
    }
}

async fn gc_run(store: &Store) -> GcReport {
    let opts = GcOptions::new(Retention::uniform(Policy::KeepAll));
    gc::run(store, &opts, progress::none()).await.expect("gc")
}

/// The cache shards under `prefix` in the store.
async fn shards_under(store: &Store, prefix: &str) -> Vec<layercas::backend::Key> {
    let listed = store.list(&layout::prefix(prefix)).await.unwrap();
    listed.into_iter().map(|m| m.key).collect()
}

/// The manifest cache shards in the store.
async fn shards(store: &Store) -> Vec<layercas::backend::Key> {
    shards_under(store, layout::MANIFEST_CACHE).await
}

/// Rewrites the shard at `key` so that each entry holds the next entry's (valid) bytes.
async fn make_it_lie(store: &Store, key: &layercas::backend::Key) {
    let backend = store.backend();
    let good = CacheShard::decode(&backend.get_bytes(key, 1 << 30).await.unwrap()).unwrap();
    let mut lying = good.clone();
    let n = lying.entries.len();
    assert!(n > 1, "a shard of {n} entries cannot lie by rotation");
    for i in 0..n {
        lying.entries[i].1 = good.entries[(i + 1) % n].1.clone();
    }
    let bytes = Payload::from_bytes(Bytes::from(lying.encode()));
    backend.put(key, bytes, PutMode::Overwrite).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reads_only_manifests_that_changed_and_never_trusts_a_bad_copy() {
    let s3 = common::s3server::s3_backend(|_| {}).await;
    reads_only_what_changed(standard_stack(Arc::new(s3), &StackConfig::default())).await;
}

/// The same on local disk, whose objects carry their MD5 as S3's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_local_disk_too() {
    let (_d, dir) = tempdir();
    let local = local_backend(&dir);
    reads_only_what_changed(standard_stack(local, &StackConfig::default())).await;
}

async fn reads_only_what_changed(opened: layercas::backend::open::Opened) {
    let (_w, root) = tempdir();
    let store = Store::open_or_create(opened.backend.clone(), config())
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    // 18 index objects in one tenant's domain: more than gc leaves unmerged (16).
    fill(&writer, &root, 0..3, 6).await;
    let gets = async || {
        let before = opened.metrics.snapshot().op(Op::Get).requests;
        let report = gc_run(&store).await;
        (
            report,
            opened.metrics.snapshot().op(Op::Get).requests - before,
        )
    };

    let first = gc_run(&store).await;
    assert_eq!(first.manifests_cached, 0, "no cache yet: {first:?}");
    assert_eq!(shards(&store).await.len(), 1, "18 manifests fit one shard");
    let (idle, idle_gets) = gets().await;
    assert_eq!(idle.manifests_cached, 18, "{idle:?}");
    assert!(
        first.index_objects_written > 0,
        "the first run merges: {first:?}"
    );
    let indexes = shards_under(&store, layout::INDEX).await.len();
    assert_eq!(
        idle.index_objects_cached, indexes,
        "the objects the first run wrote were copied by it: {idle:?}"
    );
    assert_eq!(
        (
            idle.packs_deleted,
            idle.packs_repacked,
            idle.manifests_folded
        ),
        (0, 0, 0),
        "the second run has nothing to do: {idle:?}"
    );
    let (again, again_gets) = gets().await;
    assert_eq!(again.manifests_cached, 18, "{again:?}");
    assert_eq!(again_gets, idle_gets, "an idle run's reads do not change");

    // A new checkpoint: only its manifest is read.
    let more = root.join("more");
    write_files(&more, &BTreeMap::from([("layer".into(), noise(3000, 999))]));
    let req = CheckpointRequest {
        tenant: TENANT,
        timeline: TimelineId([9; 16]),
        metadata: TimelineMetadata::at(Lsn(0x100)),
        files: sources(&more),
        mode: CheckpointMode::Full,
    };
    writer.checkpoint(req, progress::none()).await.unwrap();
    let after_new = gc_run(&store).await;
    assert_eq!(after_new.manifests_cached, 18, "{after_new:?}");
    assert_eq!(gc_run(&store).await.manifests_cached, 19);

    // A damaged shard: gc reads every manifest, decides the same, and repairs the cache.
    let key = shards(&store).await.remove(0);
    let backend = store.backend();
    let junk = Payload::from_bytes(Bytes::from_static(b"not a shard"));
    backend.put(&key, junk, PutMode::Overwrite).await.unwrap();
    let damaged = gc_run(&store).await;
    assert_eq!(damaged.manifests_cached, 0, "{damaged:?}");
    assert_eq!(damaged.packs_deleted + damaged.packs_repacked, 0);
    assert_eq!(gc_run(&store).await.manifests_cached, 19, "rewritten");

    // A lying shard: each entry holds another manifest's (valid) bytes. No copy matches its
    // key's etag, so none is used, and the restore afterwards proves nothing was lost.
    make_it_lie(&store, &key).await;
    let lied_to = gc_run(&store).await;
    assert_eq!(lied_to.manifests_cached, 0, "{lied_to:?}");
    restore_as_written(&store, &root, 0..3).await;
}

#[tokio::test]
async fn a_lying_index_shard_is_ignored_on_local_disk() {
    let (_d, root) = tempdir();
    let store = Store::open_or_create(local_backend(&root.join("store")), config())
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    fill(&writer, &root, 0..2, 2).await;
    let first = gc_run(&store).await;
    assert_eq!(first.index_objects_cached, 0, "{first:?}");
    // Two more checkpoints add index objects the first run's cache lacks.
    fill(&writer, &root, 2..4, 1).await;
    gc_run(&store).await;
    let third = gc_run(&store).await;
    assert!(third.index_objects_cached > 1, "{third:?}");
    // A lying index shard: no copy hashes to its key, so none is used.
    let key = shards_under(&store, layout::INDEX_CACHE).await.remove(0);
    make_it_lie(&store, &key).await;
    let lied_to = gc_run(&store).await;
    assert_eq!(lied_to.index_objects_cached, 0, "{lied_to:?}");
    restore_as_written(&store, &root, 0..2).await;
}
