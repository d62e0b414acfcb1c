//! gc with nothing to condemn never waits (issue 14): not on its first run over a store (which
//! creates the gc state), not with a pack a writer has in flight, not on a second run. Each run
//! happens on a paused tokio clock, which moves only when something waits on a timer: the
//! clock not moving is the proof that no wait happened (no wall-clock figure is asserted).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use layercas::backend::BackendExt;
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::layout;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::state::{self, Phase};
use layercas::gc::{self, GcOptions, GcReport};
use layercas::id::PackId;
use layercas::progress;
use layercas::store::Store;
use layercas::write::Writer;

use common::*;

/// Runs gc with the default window (60 s) and returns its report and how far the paused clock
/// moved during it.
async fn gc_on_paused_clock(store: &Store) -> (GcReport, Duration) {
    let opts = GcOptions::new(Retention::uniform(Policy::KeepAll));
    assert_eq!(opts.window, Duration::from_secs(60), "the default window");
    let before = tokio::time::Instant::now();
    let report = gc::run(store, &opts, progress::none()).await.expect("gc");
    (report, before.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_gc_that_condemns_nothing_does_not_wait() {
    let (_d, root) = tempdir();
    let config = StoreConfig::new(ChunkerParams::fastcdc(256, 1024, 4096), 64 << 10, 1);
    let store = Store::open_or_create(local_backend(&root), config)
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    let files = BTreeMap::from([("layer_0".to_string(), noise(50_000, 1))]);
    write_files(&root.join("src"), &files);
    checkpoint_dir(&writer, &root.join("src"), 0x100).await;
    // A pack no index names yet, as a writer in flight leaves it: young, so it is spared.
    let salt = layercas::id::unique_bytes();
    let in_flight = layout::pack_key(&PackId::of(&salt));
    let backend = store.backend();
    backend
        .create_bytes(&in_flight, Bytes::from(salt.to_vec()))
        .await
        .unwrap();
    let phase = async || {
        state::read(store.backend())
            .await
            .unwrap()
            .state
            .map(|s| s.phase)
    };
    // The writer marked the store's version (format-spec 13.1): generation 0, no gc ran yet.
    assert_eq!(
        phase().await,
        Some(Phase::Idle),
        "the writer marked the state"
    );
    let generation = state::read(store.backend())
        .await
        .unwrap()
        .state
        .map(|s| s.generation);
    assert_eq!(generation, Some(0), "no gc ran yet");

    let (first, moved) = gc_on_paused_clock(&store).await;
    assert_eq!(moved, Duration::ZERO, "the first gc waited: {first:?}");
    assert_eq!(
        (first.packs_deleted, first.packs_repacked),
        (0, 0),
        "{first:?}"
    );
    assert_eq!(first.duration_ms, 0, "{first:?}");
    assert_eq!(
        phase().await,
        Some(Phase::Idle),
        "the first run left the state idle"
    );
    assert!(
        backend.head(&in_flight).await.is_ok(),
        "the young pack is spared"
    );

    let (second, moved) = gc_on_paused_clock(&store).await;
    assert_eq!(moved, Duration::ZERO, "the idle gc waited: {second:?}");
    // The young pack is left for later: neither run may seal (format-spec 13.8).
    assert!(
        !first.sealed && !second.sealed && !second.unchanged,
        "{second:?}"
    );
    assert!(second.generation > first.generation, "{second:?}");
    // The report names each step in order: an idle run settles, it never re-marks or deletes.
    let steps: Vec<&str> = second.steps.iter().map(|s| s.step).collect();
    assert_eq!(
        steps,
        [
            "read-seal",
            "claim",
            "load-caches-and-list-manifests",
            "read-manifests",
            "decode-manifests",
            "list-indexes",
            "read-indexes",
            "list-packs",
            "plan",
            "save-caches",
            "bases-and-repack",
            "settle",
            "refresh-caches"
        ],
        "{second:?}"
    );
}
