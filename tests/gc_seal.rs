//! gc's seal (format-spec 13.8): a run after one that found nothing to do, with nothing changed
//! since, reads the gc state and the seal and stops; any commit, other options, `--full`, a pack
//! left for later, a repair, or a seal older than a day makes the next run scan the store as
//! before.

mod common;

use std::path::Path;
use std::time::Duration;

use layercas::backend::{DynBackend, Payload, PutMode};
use layercas::format::config::StoreConfig;
use layercas::format::layout;
use layercas::gc::{self, GcOptions, GcReport};
use layercas::store::Store;
use layercas::write::Writer;
use layercas::{Policy, Retention, progress};

use common::recording::Recording;
use common::*;

/// Options keeping the newest `n` checkpoints, with no window (so that no pack is young and
/// left for later).
fn keep_last(n: usize) -> GcOptions {
    let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(n)));
    opts.window = Duration::ZERO;
    opts
}

/// Checkpoint `lsn` of one new layer file (seeded by `seed`) through `writer`.
async fn checkpoint(writer: &Writer, root: &Path, lsn: u64, seed: u64) {
    let src = root.join(format!("src-{lsn:x}"));
    write_files(
        &src,
        &[(format!("layer_{lsn:x}"), noise(200_000, seed))].into(),
    );
    checkpoint_dir(writer, &src, lsn).await;
}

/// A local store under `root` with its writer.
async fn store_and_writer(root: &Path) -> (Store, Writer) {
    let store = local_store(&root.join("store")).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    (store, writer)
}

async fn gc_run(store: &Store, opts: &GcOptions) -> GcReport {
    gc::run(store, opts, progress::none()).await.expect("gc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_one_that_found_nothing_reads_two_objects_and_stops() {
    let (_d, root) = tempdir();
    let rec = Recording::new(local_backend(&root.join("store")));
    let recorded: DynBackend = rec.clone();
    let store = Store::open_or_create(recorded, StoreConfig::default_config())
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    checkpoint(&writer, &root, 0x100, 1).await;

    let first = gc_run(&store, &keep_last(1)).await;
    assert!(first.sealed && !first.unchanged, "{first:?}");
    rec.take();
    let second = gc_run(&store, &keep_last(1)).await;
    assert!(second.unchanged && !second.sealed, "{second:?}");
    let mut requests = rec.take();
    requests.sort();
    assert_eq!(requests, ["get gc/seal", "get gc/state"], "{second:?}");
    let steps: Vec<&str> = second.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, ["read-seal"]);

    // A commit deletes the seal: the next run scans and drops the older checkpoint.
    checkpoint(&writer, &root, 0x200, 2).await;
    let third = gc_run(&store, &keep_last(1)).await;
    assert!(!third.unchanged, "{third:?}");
    assert_eq!(third.manifests_deleted, 1, "{third:?}");
    // It left nothing for later, and a scan after its work finds nothing more: it seals, and
    // the run after it stops at once.
    assert!(third.sealed, "{third:?}");
    assert!(
        third.steps.iter().any(|s| s.step == "plan-again"),
        "{third:?}"
    );
    let fourth = gc_run(&store, &keep_last(1)).await;
    assert!(fourth.unchanged, "{fourth:?}");

    // A seal counts only for the options it was made with, and never with --full.
    let other = gc_run(&store, &keep_last(2)).await;
    assert!(!other.unchanged && other.sealed, "{other:?}");
    let mut full = keep_last(2);
    full.full = true;
    let forced = gc_run(&store, &full).await;
    assert!(!forced.unchanged, "{forced:?}");
    assert!(gc_run(&store, &keep_last(2)).await.unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_left_for_later_or_a_repair_keeps_the_next_run_scanning() {
    let (_d, root) = tempdir();
    let (store, writer) = store_and_writer(&root).await;
    checkpoint(&writer, &root, 0x100, 1).await;
    checkpoint(&writer, &root, 0x200, 2).await;

    // Dropping the first checkpoint leaves its pack dead but young (the default 60 s window):
    // the run leaves it for later, so it must not seal, and the next run must look again.
    let mut windowed = keep_last(1);
    windowed.window = Duration::from_secs(60);
    let first = gc_run(&store, &windowed).await;
    assert_eq!(first.manifests_deleted, 1, "{first:?}");
    assert!(first.left_for_later && !first.sealed, "{first:?}");
    let second = gc_run(&store, &windowed).await;
    assert_eq!(second.packs_deleted, 0, "the pack is young: {second:?}");
    assert!(!second.sealed && !second.unchanged, "{second:?}");
    // Without the window the dead pack goes, and the run seals after scanning again.
    let third = gc_run(&store, &keep_last(1)).await;
    assert!(third.packs_deleted >= 1 && third.sealed, "{third:?}");
    assert!(gc_run(&store, &keep_last(1)).await.unchanged);

    // An index object lost and rebuilt by `repair index` deletes the seal too.
    let backend = store.backend();
    let index = store.list(&layout::prefix(layout::INDEX)).await.unwrap();
    backend.delete(&index[0].key).await.unwrap();
    let repaired = gc::repair::repair_index(&store, false).await.unwrap();
    assert!(!repaired.index_objects_written.is_empty(), "{repaired:?}");
    let err = backend.head(&layout::gc_seal_key()).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!gc_run(&store, &keep_last(1)).await.unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_older_than_a_day_does_not_stop_a_run() {
    let (_d, root) = tempdir();
    let (store, writer) = store_and_writer(&root).await;
    checkpoint(&writer, &root, 0x100, 3).await;
    assert!(gc_run(&store, &keep_last(1)).await.sealed);
    // The local store's objects are files: age the seal by its modification time (the store's
    // clock, which the age limit reads).
    let file = std::fs::File::options()
        .write(true)
        .open(root.join("store").join(layout::GC_SEAL))
        .unwrap();
    let aged = gc::seal::MAX_AGE + Duration::from_secs(3600);
    file.set_modified(std::time::SystemTime::now() - aged)
        .unwrap();
    let run = gc_run(&store, &keep_last(1)).await;
    assert!(!run.unchanged && run.sealed, "{run:?}");
    assert!(gc_run(&store, &keep_last(1)).await.unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_oversized_seal_costs_a_scan_never_a_failure() {
    let (_d, root) = tempdir();
    let (store, writer) = store_and_writer(&root).await;
    checkpoint(&writer, &root, 0x100, 4).await;
    assert!(gc_run(&store, &keep_last(1)).await.sealed);
    let key = layout::gc_seal_key();
    for junk in [vec![0x5a; 100], vec![0; 1 << 20]] {
        store
            .backend()
            .put(
                &key,
                Payload::from_bytes(bytes::Bytes::from(junk)),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let run = gc_run(&store, &keep_last(1)).await;
        assert!(!run.unchanged && run.sealed, "{run:?}");
    }
    assert!(gc_run(&store, &keep_last(1)).await.unchanged);
}

/// A run that takes over from one that was deleting writes no seal (format-spec 13.8, rule 1):
/// that run may be paused, not dead, and still write after this one's last listing. The run
/// after it, which finds the state idle, seals as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_takes_over_from_a_deleting_run_does_not_seal() {
    use layercas::gc::state::{self, Phase};
    let (_d, root) = tempdir();
    let (store, writer) = store_and_writer(&root).await;
    checkpoint(&writer, &root, 0x100, 1).await;
    assert!(gc_run(&store, &keep_last(1)).await.sealed);
    // A run doomed a pack, recorded it, and stopped (or paused) before deleting it.
    let held = state::read(store.backend()).await.unwrap();
    let mut deleting = held.state.clone().unwrap();
    deleting.phase = Phase::Deleting;
    deleting.condemned = vec![layercas::id::PackId([9; 32])];
    state::update(store.backend(), &held, deleting)
        .await
        .unwrap();

    let took_over = gc_run(&store, &keep_last(1)).await;
    assert!(!took_over.sealed && !took_over.unchanged, "{took_over:?}");
    let after = state::read(store.backend()).await.unwrap().state.unwrap();
    assert!(
        after.phase == Phase::Idle && after.condemned.is_empty(),
        "{after:?}"
    );
    let next = gc_run(&store, &keep_last(1)).await;
    assert!(next.sealed, "{next:?}");
    assert!(gc_run(&store, &keep_last(1)).await.unchanged);
}
