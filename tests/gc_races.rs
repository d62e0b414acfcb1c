//! End-to-end regressions for the gc/writer races of issue 10 (1 to 4), on the real S3 server
//! with a request-holding proxy (`common::hold_proxy`) between the library's S3 backend (in its
//! standard stack: retry, limit, timeout, metrics) and the server. Each test forces one
//! interleaving by holding a chosen request, and asserts afterwards that verify finds no error
//! and that the newest successful checkpoint of every timeline restores byte for byte.
//!
//! The writer and gc each get their own proxy, so a rule meant for one never catches the other.
//! Every test failed before writers guarded their references with intent objects (commit
//! 7eb62b0); the report of that change names how.

mod common;

/// The race tests proper (they need the S3 server).
#[cfg(feature = "s3")]
mod s3 {

    use std::sync::Arc;
    use std::time::Duration;

    use layercas::gc;
    use layercas::write::Writer;

    use crate::common::hold_proxy::Action;
    use crate::common::race_rig::{Rig, T2, T3, files, gc};

    /// The gc window of most tests: short, so that the old protocol's gc (which waited it out)
    /// finishes quickly, while the holds below last longer.
    const WINDOW: Duration = Duration::from_millis(800);

    /// Race 1: two checkpoints of one writer run at once. The long one stores its pack and pauses
    /// (the proxy keeps the upload's answer) before it validates; gc condemns and deletes that
    /// pack (no index object names it yet); the short one starts after gc and applies the newer
    /// generation to the writer's fence. The long one must not validate against the short one's
    /// generation: it must see that its pack was deleted since its own start and store it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn race1_concurrent_checkpoints_validate_against_their_own_start() {
        let mut rig = Rig::new(WINDOW).await;
        let writer = Arc::new(
            Writer::new(rig.via(&rig.writer_proxy).await)
                .await
                .expect("writer"),
        );
        let paused = rig
            .writer_proxy
            .rule("PUT", "/packs/", 1, Action::HoldAnswer);
        let long = rig.spawn(&writer, T2, 1, files("long", 200 << 10, 11));
        paused.arrived(1).await;
        // The pack is stored, older than the window, in no index object, named by no intent.
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
        let report = gc(&rig.direct, WINDOW).await.expect("gc");
        eprintln!("gc while the long checkpoint paused: {report:?}");
        rig.checkpoint(&writer, T3, 1, files("short", 50 << 10, 12))
            .await;
        paused.release();
        rig.finished(long).await;
        rig.assert_intact().await;
    }

    /// Race 3: a writer deduplicates against a dead pack, validates, and sends its manifest create,
    /// which the proxy holds for longer than the window while gc condemns and deletes the pack.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn race3_manifest_create_held_past_the_window() {
        let mut rig = Rig::new(WINDOW).await;
        let x = rig.dying_pack().await;
        let writer = Arc::new(
            Writer::new(rig.via(&rig.writer_proxy).await)
                .await
                .expect("writer"),
        );
        let create = rig.writer_proxy.rule("PUT", "/manifests/", 1, Action::Hold);
        let w = rig.spawn(&writer, T2, 1, x);
        create.arrived(1).await;
        let report = gc(&rig.direct, WINDOW).await.expect("gc");
        eprintln!("gc while the manifest create is held: {report:?}");
        tokio::time::sleep(WINDOW * 2).await;
        create.release();
        rig.finished(w).await;
        rig.assert_intact().await;
    }

    /// Race 4: the store's window is long when a writer validates; its manifest create is held
    /// (for less than that window). A gc with a short window condemns the dead pack the writer
    /// deduplicated against; a second gc with a short window starts meanwhile, takes over, and
    /// deletes the pack. The manifest create then lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn race4_two_gcs_with_different_windows() {
        const LONG: Duration = Duration::from_secs(8);
        const SHORT: Duration = Duration::from_millis(300);
        let mut rig = Rig::new(LONG).await;
        let x = rig.dying_pack().await;
        let writer = Arc::new(
            Writer::new(rig.via(&rig.writer_proxy).await)
                .await
                .expect("writer"),
        );
        let create = rig.writer_proxy.rule("PUT", "/manifests/", 1, Action::Hold);
        let w = rig.spawn(&writer, T2, 1, x);
        create.arrived(1).await;
        let first_store = rig.direct.clone();
        let first = tokio::spawn(async move { gc(&first_store, SHORT).await });
        // Wait until the first gc has condemned (or, having nothing to condemn, finished).
        for _ in 0..200 {
            let state = gc::state::read(rig.direct.backend()).await.expect("state");
            let condemned = state
                .state
                .is_some_and(|s| s.phase == gc::state::Phase::Condemned);
            if condemned || first.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let report = gc(&rig.direct, SHORT).await.expect("second gc");
        eprintln!("second gc: {report:?}");
        create.release();
        rig.finished(w).await;
        match first.await.unwrap() {
            Ok(r) => eprintln!("first gc: {r:?}"),
            // It lost the state to the second run: it must have stopped without deleting.
            Err(e) => assert!(
                format!("{e:?}").contains("PreconditionFailed"),
                "first gc: {e}"
            ),
        }
        rig.assert_intact().await;
    }

    /// A delta's base repacked under its writer (format-spec 5.2 and 13.3): T2's first
    /// checkpoint holds a relation `rel__1` and a file its second drops, in one pack; once gc
    /// drops LSN 1, half of that pack is dead and gc repacks it. A writer then records `rel__2`,
    /// a rewrite of `rel__1`, whose new chunks are deltas against `rel__1`'s. The proxy holds
    /// the writer's read of those bases while gc repacks them and deletes their pack: with
    /// `Hold` the read finds the pack gone; with `HoldAnswer` it returns the bases, and the
    /// writer's deltas name bases in a pack deleted since its start. Either way the writer must
    /// store what it references where gc keeps it (whole, or against the bases' new pack).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn base_pack_repacked_while_its_delta_writer_reads_it() {
        for action in [Action::Hold, Action::HoldAnswer] {
            base_pack_repacked_under(action).await;
        }
    }

    async fn base_pack_repacked_under(action: Action) {
        use crate::common::noise;
        let mut rig = Rig::new(WINDOW).await;
        let direct = Writer::new(rig.direct.clone()).await.expect("writer");
        let rel = noise(400 << 10, 51);
        let named = |pairs: &[(&str, &Vec<u8>)]| -> crate::common::race_rig::Files {
            pairs
                .iter()
                .map(|(n, b)| (n.to_string(), (*b).clone()))
                .collect()
        };
        let junk = noise(400 << 10, 52);
        rig.checkpoint(&direct, T2, 1, named(&[("rel__1", &rel), ("junk", &junk)]))
            .await;
        rig.checkpoint(&direct, T2, 2, named(&[("rel__1", &rel)]))
            .await;
        let mut rewritten = rel.clone();
        for b in rewritten.iter_mut().skip(1000).step_by(50_000) {
            *b ^= 0xff;
        }
        // The pack must be older than the window for gc to repack it.
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
        let writer = Arc::new(
            Writer::new(rig.via(&rig.writer_proxy).await)
                .await
                .expect("writer"),
        );
        // A writer reads packs only for bases.
        let read = rig.writer_proxy.rule("GET", "/packs/", 1, action.clone());
        let w = rig.spawn(&writer, T2, 3, named(&[("rel__2", &rewritten)]));
        read.arrived(1).await;
        let report = gc(&rig.direct, WINDOW).await.expect("gc");
        assert!(
            report.manifests_deleted == 1 && report.packs_repacked == 1,
            "{action:?}: {report:?}"
        );
        read.release();
        rig.finished(w).await;
        rig.assert_intact().await;
    }

    /// gc's seal after a run that did work (format-spec 13.8, rule 2): the run drops a
    /// checkpoint and its pack, scans again and finds nothing more, and a commit lands before
    /// its confirmation (held by the proxy). That writer deleted the tentative seal, so the run
    /// does not seal, and the next run scans and drops the checkpoint before the new one. (A run
    /// that did work sent no confirmation before the seal could follow work: `arrived` timed
    /// out.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn seal_after_work_a_commit_before_the_confirmation_makes_the_next_run_scan() {
        let mut rig = Rig::new(WINDOW).await;
        let writer = Writer::new(rig.direct.clone()).await.expect("writer");
        rig.checkpoint(&writer, T2, 1, files("one", 50 << 10, 31))
            .await;
        rig.checkpoint(&writer, T2, 2, files("two", 50 << 10, 32))
            .await;
        // The first checkpoint's pack must be older than the window, or the run leaves it for
        // later and never seals.
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
        let gc_store = rig.via(&rig.gc_proxy).await;
        let confirm = rig
            .gc_proxy
            .rule_after(1, "PUT", "/gc/seal", 1, Action::Hold);
        let run = tokio::spawn(async move { gc(&gc_store, WINDOW).await });
        tokio::time::timeout(Duration::from_secs(60), confirm.arrived(1))
            .await
            .expect("the run that did work confirms its seal");
        rig.checkpoint(&writer, T2, 3, files("three", 50 << 10, 33))
            .await;
        confirm.release();
        let worked = run.await.expect("gc task").expect("gc");
        assert!(
            worked.manifests_deleted == 1 && worked.packs_deleted >= 1 && !worked.sealed,
            "{worked:?}"
        );
        let next = gc(&rig.direct, WINDOW).await.expect("gc");
        assert!(!next.unchanged && next.manifests_deleted == 1, "{next:?}");
        rig.assert_intact().await;
    }

    /// The scan after a run's work decides whether it seals: a writer uploads its pack while gc
    /// condemns (the proxy holds gc's update to `Condemned`) and pauses before its intent. gc's
    /// own plan left nothing for later, but the young pack its last scan lists would be left for
    /// later by a new run, so the run must not seal (a seal there would hide the pack from every
    /// run until the next commit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn seal_after_work_not_when_a_writers_pack_arrived_during_the_run() {
        let mut rig = Rig::new(WINDOW).await;
        let direct = Writer::new(rig.direct.clone()).await.expect("writer");
        rig.checkpoint(&direct, T2, 1, files("one", 50 << 10, 41))
            .await;
        rig.checkpoint(&direct, T2, 2, files("two", 50 << 10, 42))
            .await;
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
        let gc_store = rig.via(&rig.gc_proxy).await;
        let condemn = rig
            .gc_proxy
            .rule_after(1, "PUT", "/gc/state", 1, Action::Hold);
        let run = tokio::spawn(async move { gc(&gc_store, WINDOW).await });
        condemn.arrived(1).await;
        let writer = Arc::new(
            Writer::new(rig.via(&rig.writer_proxy).await)
                .await
                .expect("writer"),
        );
        let intent = rig.writer_proxy.rule("PUT", "/intents/", 1, Action::Hold);
        let w = rig.spawn(&writer, T3, 1, files("in flight", 50 << 10, 43));
        intent.arrived(1).await;
        condemn.release();
        let worked = run.await.expect("gc task").expect("gc");
        assert!(
            worked.manifests_deleted == 1 && !worked.sealed,
            "{worked:?}"
        );
        assert!(
            !worked.left_for_later,
            "its own plan left nothing: {worked:?}"
        );
        intent.release();
        rig.finished(w).await;
        rig.assert_intact().await;
    }

    /// gc's seal (format-spec 13.8): a commit lands after a gc that finds nothing to do has
    /// listed the manifests and before it confirms its seal (the proxy holds the confirmation).
    /// The writer deleted the tentative seal, so the confirmation fails and the next run scans,
    /// sees the new checkpoint and drops the older one. With a seal that stood, the next run
    /// would have stopped at once and kept both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn seal_a_commit_before_the_confirmation_makes_the_next_run_scan() {
        let mut rig = Rig::new(WINDOW).await;
        let writer = Writer::new(rig.direct.clone()).await.expect("writer");
        rig.checkpoint(&writer, T2, 1, files("one", 50 << 10, 21))
            .await;
        let gc_store = rig.via(&rig.gc_proxy).await;
        // The first PUT of the seal is the tentative one; the second, its confirmation, is held.
        let confirm = rig
            .gc_proxy
            .rule_after(1, "PUT", "/gc/seal", 1, Action::Hold);
        let run = tokio::spawn(async move { gc(&gc_store, WINDOW).await });
        confirm.arrived(1).await;
        rig.checkpoint(&writer, T2, 2, files("two", 50 << 10, 22))
            .await;
        confirm.release();
        let sealing = run.await.expect("gc task").expect("gc");
        assert!(
            !sealing.sealed && sealing.manifests_deleted == 0,
            "{sealing:?}"
        );
        let next = gc(&rig.direct, WINDOW).await.expect("gc");
        assert!(!next.unchanged, "{next:?}");
        assert_eq!(next.manifests_deleted, 1, "{next:?}");
        rig.assert_intact().await;
    }
}

/// Issue 10 item 6: gc repacking a truncated pack panicked (exit 101 from casctl), after it had
/// already rewritten manifests. A damaged pack must be skipped (or the run fail) without a
/// panic; the store stays consistent: every chunk of every manifest is still in an existing
/// indexed pack, and the damaged pack is not deleted while it holds live chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_skips_a_truncated_pack_it_would_repack() {
    gc_beside_a_damaged_pack(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len / 3).unwrap();
    })
    .await;
}

/// The same with bytes flipped inside the pack's blobs (its table intact): the blobs fail their
/// check when copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_skips_a_corrupt_pack_it_would_repack() {
    gc_beside_a_damaged_pack(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        // Across every blob (both files' chunks, in whatever order the workers packed them),
        // sparing the table at the end.
        let blobs = bytes.len() - 4096;
        for b in bytes.iter_mut().take(blobs).skip(1000).step_by(997) {
            *b ^= 0x5a;
        }
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

/// One pack holding two files' chunks, half of them dead after gc's retention (so it is
/// repacked), damaged by `damage` before gc runs.
async fn gc_beside_a_damaged_pack(damage: impl FnOnce(&std::path::Path)) {
    use layercas::format::layout;
    use layercas::gc::retention::{Policy, Retention};
    use layercas::gc::{self, GcOptions};
    use layercas::verify::{self, Severity, VerifyOptions};
    use layercas::write::Writer;

    let (_d, dir) = common::tempdir();
    let store = common::local_store(&dir).await;
    let writer = Writer::new(store.clone()).await.expect("writer");
    let (_s1, src1) = common::tempdir();
    let a = common::noise(400 << 10, 21);
    let b = common::noise(400 << 10, 22);
    std::fs::write(src1.join("a"), &a).unwrap();
    std::fs::write(src1.join("b"), &b).unwrap();
    common::checkpoint_dir(&writer, &src1, 1).await;
    std::fs::remove_file(src1.join("b")).unwrap();
    common::checkpoint_dir(&writer, &src1, 2).await;
    // One pack holds a and b; once LSN 1 goes, half of it is live: it is repacked.
    let packs: Vec<_> = store
        .list(&layout::prefix(layout::PACKS))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let damaged = dir.join(packs[0].key.as_str());
    damage(&damaged);

    let opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
    let gc_store = store.clone();
    let run =
        tokio::spawn(async move { gc::run(&gc_store, &opts, layercas::progress::none()).await });
    match run.await {
        Ok(Ok(report)) => eprintln!("gc: {report:?}"),
        Ok(Err(e)) => eprintln!("gc refused: {e}"),
        Err(e) => panic!("gc panicked on a damaged pack: {e}"),
    }
    assert!(
        damaged.exists(),
        "gc deleted the damaged pack, which holds live chunks"
    );
    let report = verify::verify(&store, VerifyOptions::default(), layercas::progress::none())
        .await
        .expect("verify");
    let missing: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error && p.key.starts_with("manifests/"))
        .collect();
    assert!(missing.is_empty(), "manifests lost chunks: {missing:#?}");
}

/// Issue 10 acceptance: a 1 GiB checkpoint (incompressible, local store in a temp dir) with gc
/// running back to back the whole time never fails because of gc. It runs in the normal suite
/// (about 10 s in the test profile on 2 cores: the checkpoint alone takes 2-3 s);
/// `LAYERCAS_BIG_GC=0` skips it, `LAYERCAS_BIG_GC=nogc` times the same checkpoint without gc,
/// and `LAYERCAS_BIG_GC_MIB` sets the size in MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_checkpoint_with_gc_back_to_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use layercas::format::metadata::TimelineMetadata;
    use layercas::gc::retention::{Policy, Retention};
    use layercas::gc::{self, GcOptions};
    use layercas::id::Lsn;
    use layercas::verify::{self, Severity, VerifyOptions};
    use layercas::write::{CheckpointMode, CheckpointRequest, Writer};

    // `nogc` runs the same checkpoint without gc, to time it alone.
    let mode = std::env::var("LAYERCAS_BIG_GC").unwrap_or_default();
    if mode == "0" {
        eprintln!("skipped (LAYERCAS_BIG_GC=0)");
        return;
    }
    let mib: usize = std::env::var("LAYERCAS_BIG_GC_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let (_d, dir) = common::tempdir();
    let store = common::local_store(&dir).await;
    gc::init_state(&store, std::time::Duration::from_millis(200))
        .await
        .unwrap();
    let (_s, src) = common::tempdir();
    // Files of 64 MiB, generated on disk piece by piece (never the whole GiB in memory).
    for i in 0..mib.div_ceil(64) {
        let size = (mib - i * 64).min(64) << 20;
        std::fs::write(
            src.join(format!("f{i:03}")),
            common::noise(size, 100 + i as u64),
        )
        .unwrap();
    }
    // A small checkpoint first, so gc has something to compact and delete as the big one runs.
    let (_p, small) = common::tempdir();
    std::fs::write(small.join("s"), common::noise(1 << 20, 7)).unwrap();
    let writer = Writer::new(store.clone()).await.expect("writer");
    common::checkpoint_dir(&writer, &small, 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let gc_loop = {
        let (store, stop, mode) = (store.clone(), stop.clone(), mode.clone());
        tokio::spawn(async move {
            let opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
            // The default window: how long gc spares packs no index names yet (a writer's uploads
            // in flight). Safety never depends on it; liveness of a long upload does.
            let mut runs = 0usize;
            while mode != "nogc" && !stop.load(Ordering::Relaxed) {
                gc::run(&store, &opts, layercas::progress::none())
                    .await
                    .unwrap_or_else(|e| panic!("gc run {runs}: {e}"));
                runs += 1;
            }
            runs
        })
    };
    let started = std::time::Instant::now();
    let req = CheckpointRequest {
        tenant: common::TENANT,
        timeline: common::TIMELINE,
        metadata: TimelineMetadata::at(Lsn(2)),
        files: common::sources(&src),
        mode: CheckpointMode::Full,
    };
    let report = writer.checkpoint(req, layercas::progress::none()).await;
    stop.store(true, Ordering::Relaxed);
    let runs = gc_loop.await.expect("gc loop");
    let report = report.unwrap_or_else(|e| {
        panic!(
            "the {mib} MiB checkpoint failed beside {runs} gc runs after {:?}: {e}",
            started.elapsed()
        )
    });
    eprintln!(
        "{mib} MiB checkpoint in {:?} beside {runs} gc runs: {report:?}",
        started.elapsed()
    );
    assert!(runs > 0 || mode == "nogc");
    let verified = verify::verify(&store, VerifyOptions::default(), layercas::progress::none())
        .await
        .expect("verify");
    let errors: Vec<_> = verified
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let (_r, to) = common::tempdir();
    writer
        .restore(
            &common::TENANT,
            &common::TIMELINE,
            None,
            &to,
            layercas::progress::none(),
        )
        .await
        .expect("restore");
    for (name, data) in common::read_tree(&src) {
        assert!(
            std::fs::read(to.join(&name)).unwrap() == data,
            "{name} differs"
        );
    }
}
