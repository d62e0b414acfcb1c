//! A pageserver plugs in: its workdir with metadata files in the pageserver's own format (a branch
//! included) syncs through `examples/pageserver.rs` (this test runs the example's own code) to a
//! local store and through the loop to S3, at the LSNs those files state, and comes back into an
//! empty workdir byte-identical, metadata files included; metrics land in the caller's registry.
mod common;
#[allow(dead_code)]
#[path = "../examples/pageserver.rs"]
mod example;
#[allow(dead_code)]
#[path = "common/sync_harness.rs"]
mod sync_harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use layercas::format::metadata::{MetadataFormat, parse_pageserver};
use layercas::sync::{
    StateBoard, SyncOptions, TimelineKey, TimelineSyncState, start_with_backend_opts,
};
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use layercas::{Lsn, Store};
use sync_harness::*;

/// A generated workdir, in the pageserver's format by default, with at least one branch; each
/// timeline's LSN as its metadata file states it.
fn pageserver_workdir(work: &Path) -> BTreeMap<TimelineKey, Lsn> {
    let (wd, _) = SampleWorkdir::create(work, &SampleSpec::small()).unwrap();
    let mut branches = 0;
    let stated = wd
        .timelines()
        .iter()
        .map(|t| {
            let file = std::fs::read(t.dir().join("metadata")).unwrap();
            let (md, _) = parse_pageserver(&file).unwrap();
            branches += md.ancestor_timeline.is_some() as usize;
            ((t.tenant(), t.timeline()), md.disk_consistent_lsn)
        })
        .collect();
    assert!(branches > 0, "the sample has no branch");
    stated
}

/// The newest manifest LSN of every timeline in the store.
async fn store_lsns(store: &Path) -> BTreeMap<TimelineKey, Lsn> {
    let store = Store::open(local_backend(store)).await.unwrap();
    let prefix = layercas::format::layout::prefix(layercas::format::layout::MANIFESTS);
    let mut out = BTreeMap::new();
    for r in store.list_manifests(&prefix).await.unwrap() {
        out.insert((r.tenant, r.timeline), r.lsn);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_syncs_a_pageserver_workdir_and_brings_it_back_byte_identical() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let stated = pageserver_workdir(&work);
    let want = tree(&work);
    let toml = pageserver_toml(&store);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut registry = prometheus_client::registry::Registry::default();
    example::run(work.to_str().unwrap(), &toml, tx, &mut registry)
        .await
        .unwrap();
    assert_eq!(
        store_lsns(&store).await,
        stated,
        "uploaded at the stated LSNs"
    );
    let mut last = BTreeMap::new();
    while let Ok((t, tl, s)) = rx.try_recv() {
        last.insert((t, tl), s);
    }
    let ready: BTreeMap<_, _> = stated
        .iter()
        .map(|(k, l)| (*k, TimelineSyncState::Ready(*l)))
        .collect();
    assert_eq!(last, ready, "the caller's channel got every state");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for metric in [
        "layercas_sync_tasks_total",
        "layercas_sync_queue_length 0",
        "layercas_sync_dedup_ratio",
        "layercas_sync_upload_lag_lsn 0",
        "layercas_sync_backend_requests_total{op=\"put\"}",
        "layercas_sync_backend_bytes_out_total{op=\"put\"}",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }

    // Attach on an empty workdir: the example downloads every timeline.
    let (_f, fresh) = tempdir();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut registry = prometheus_client::registry::Registry::default();
    example::run(fresh.to_str().unwrap(), &toml, tx, &mut registry)
        .await
        .unwrap();
    assert_eq!(tree(&fresh), want, "downloaded workdir differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pageserver_workdir_round_trips_through_s3() {
    let (_w, work) = tempdir();
    let stated = pageserver_workdir(&work);
    let want = tree(&work);
    let backend: layercas::backend::DynBackend =
        Arc::new(s3server::s3_backend(s3server::small_pages_and_parts).await);
    let mut remote = remote(&work);
    remote.metadata_format = MetadataFormat::Pageserver;
    let start = |dir: &Path, board: &Arc<StateBoard>| {
        let opts = SyncOptions::new(board.clone());
        start_with_backend_opts(dir.to_path_buf(), &remote, backend.clone(), opts)
    };
    let board = Arc::new(StateBoard::default());
    let startup = start(&work, &board).await.unwrap();
    assert!(startup.skipped.is_empty(), "{:?}", startup.skipped);
    let handle = startup.handle.unwrap();
    for (&(t, tl), &lsn) in &stated {
        let cancel = layercas::sync::CancellationToken::new();
        assert_eq!(
            handle.wait_uploaded(t, tl, lsn, &cancel).await.unwrap(),
            lsn
        );
    }
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;

    let (_f, fresh) = tempdir();
    let board = Arc::new(StateBoard::default());
    let startup = start(&fresh, &board).await.unwrap();
    let handle = startup.handle.unwrap();
    for (&(t, tl), state) in &startup.states {
        assert_eq!(*state, TimelineSyncState::CloudOnly(stated[&(t, tl)]));
        handle.schedule_timeline_download(t, tl).unwrap();
    }
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    assert_eq!(tree(&fresh), want, "downloaded workdir differs");
}
