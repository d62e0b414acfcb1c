//! The sync loop's pageserver-facing behaviours, one test each: per-timeline completion (watch
//! and wait), cancellation of startup, of a wait and of the loop; an evicted timeline's pending
//! files kept for the next try; a panicking task reported and its timeline freed; timelines the
//! scan cannot read (bad metadata, symbolic links, fifos) named, and `casctl sync` exits 1; named
//! layer files that are not regular files refused. That no blocking file I/O runs on the async
//! runtime is shown by the unit tests in `src/sync/runtime_tests.rs` (they hold each I/O point).
mod common;
#[allow(dead_code)]
#[path = "common/sync_harness.rs"]
mod sync_harness;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use layercas::format::metadata::{PageserverVersion, TimelineMetadata, encode_pageserver};
use layercas::sync::workdir::timeline_dir;
use layercas::sync::{
    CancellationToken, StateBoard, SyncHandle, SyncOptions, TimelineSyncState,
    start_with_backend_opts,
};
use layercas::{Error, Lsn, Store, TenantId, TimelineId};
use sync_harness::*;

const T: TenantId = TenantId([1; 16]);
const TL: TimelineId = TimelineId([2; 16]);

/// The pageserver-format metadata file of a timeline at `lsn`.
fn metadata_file(lsn: u64) -> Vec<u8> {
    encode_pageserver(
        &TimelineMetadata::at(Lsn(lsn)),
        PageserverVersion::V4 { pg_version: 16 },
    )
}

/// One timeline at LSN 0x10 with one layer file.
fn one_timeline(work: &Path) -> std::path::PathBuf {
    let dir = timeline_dir(work, &T, &TL);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("base"), noise(50_000, 1)).unwrap();
    std::fs::write(dir.join("metadata"), metadata_file(0x10)).unwrap();
    dir
}

/// Starts the loop over `backend` with at most `max_errors` failures per timeline.
async fn start(
    work: &Path,
    backend: layercas::backend::DynBackend,
    max_errors: u32,
    cancel: &CancellationToken,
) -> (Arc<StateBoard>, SyncHandle) {
    let board = Arc::new(StateBoard::default());
    let mut r = remote(work);
    r.max_sync_errors = max_errors;
    let mut opts = SyncOptions::new(board.clone());
    opts.cancel = cancel.clone();
    let startup = start_with_backend_opts(work.to_path_buf(), &r, backend, opts)
        .await
        .unwrap();
    (board, startup.handle.unwrap())
}

/// Fails the test instead of hanging when the loop never gets idle.
async fn idle(handle: &SyncHandle) {
    tokio::time::timeout(Duration::from_secs(60), handle.wait_idle())
        .await
        .expect("the loop never became idle")
        .unwrap();
}

/// The file names of the timeline's newest checkpoint in the store.
async fn stored_names(store: &Path) -> Vec<String> {
    let store = Store::open(local_backend(store)).await.unwrap();
    let state = store.checkpoint_state(&T, &TL, None).await.unwrap();
    state.files.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timelines_upload_completes_on_its_watch_and_waits_cancel() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    let dir = one_timeline(&work);
    let cancel = CancellationToken::new();
    let (_, handle) = start(&work, local_backend(&store), 10, &cancel).await;
    let none = CancellationToken::new();
    let lsn = handle.wait_uploaded(T, TL, Lsn(0x10), &none).await.unwrap();
    assert_eq!(lsn, Lsn(0x10));
    std::fs::write(dir.join("next"), noise(1000, 2)).unwrap();
    let file = metadata_file(0x20);
    let lsn = handle
        .schedule_upload(T, TL, vec!["next".into()], &file)
        .unwrap();
    assert_eq!(lsn, Lsn(0x20));
    let mut watch = handle.remote_timeline(T, TL);
    assert_eq!(handle.wait_uploaded(T, TL, lsn, &none).await.unwrap(), lsn);
    assert_eq!(watch.borrow_and_update().remote_consistent_lsn, Some(lsn));

    // A wait for an LSN nobody uploads ends when its own token fires.
    let mine = CancellationToken::new();
    mine.cancel();
    let e = handle
        .wait_uploaded(T, TL, Lsn(0x99), &mine)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    // An unreadable metadata file is refused at once, naming the timeline.
    let e = handle.schedule_upload(T, TL, vec![], b"junk").unwrap_err();
    assert!(e.to_string().contains(&TL.to_string()), "{e}");

    // Cancelling the start token stops the loop: every wait returns.
    cancel.cancel();
    let e = handle
        .wait_uploaded(T, TL, Lsn(0x99), &none)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    handle.shutdown().await;
    assert!(matches!(handle.wait_idle().await, Err(Error::Cancelled(_))));
    assert_eq!(stored_names(&store).await, ["base", "next"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_start_returns_cancelled() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    one_timeline(&work);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let opts = SyncOptions {
        cancel,
        ..SyncOptions::new(Arc::new(StateBoard::default()))
    };
    let r = remote(&work);
    let started = start_with_backend_opts(work.clone(), &r, local_backend(&store), opts).await;
    assert!(matches!(started, Err(Error::Cancelled(_))));
}

/// Regression: eviction used to drop an incremental upload's file list, so those files never
/// reached the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_timelines_files_are_uploaded_with_its_next_work() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    let dir = one_timeline(&work);
    let (board, handle) = start(&work, local_backend(&store), 1, &CancellationToken::new()).await;
    idle(&handle).await;
    // "a" is not there yet: the upload fails, and one failure evicts.
    let lsn = handle.schedule_upload(T, TL, vec!["a".into()], &metadata_file(0x20));
    let none = CancellationToken::new();
    let e = handle
        .wait_uploaded(T, TL, lsn.unwrap(), &none)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TaskFailed(_)), "{e}");
    idle(&handle).await;
    assert_eq!(
        board.snapshot()[&(T, TL)],
        TimelineSyncState::Evicted(Some(Lsn(0x20)))
    );
    std::fs::write(dir.join("a"), noise(1000, 3)).unwrap();
    std::fs::write(dir.join("b"), noise(1000, 4)).unwrap();
    let lsn = handle.schedule_upload(T, TL, vec!["b".into()], &metadata_file(0x30));
    handle
        .wait_uploaded(T, TL, lsn.unwrap(), &none)
        .await
        .unwrap();
    idle(&handle).await;
    handle.shutdown().await;
    assert_eq!(stored_names(&store).await, ["a", "b", "base"]);
    assert_eq!(
        board.snapshot()[&(T, TL)],
        TimelineSyncState::Ready(Lsn(0x30))
    );
}

/// Regression: a panicking task left its timeline busy, so `wait_idle` hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_reports_an_error_and_frees_its_timeline() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    one_timeline(&work);
    let backend = Arc::new(PanicOnce {
        inner: local_backend(&store),
        prefix: "manifests/".into(),
        fired: Default::default(),
    });
    let (board, handle) = start(&work, backend, 10, &CancellationToken::new()).await;
    let none = CancellationToken::new();
    let wait = handle.wait_uploaded(T, TL, Lsn(0x10), &none);
    let e = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the panic was never reported")
        .unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    idle(&handle).await;
    assert_eq!(
        board.snapshot()[&(T, TL)],
        TimelineSyncState::Evicted(Some(Lsn(0x10)))
    );
    // The timeline is free: scheduling again retries the kept work, which now succeeds.
    handle
        .schedule_upload(T, TL, vec![], &metadata_file(0x10))
        .unwrap();
    handle.wait_uploaded(T, TL, Lsn(0x10), &none).await.unwrap();
    idle(&handle).await;
    handle.shutdown().await;
    assert_eq!(stored_names(&store).await, ["base"]);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The child's output once it exits; kills it and fails if it runs for a minute (a hang).
fn wait_bounded(mut child: std::process::Child) -> std::process::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("casctl sync hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Opens a fifo for writing without blocking when dropped, so a reader blocked in its open
/// (old code) ends and the test fails instead of hanging in the runtime's drop.
struct Unblock(std::path::PathBuf);

impl Drop for Unblock {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut open = std::fs::OpenOptions::new();
        let _ = open
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

/// Layer files a caller names must be regular files: a fifo is refused without being opened
/// (opening it would block the task until someone writes into it) and a symbolic link's target
/// is never recorded. Regression: both were opened as the caller named them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refuses_named_files_that_are_not_regular() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    let dir = one_timeline(&work);
    let (_, handle) = start(&work, local_backend(&store), 1, &CancellationToken::new()).await;
    idle(&handle).await;
    mkfifo(&dir.join("pipe"));
    let _unblock = Unblock(dir.join("pipe"));
    std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
    let none = CancellationToken::new();
    for (lsn, name, why) in [
        (0x20, "pipe", "not a regular file"),
        (0x30, "link", "symbolic link"),
    ] {
        let lsn = handle.schedule_upload(T, TL, vec![name.into()], &metadata_file(lsn));
        let wait = handle.wait_uploaded(T, TL, lsn.unwrap(), &none);
        let e = tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("the upload of {name} hung"))
            .unwrap_err();
        assert!(
            e.to_string().contains(why) && e.to_string().contains(name),
            "{e}"
        );
        idle(&handle).await;
        // The evicted work is kept (with "pipe" in it): make that file regular for the next try.
        std::fs::remove_file(dir.join("pipe")).unwrap();
        std::fs::write(dir.join("pipe"), b"regular now").unwrap();
    }
    handle.shutdown().await;
    assert_eq!(stored_names(&store).await, ["base"]);
}

/// Timelines the scan cannot take are named in the startup data and in `casctl sync`'s report,
/// which exits 1; the readable timeline still syncs. Regression: a pageserver-format file was
/// skipped with only a log line and exit 0, and symbolic links and fifos were left out silently.
#[test]
fn unreadable_timelines_are_named_and_casctl_sync_exits_1() {
    let ((_s, store), (_w, work)) = (tempdir(), tempdir());
    one_timeline(&work);
    let bad = |n: u8| TimelineId([n; 16]);
    let mk = |tl: TimelineId| {
        let d = timeline_dir(&work, &T, &tl);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("metadata"), metadata_file(0x10)).unwrap();
        d
    };
    std::fs::write(mk(bad(3)).join("metadata"), b"not a metadata file").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", mk(bad(4)).join("layer")).unwrap();
    // No metadata file at all: a timeline being created or downloaded, not local and not skipped.
    let creating = timeline_dir(&work, &T, &bad(6));
    std::fs::create_dir_all(&creating).unwrap();
    std::fs::write(creating.join("layer"), b"half a download").unwrap();
    mkfifo(&mk(bad(5)).join("pipe"));
    // The metadata file itself a fifo (opening it must not block the scan) or a symbolic link
    // (to a valid file: still not the timeline's own file).
    let fifo_metadata = timeline_dir(&work, &T, &bad(7));
    std::fs::create_dir_all(&fifo_metadata).unwrap();
    mkfifo(&fifo_metadata.join("metadata"));
    let elsewhere = work.join("valid-metadata");
    std::fs::write(&elsewhere, metadata_file(0x10)).unwrap();
    let linked = timeline_dir(&work, &T, &bad(8));
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("metadata")).unwrap();

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_casctl"))
        .arg("--store")
        .arg(&store)
        .args(["--json", "sync", "--workdir"])
        .arg(&work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = report["skipped"].as_array().unwrap();
    let reason = |n: u8| {
        let tl = bad(n).to_string();
        let s = skipped.iter().find(|s| s["timeline"] == tl.as_str());
        s.unwrap_or_else(|| panic!("{tl} not skipped: {report}"))["reason"].to_string()
    };
    assert!(reason(3).contains("metadata file"), "{}", reason(3));
    assert!(reason(4).contains("symbolic link") && reason(4).contains("layer"));
    assert!(reason(5).contains("not a regular file") && reason(5).contains("pipe"));
    assert!(reason(7).contains("not a regular file"), "{}", reason(7));
    assert!(reason(8).contains("symbolic link"), "{}", reason(8));
    assert_eq!(skipped.len(), 5);
    assert_eq!(report["ready"], 1);
}

/// `casctl sync --config FILE` reads the `[remote_storage]` section a pageserver reads: the store
/// and the metadata format come from it.
#[test]
fn casctl_sync_reads_the_pageserver_config() {
    let ((_s, store), (_w, work), (_c, conf)) = (tempdir(), tempdir(), tempdir());
    one_timeline(&work);
    let config = conf.join("pageserver.toml");
    std::fs::write(&config, pageserver_toml(&store)).unwrap();
    let run = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_casctl"))
            .args(["--json", "sync", "--workdir"])
            .arg(&work)
            .arg("--config")
            .arg(config)
            .env_remove("LAYERCAS_STORE")
            .output()
            .unwrap()
    };
    let out = run(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ready"], 1, "{report}");
    assert!(
        store.join("manifests").exists(),
        "the store named in the section was used"
    );
    // The section says `layercas` metadata: the pageserver file is then unreadable.
    let layercas = conf.join("layercas.toml");
    let text = pageserver_toml(&store).replace("\"pageserver\"", "\"layercas\"");
    std::fs::write(&layercas, text).unwrap();
    assert_eq!(run(&layercas).status.code(), Some(1));
}
