//! The sync loop end to end on a local store: upload a generated workdir, lose it, get every
//! timeline back byte-identically; incremental uploads store only new chunks; shutdown loses no
//! acknowledged work; two processes share a store (`sync_kills.rs` kills `casctl sync`).
mod common;
#[allow(dead_code)]
#[path = "common/sync_harness.rs"]
mod sync_harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
use layercas::sync::TimelineSyncState;
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use sync_harness::*;

/// A generated workdir syncs up; after it is deleted every timeline is `CloudOnly`; downloads
/// bring every file back byte-identically and the states become `Ready(lsn)`. On local fs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workdir_round_trips_through_the_loop() {
    let (_s, store) = tempdir();
    round_trip_through_the_loop(&|| local_backend(&store), &store).await;
}

/// The same on the real S3 server, through the standard stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workdir_round_trips_through_the_loop_on_s3() {
    let (s3, _) = s3_stack(FaultConfig::none()).await;
    round_trip_through_the_loop(&|| s3.clone(), Path::new("s3")).await;
}

/// With 30% of S3 requests failing transiently, everything still syncs both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_transient_faults_still_sync_on_s3() {
    let (s3, faults) = s3_stack(FaultConfig::random(0.3, 11)).await;
    round_trip_through_the_loop(&|| s3.clone(), Path::new("s3")).await;
    assert!(
        faults.injected() > 5,
        "only {} faults were injected",
        faults.injected()
    );
}

/// The real S3 server behind faults, retries, limits, timeouts and metrics.
async fn s3_stack(faults: FaultConfig) -> (layercas::backend::DynBackend, Arc<FaultBackend>) {
    use layercas::backend::open::{StackConfig, standard_stack};
    let base: layercas::backend::DynBackend =
        Arc::new(s3server::s3_backend(s3server::small_pages_and_parts).await);
    let faulty = Arc::new(FaultBackend::new(base, faults));
    let mut config = StackConfig::default();
    config.retry.base_delay = Duration::from_millis(5);
    config.retry.max_attempts = 10;
    (standard_stack(faulty.clone(), &config).backend, faulty)
}

async fn round_trip_through_the_loop(
    backend: &dyn Fn() -> layercas::backend::DynBackend,
    store: &Path,
) {
    let (_w, work) = tempdir();
    let (mut wd, _) = SampleWorkdir::create(&work, &SampleSpec::small()).unwrap();
    wd.step().unwrap();
    let want = tree(&work);
    let timelines: Vec<_> = wd
        .timelines()
        .iter()
        .map(|t| ((t.tenant(), t.timeline()), t.metadata().disk_consistent_lsn))
        .collect();

    let (board, states, handle) = start_on(&work, store, backend()).await;
    assert_eq!(states.len(), timelines.len());
    assert!(
        states
            .values()
            .all(|s| matches!(s, TimelineSyncState::Ready(_))),
        "{states:?}"
    );
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    for (key, lsn) in &timelines {
        assert_eq!(board.snapshot()[key], TimelineSyncState::Ready(*lsn));
    }

    std::fs::remove_dir_all(&work).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let (board, states, handle) = start_on(&work, store, backend()).await;
    for (key, lsn) in &timelines {
        assert_eq!(
            states[key],
            TimelineSyncState::CloudOnly(*lsn),
            "after deleting the workdir"
        );
        handle.schedule_timeline_download(key.0, key.1).unwrap();
    }
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    for (key, lsn) in &timelines {
        assert_eq!(board.snapshot()[key], TimelineSyncState::Ready(*lsn));
    }
    assert_eq!(tree(&work), want, "downloaded workdir differs");
}

/// One timeline whose part of the store is broken for good ends `Evicted`; all others end
/// `Ready`, and the loop keeps serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_timeline_is_evicted_and_others_sync() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let (wd, _) = SampleWorkdir::create(&work, &SampleSpec::small()).unwrap();
    let victim = (wd.timelines()[1].tenant(), wd.timelines()[1].timeline());
    let faults = FaultConfig {
        broken_prefix: Some(format!("manifests/{}/{}/", victim.0, victim.1)),
        ..FaultConfig::none()
    };
    let backend = Arc::new(FaultBackend::new(local_backend(&store), faults));
    let (board, _, handle) = start_on(&work, &store, backend).await;
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    for t in wd.timelines() {
        let state = board.snapshot()[&(t.tenant(), t.timeline())];
        if (t.tenant(), t.timeline()) == victim {
            assert_eq!(
                state,
                TimelineSyncState::Evicted(Some(t.metadata().disk_consistent_lsn))
            );
        } else {
            assert_eq!(
                state,
                TimelineSyncState::Ready(t.metadata().disk_consistent_lsn)
            );
        }
    }
}

/// A second checkpoint uploads only its new chunks, through the scheduling API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_uploads_store_only_new_chunks() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let (mut wd, _) = SampleWorkdir::create(&work, &SampleSpec::small()).unwrap();
    let (_b, _, handle) = start(&work, &store).await;
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    let before = store_bytes(&store);
    // The second round counts the bytes it sends.
    let metered = Arc::new(layercas::backend::layers::metrics::MetricsBackend::new(
        local_backend(&store),
    ));
    let metrics = metered.metrics();
    let (_b, _, handle) = start_on(&work, &store, metered).await;

    let deltas = wd.step().unwrap();
    let mut added = 0;
    for d in &deltas {
        let dir = layercas::sync::workdir::timeline_dir(&work, &d.tenant, &d.timeline);
        added += d
            .added
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .sum::<u64>();
        handle
            .schedule_timeline_checkpoint_upload(
                d.tenant,
                d.timeline,
                d.added.clone(),
                d.metadata.clone(),
            )
            .unwrap();
    }
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    let grew = store_bytes(&store) - before;
    let sent = metrics
        .snapshot()
        .op(layercas::backend::wrap::Op::Put)
        .bytes_out;
    assert!(
        sent * 4 < added,
        "uploaded {sent} bytes for {added} bytes of new layer files"
    );
    assert!(
        sent >= grew,
        "everything the store gained was counted as uploaded"
    );
    // Every timeline's newest checkpoint is the stepped one, and it restores identically.
    let s = layercas::store::Store::open(local_backend(&store))
        .await
        .unwrap();
    for d in &deltas {
        let (_o, out) = tempdir();
        s.restore_timeline(
            &d.tenant,
            &d.timeline,
            None,
            &out,
            layercas::progress::none(),
        )
        .await
        .unwrap();
        let dir = layercas::sync::workdir::timeline_dir(&work, &d.tenant, &d.timeline);
        assert_eq!(tree(&out), tree(&dir));
    }
}

fn store_bytes(store: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_casctl"))
        .arg("--store")
        .arg(store)
        .args(["--json", "stats"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stored_bytes"].as_u64().unwrap()
}

/// Shutdown returns promptly; work scheduled before it is not lost: the next startup uploads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_and_loses_no_scheduled_work() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let (mut wd, _) = SampleWorkdir::create(&work, &SampleSpec::small()).unwrap();
    let (_b, _, handle) = start(&work, &store).await;
    handle.wait_idle().await.unwrap();
    let deltas = wd.step().unwrap();
    for d in &deltas {
        handle
            .schedule_timeline_checkpoint_upload(
                d.tenant,
                d.timeline,
                d.added.clone(),
                d.metadata.clone(),
            )
            .unwrap();
    }
    let started = Instant::now();
    handle.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        handle
            .schedule_timeline_download(deltas[0].tenant, deltas[0].timeline)
            .is_err(),
        "a stopped loop refuses work"
    );

    let (board, _, handle) = start(&work, &store).await;
    handle.wait_idle().await.unwrap();
    handle.shutdown().await;
    let s = layercas::store::Store::open(local_backend(&store))
        .await
        .unwrap();
    for d in &deltas {
        let newest = s
            .timeline_manifests(&d.tenant, &d.timeline)
            .await
            .unwrap()
            .last()
            .unwrap()
            .lsn;
        assert_eq!(
            newest, d.lsn,
            "checkpoint scheduled before shutdown is in the store after restart"
        );
        assert_eq!(
            board.snapshot()[&(d.tenant, d.timeline)],
            TimelineSyncState::Ready(d.lsn)
        );
    }
}

fn casctl_sync(store: &Path, work: &Path, download: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casctl"));
    c.arg("--store")
        .arg(store)
        .args(["--json", "sync", "--workdir"])
        .arg(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if download {
        c.arg("--download");
    }
    c
}

/// Two processes syncing disjoint tenants into one store both succeed; a third, syncing the
/// first one's data under other tenant ids, stores it again: dedup domains are per tenant
/// (format-spec 6.1), so a writer never reads other tenants' index objects.
#[test]
fn two_processes_share_a_store_and_deduplicate() {
    let (_s, store) = tempdir();
    let (_a, work_a) = tempdir();
    let (_b, work_b) = tempdir();
    SampleWorkdir::create(
        &work_a,
        &SampleSpec {
            seed: 1,
            ..SampleSpec::small()
        },
    )
    .unwrap();
    SampleWorkdir::create(
        &work_b,
        &SampleSpec {
            seed: 2,
            ..SampleSpec::small()
        },
    )
    .unwrap();
    let (a, b) = (
        casctl_sync(&store, &work_a, false).spawn().unwrap(),
        casctl_sync(&store, &work_b, false).spawn().unwrap(),
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let verify = Command::new(env!("CARGO_BIN_EXE_casctl"))
        .arg("--store")
        .arg(&store)
        .args(["verify", "--read-data"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // A third workdir: workdir A's data under other tenant ids.
    let (_c, work_c) = tempdir();
    copy_with_new_tenants(&work_a, &work_c);
    let before = store_bytes(&store);
    let c = casctl_sync(&store, &work_c, false).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let grew = store_bytes(&store) - before;
    let size: u64 = read_tree(&work_c).values().map(|v| v.len() as u64).sum();
    assert!(
        grew * 20 > size,
        "stored only {grew} of {size} bytes of another tenant's data: its index was read"
    );
}
