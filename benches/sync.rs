//! Benchmark of the sync loop: cold upload of a generated workdir, an incremental checkpoint,
//! and a download into an empty workdir; memory per indexed chunk and peak RSS.
//!
//! Run: `cargo bench --bench sync` (env: LAYERCAS_BENCH_MIB = MiB per timeline, default 24;
//! LAYERCAS_BENCH_TENANTS = tenants of 3 timelines each, default 3). Prints lines and one JSON line.

mod common;

use common::{env_or, mib, peak_rss, reset_peak_rss};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use layercas::backend::local::LocalBackend;
use layercas::store::Store;
use layercas::sync::{
    RemoteStorageConfig, RemoteStorageKind, StateBoard, TimelineSyncState, start_with_backend,
};
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use layercas::write::Writer;

fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                total += e.metadata().unwrap().len();
            }
        }
    }
    total
}

/// Runs the loop over `workdir` until idle; with `download`, fetches every timeline first.
async fn sync(store: &Path, workdir: &Path, download: bool) -> f64 {
    let started = Instant::now();
    let board = Arc::new(StateBoard::default());
    let remote = RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: store.to_path_buf(),
    });
    let backend = Arc::new(LocalBackend::new(store).unwrap());
    let startup = start_with_backend(workdir.to_path_buf(), &remote, backend, board.clone())
        .await
        .unwrap();
    let handle = startup.handle.unwrap();
    if download {
        for ((t, tl), s) in &startup.states {
            if matches!(s, TimelineSyncState::CloudOnly(_)) {
                handle.schedule_timeline_download(*t, *tl).unwrap();
            }
        }
    }
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    assert!(
        board
            .snapshot()
            .values()
            .all(|s| matches!(s, TimelineSyncState::Ready(_)))
    );
    started.elapsed().as_secs_f64()
}

fn main() {
    let spec = SampleSpec {
        bytes_per_timeline: env_or("LAYERCAS_BENCH_MIB", 24) << 20,
        tenants: env_or("LAYERCAS_BENCH_TENANTS", 3) as usize,
        ..SampleSpec::demo()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (work, store, fresh) = (
        tmp.path().join("work"),
        tmp.path().join("store"),
        tmp.path().join("fresh"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut wd, _) = SampleWorkdir::create(&work, &spec).unwrap();
    let initial = tree_bytes(&work);

    reset_peak_rss();
    let cold = rt.block_on(sync(&store, &work, false));
    let cold_rss = peak_rss();
    println!(
        "cold upload:  {:.1} MiB in {cold:.2} s = {:.0} MiB/s, peak RSS {:.0} MiB",
        mib(initial),
        mib(initial) / cold,
        mib(cold_rss)
    );

    let deltas = wd.step().unwrap();
    let added: u64 = deltas
        .iter()
        .map(|d| {
            let dir = layercas::sync::workdir::timeline_dir(&work, &d.tenant, &d.timeline);
            d.added
                .iter()
                .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
                .sum::<u64>()
        })
        .sum();
    let stored_before = tree_bytes(&store);
    let incr = rt.block_on(sync(&store, &work, false));
    let grew = tree_bytes(&store) - stored_before;
    println!(
        "incremental:  {:.1} MiB of new layer files in {incr:.2} s = {:.0} MiB/s, store grew {:.1} MiB ({:.1}% of the new files)",
        mib(added),
        mib(added) / incr,
        mib(grew),
        100.0 * grew as f64 / added as f64
    );

    std::fs::create_dir_all(&fresh).unwrap();
    reset_peak_rss();
    let down = rt.block_on(sync(&store, &fresh, true));
    let restored = tree_bytes(&fresh);
    println!(
        "download:     {:.1} MiB in {down:.2} s = {:.0} MiB/s, peak RSS {:.0} MiB",
        mib(restored),
        mib(restored) / down,
        mib(peak_rss())
    );

    let (chunks, heap) = rt.block_on(async {
        let store = Store::open(Arc::new(LocalBackend::new(&store).unwrap()))
            .await
            .unwrap();
        let w = Writer::new(store).await.unwrap();
        (w.known_chunks(), w.index_heap_bytes())
    });
    println!(
        "index:        {chunks} chunks, {:.1} bytes per chunk",
        heap as f64 / chunks as f64
    );
    let json = serde_json::json!({
        "initial_bytes": initial, "cold_upload_mib_s": mib(initial) / cold, "cold_peak_rss": cold_rss,
        "incremental_new_bytes": added, "incremental_mib_s": mib(added) / incr, "incremental_store_growth": grew,
        "download_mib_s": mib(restored) / down, "chunks": chunks, "index_bytes_per_chunk": heap as f64 / chunks as f64,
    });
    println!("{json}");
}
