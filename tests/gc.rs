//! gc against concurrent writers: a seeded simulation of interleavings in virtual time, a
//! real-time stress run, SIGKILL of `casctl gc`, and space reclaimed against a fresh store.

mod common;
#[path = "common/jitter.rs"]
mod jitter;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use layercas::backend::{BackendError, DynBackend};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions};
use layercas::id::Lsn;
use layercas::store::Store;
use layercas::write::{CheckpointMode, CheckpointRequest, Writer};
use layercas::{Error, progress};
use serde_json::json;

use common::*;
use jitter::Jitter;

fn small_config() -> StoreConfig {
    StoreConfig::new(ChunkerParams::fastcdc(256, 1024, 4096), 64 << 10, 1)
}

/// Checks that every chunk of every manifest resolves to a pack that holds it intact.
async fn every_chunk_readable(store: &Store, when: &str) -> usize {
    let index = store.load_index().await.expect("index");
    let refs = store
        .list_manifests(&layercas::format::layout::prefix(
            layercas::format::layout::MANIFESTS,
        ))
        .await
        .unwrap();
    let mut checked = 0;
    for m in store.read_manifests(&refs).await.expect("manifests") {
        for f in &m.added {
            for c in &f.chunks {
                let raw = store.read_chunk(&index, c).await;
                let raw = raw.unwrap_or_else(|e| panic!("{when}: {}: chunk {}: {e}", m.lsn, c.id));
                assert_eq!(raw.len(), c.len as usize);
                checked += 1;
            }
        }
    }
    checked
}

/// One seeded schedule: a writer records checkpoints while one or two gc runs (one possibly
/// killed at a random moment) collect; afterwards every chunk of every manifest is readable and
/// the newest checkpoint restores to what the writer last recorded.
async fn schedule(seed: u64, root: &Path) {
    let window = Duration::from_millis(1000);
    let base: DynBackend = local_backend(root);
    let store = Store::open_or_create(base.clone(), small_config())
        .await
        .unwrap();
    gc::init_state(&store, window).await.unwrap();
    let w_store = Store::open(Jitter::wrap(&base, seed, 40, Some(window * 3)))
        .await
        .unwrap();
    let work = root.join("work");
    let writer = async move {
        let writer = Writer::new(w_store).await.unwrap();
        let mut last = BTreeMap::new();
        let mut lsn = 0x100;
        for step in 0..5u64 {
            let mut files = BTreeMap::new();
            files.insert("stable".to_string(), noise(40_000, seed));
            files.insert(format!("layer_{step}"), noise(30_000, seed * 31 + step));
            if step % 2 == 0 {
                files.insert("hot".to_string(), noise(20_000, seed ^ step));
            }
            let dir = work.join(format!("s{step}"));
            write_files(&dir, &files);
            for _ in 0..6 {
                lsn += 0x10;
                let req = CheckpointRequest {
                    tenant: TENANT,
                    timeline: TIMELINE,
                    metadata: TimelineMetadata::at(Lsn(lsn)),
                    files: sources(&dir),
                    mode: CheckpointMode::Full,
                };
                match writer.checkpoint(req, progress::none()).await {
                    Ok(_) => {
                        last = files.clone();
                        break;
                    }
                    Err(Error::Fenced(_)) => continue,
                    Err(e) => panic!("seed {seed}: checkpoint: {e}"),
                }
            }
        }
        last
    };
    let racing = seed % 2 == 0;
    let gc_run = |n: u64| {
        let b = Jitter::wrap(&base, seed * 7 + n, 30, None);
        async move {
            let store = Store::open(b).await.unwrap();
            tokio::time::sleep(Duration::from_millis((seed * 131 + n * 977) % 4000)).await;
            let keep = 1 + ((seed + n) % 2) as usize;
            let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(keep)));
            opts.window = window;
            opts.repack_threshold = 0.9;
            let kill_at = Duration::from_millis((seed * 613 + n * 71) % 5000);
            let killed = seed % 3 == n;
            let run = gc::run(&store, &opts, progress::none());
            let outcome = if killed {
                // A run cut off by the timeout was killed; one that finished first is checked.
                match tokio::time::timeout(kill_at, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => return,
                }
            } else {
                run.await
            };
            check_gc_outcome(seed, n, racing, outcome);
        }
    };
    let (last, _, _) = tokio::join!(writer, gc_run(0), async {
        if racing {
            gc_run(1).await
        }
    });
    assert!(every_chunk_readable(&store, &format!("seed {seed} after the race")).await > 0);
    // A final, uninterrupted gc converges and leaves everything readable.
    let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
    opts.window = window;
    gc::run(&store, &opts, progress::none()).await.unwrap();
    every_chunk_readable(&store, &format!("seed {seed} after the final gc")).await;
    let to = root.join("restored");
    store
        .restore_timeline(&TENANT, &TIMELINE, None, &to, progress::none())
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: restore: {e}"));
    assert_eq!(read_tree(&to), last, "seed {seed}");
}

/// Fails the schedule unless a gc run ended in one of the documented race outcomes. Alone, a
/// run must succeed. Racing another gc run, it may instead lose: the rival's conditional update
/// of the gc state or of a manifest came first (`PreconditionFailed`), or an object the rival
/// deleted was gone when this run read it (`NotFound`). Both abort the run before it deletes
/// anything; every other error is a failure.
fn check_gc_outcome<T>(seed: u64, n: u64, racing: bool, outcome: layercas::Result<T>) {
    let Err(e) = outcome else { return };
    let lost_race =
        matches!(&e, Error::Backend(BackendError::PreconditionFailed { .. })) || e.is_not_found();
    assert!(
        racing && lost_race,
        "seed {seed}: gc run {n} failed{}: {e}",
        if racing { "" } else { " with no rival gc" }
    );
}

/// Seeded interleavings (2000 by default, GC_SIM_SCHEDULES=N for more or fewer, at least 1) of writer and
/// gc steps in virtual time: long writer pauses, killed gc runs, two gc runs racing.
#[test]
fn simulated_interleavings_never_lose_a_referenced_chunk() {
    let n: u64 =
        match std::env::var("GC_SIM_SCHEDULES") {
            Err(_) => 2000,
            Ok(s) => s.parse().ok().filter(|&n| n >= 1).unwrap_or_else(|| {
                panic!("GC_SIM_SCHEDULES={s:?}: expected a count of at least 1")
            }),
        };
    for seed in 1..=n {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(schedule(seed, dir.path()));
    }
}

/// Writers upload and gc collects in a loop for a bounded while on the local backend; then
/// verify finds nothing missing, every kept checkpoint restores byte-identically, and no
/// checkpoint failed because of gc (the writer is never blocked or refused by gc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_writer_and_gc_together() {
    let (_d, root) = tempdir();
    stress(local_backend(&root.join("store")), &root).await;
}

/// The same on the real S3 server, through the standard stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_writer_and_gc_together_on_s3() {
    use layercas::backend::open::{StackConfig, standard_stack};
    let (_d, root) = tempdir();
    let s3 = common::s3server::s3_backend(common::s3server::small_pages_and_parts).await;
    stress(
        standard_stack(Arc::new(s3), &StackConfig::default()).backend,
        &root,
    )
    .await;
}

async fn stress(backend: DynBackend, root: &Path) {
    let store = Store::open_or_create(backend, small_config())
        .await
        .unwrap();
    let window = Duration::from_millis(300);
    gc::init_state(&store, window).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc_store = store.clone();
    let gc_stop = stop.clone();
    let collector = tokio::spawn(async move {
        let mut runs = Vec::new();
        while !gc_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(3)));
            opts.window = window;
            let t = std::time::Instant::now();
            gc::run(&gc_store, &opts, progress::none()).await.unwrap();
            runs.push(t.elapsed());
        }
        runs
    });
    let writer = Writer::new(store.clone()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut recorded: Vec<(u64, BTreeMap<String, Vec<u8>>)> = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut lsn = 0x1000;
    while std::time::Instant::now() < deadline {
        let i = recorded.len() as u64;
        let mut files = BTreeMap::new();
        files.insert("base".to_string(), noise(200_000, 1));
        files.insert(format!("l{}", i % 4), noise(100_000, i));
        let dir = root.join(format!("w{i}"));
        write_files(&dir, &files);
        lsn += 0x10;
        let t = std::time::Instant::now();
        let req = CheckpointRequest {
            tenant: TENANT,
            timeline: TIMELINE,
            metadata: TimelineMetadata::at(Lsn(lsn)),
            files: sources(&dir),
            mode: CheckpointMode::Full,
        };
        writer.checkpoint(req, progress::none()).await.unwrap();
        slowest = slowest.max(t.elapsed());
        recorded.push((lsn, files));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs.len() >= 3, "gc ran {} times", runs.len());
    // gc takes no lock and waits for nothing: every checkpoint above succeeded while gc ran.
    let shortest_gc = runs.iter().min().copied().unwrap();
    let report = layercas::verify::verify(
        &store,
        layercas::verify::VerifyOptions {
            read_data: true,
            subset: None,
        },
        progress::none(),
    )
    .await
    .unwrap();
    assert_eq!(report.errors(), 0, "{:?}", report.problems);
    let kept = store.timeline_manifests(&TENANT, &TIMELINE).await.unwrap();
    assert!(kept.len() >= 3);
    for r in &kept {
        let files = &recorded.iter().find(|(l, _)| *l == r.lsn.0).unwrap().1;
        let to = root.join(format!("r{}", r.lsn.0));
        store
            .restore_timeline(&TENANT, &TIMELINE, Some(r.lsn), &to, progress::none())
            .await
            .unwrap();
        assert_eq!(&read_tree(&to), files, "checkpoint {}", r.lsn);
    }
    eprintln!(
        "stress: {} checkpoints (slowest {slowest:?}), {} gc runs (shortest {shortest_gc:?})",
        recorded.len(),
        runs.len()
    );
}

fn casctl(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casctl"));
    c.arg("--store").arg(store);
    c
}

fn json_of(c: &mut Command) -> serde_json::Value {
    let out = c.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify_counts(store: &Path) -> (usize, usize) {
    let v = json_of(casctl(store).args(["verify", "--read-data"]));
    let problems = v["problems"].as_array().unwrap();
    let errors = problems.iter().filter(|p| p["severity"] == "error").count();
    (errors, problems.len() - errors)
}

/// The verify warnings a store may show after a completed gc run: a pack whose chunks the
/// index resolves to another copy (a killed run's repack copied them, the next run keeps one
/// copy per chunk and the other pack until it is dead).
const ACCEPTED_AFTER_GC: &[&str] = &["no manifest references any chunk of this pack"];

/// SIGKILL of `casctl gc` at many moments leaves a store verify accepts, and the next gc
/// cleans it up completely.
#[test]
fn sigkill_of_gc_at_many_points_is_harmless() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    for i in 0..6u64 {
        let dir = root.join(format!("c{i}"));
        let mut files = BTreeMap::new();
        files.insert("keep".to_string(), noise(300_000, 9));
        files.insert(format!("f{i}"), noise(400_000, i));
        write_files(&dir, &files);
        let lsn = format!("0/{:X}", 0x100 + i * 0x10);
        let out = casctl(&store)
            .args(["checkpoint", "--tenant", &TENANT.to_string(), "--timeline"])
            .arg(TIMELINE.to_string())
            .args(["--lsn", &lsn])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (n, ms) in [3u64, 15, 40, 80, 130, 200, 260, 330, 420]
        .into_iter()
        .enumerate()
    {
        let keep = (6 - n.min(4)).to_string();
        let mut child = casctl(&store)
            .args(["gc", "--keep-last", &keep, "--window-ms", "150"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let (errors, _) = verify_counts(&store);
        assert_eq!(errors, 0, "after a kill at {ms} ms");
    }
    let r = json_of(casctl(&store).args(["gc", "--keep-last", "2", "--window-ms", "50"]));
    assert!(r["duration_ms"].as_u64().is_some());
    let v = json_of(casctl(&store).args(["verify", "--read-data"]));
    let problems = v["problems"].as_array().unwrap();
    // No errors, and only the warnings a completed gc may leave: none for orphaned index
    // entries, packs outside every index or foreign objects (gc removes or never makes those).
    assert!(
        problems.iter().all(|p| {
            let m = p["message"].as_str().unwrap();
            p["severity"] == "warning" && ACCEPTED_AFTER_GC.iter().any(|a| m.contains(a))
        }),
        "{problems:?}"
    );
    let ls = json_of(casctl(&store).arg("ls"));
    assert_eq!(ls[0]["checkpoints"].as_array().unwrap().len(), 2);
}

/// After dropping old checkpoints of a generated workdir, gc brings stored bytes within 10% of
/// a fresh store holding only the kept checkpoints; dry run predicts and changes nothing.
#[test]
fn gc_reclaims_space_close_to_a_fresh_store() {
    use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
    let (_d, root) = tempdir();
    let spec = SampleSpec {
        seed: 5,
        tenants: 1,
        timelines_per_tenant: 1,
        bytes_per_timeline: 24 << 20,
    };
    let wd_root = root.join("wd");
    let (mut wd, _) = SampleWorkdir::create(&wd_root, &spec).unwrap();
    let (store, fresh) = (root.join("store"), root.join("fresh"));
    let sync = |s: &Path| {
        let out = casctl(s)
            .args(["sync", "--workdir"])
            .arg(&wd_root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync(&store);
    for _ in 0..4 {
        wd.step().unwrap();
        sync(&store);
    }
    sync(&fresh);
    let stored = |s: &Path| {
        json_of(casctl(s).arg("stats"))["stored_bytes"]
            .as_u64()
            .unwrap()
    };
    let before = stored(&store);
    let dry = json_of(casctl(&store).args(["gc", "--dry-run", "--keep-last", "1"]));
    assert_eq!(stored(&store), before, "dry run changes nothing");
    assert!(dry["bytes_freed"].as_u64().unwrap() > 0);
    let r = json_of(casctl(&store).args(["gc", "--keep-last", "1", "--window-ms", "10"]));
    let (after, want) = (stored(&store), stored(&fresh));
    eprintln!(
        "gc: before {before} after {after} fresh {want} ({:+.1}%), freed {}, {} ms",
        (after as f64 / want as f64 - 1.0) * 100.0,
        r["bytes_freed"],
        r["duration_ms"]
    );
    assert!(after < before);
    assert!(
        (after as f64) <= want as f64 * 1.10,
        "after gc {after} bytes, a fresh store {want}"
    );
    assert_eq!(verify_counts(&store).0, 0);
}

/// Issue 14: many small checkpoints leave many small packs; gc consolidates them so that at most
/// one pack under 4 MiB is left, and every timeline still restores byte for byte.
#[test]
fn gc_consolidates_small_packs() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    let timelines = ["bb", "cc"].map(|b| b.repeat(16));
    let mut want = BTreeMap::new();
    for (t, tl) in timelines.iter().enumerate() {
        let mut files = BTreeMap::new();
        for i in 0..8u64 {
            files.insert(format!("layer_{i}"), noise(200_000, t as u64 * 100 + i));
            let dir = root.join(format!("t{t}c{i}"));
            write_files(&dir, &files);
            let lsn = format!("0/{:X}", 0x100 + i * 0x10);
            let tenant = TENANT.to_string();
            let args = [
                "checkpoint",
                "--tenant",
                &tenant,
                "--timeline",
                tl,
                "--lsn",
                &lsn,
            ];
            json_of(casctl(&store).args(args).arg(&dir));
        }
        want.insert(tl.clone(), files);
    }
    let small = |s: &Path| {
        walkdir::WalkDir::new(s.join("packs"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() < 4 << 20)
            .count()
    };
    assert!(
        small(&store) >= 16,
        "one small pack per checkpoint at least"
    );
    let r = json_of(casctl(&store).args(["gc", "--window-ms", "0"]));
    assert!(r["packs_repacked"].as_u64().unwrap() >= 16, "{r}");
    assert!(small(&store) <= 1, "{} small packs left", small(&store));
    assert_eq!(verify_counts(&store).0, 0);
    for (tl, files) in &want {
        let to = root.join(format!("restored-{tl}"));
        let tenant = TENANT.to_string();
        let args = ["restore", "--tenant", &tenant, "--timeline", tl, "--to"];
        json_of(casctl(&store).args(args).arg(&to));
        assert_eq!(&read_tree(&to), files);
    }
    // The consolidating run scanned again after its work, found nothing more and sealed, so
    // the next run stops at the seal, unless told --full (format-spec 13.8); that one finds
    // nothing to do and seals again.
    assert_eq!(r["sealed"], json!(true), "{r}");
    let stopped = json_of(casctl(&store).args(["gc", "--window-ms", "0"]));
    assert_eq!(stopped["unchanged"], json!(true), "{stopped}");
    assert_eq!(stopped["steps"].as_array().unwrap().len(), 1, "{stopped}");
    let full = json_of(casctl(&store).args(["gc", "--window-ms", "0", "--full"]));
    assert_eq!(
        (&full["sealed"], &full["unchanged"]),
        (&json!(true), &json!(false)),
        "{full}"
    );
}
