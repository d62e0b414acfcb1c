//! No blocking file I/O on the async runtime: each point where the loop starts blocking file I/O
//! (the scan's metadata read, an upload's listing and reading, a download's writing) is held
//! with an [`io_gate`] while the loop runs on a current-thread runtime. The runtime's heartbeat
//! must go on, another timeline's upload must complete and a cancelled start must return while the
//! I/O is held; had the I/O run on the runtime's one thread, none of them could.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use crate::backend::DynBackend;
use crate::backend::local::LocalBackend;
use crate::error::Error;
use crate::format::metadata::TimelineMetadata;
use crate::id::{Lsn, TenantId, TimelineId};
use crate::sync::io_gate::Held;
use crate::sync::workdir::timeline_dir;
use crate::sync::{
    CancellationToken, RemoteStorageConfig, RemoteStorageKind, StateBoard, SyncHandle, SyncOptions,
    SyncStartupData, TimelineSyncState, start_with_backend_opts,
};

const T: TenantId = TenantId([7; 16]);
/// How long the test waits for anything before failing instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

fn tl(n: u8) -> TimelineId {
    TimelineId([n; 16])
}

/// Writes timeline `n` at `lsn` under `work` (two layer files, layercas-format metadata).
fn timeline(work: &Path, n: u8, lsn: u64) -> PathBuf {
    let dir = timeline_dir(work, &T, &tl(n));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("layer"), vec![n; 70_000]).unwrap();
    std::fs::write(dir.join("sub/layer"), format!("timeline {n}")).unwrap();
    let md = TimelineMetadata::at(Lsn(lsn)).to_file_bytes();
    std::fs::write(dir.join("metadata"), md).unwrap();
    dir
}

/// Starts the loop over the local store `store`.
async fn start(
    work: &Path,
    store: &Path,
    cancel: CancellationToken,
) -> crate::Result<SyncStartupData> {
    let mut remote = RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: store.to_path_buf(),
    });
    remote.max_concurrent_sync = 4;
    let backend: DynBackend = Arc::new(LocalBackend::new(store).unwrap());
    let opts = SyncOptions {
        cancel,
        ..SyncOptions::new(Arc::new(StateBoard::default()))
    };
    start_with_backend_opts(work.to_path_buf(), &remote, backend, opts).await
}

/// A current-thread runtime on a thread of its own, running a body that reports what it did
/// (`said`), beside a heartbeat task (`ticks`).
struct OneThread {
    ticks: Receiver<()>,
    said: Receiver<String>,
    thread: std::thread::JoinHandle<()>,
}

impl OneThread {
    fn run<F: Future<Output = ()>>(
        body: impl FnOnce(Sender<String>) -> F + Send + 'static,
    ) -> Self {
        let (tick, ticks) = channel();
        let (say, said) = channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let beat = tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(1));
                    while tick.send(()).is_ok() {
                        every.tick().await;
                    }
                });
                body(say).await;
                beat.abort();
            });
        });
        OneThread {
            ticks,
            said,
            thread,
        }
    }

    /// Fails unless the runtime's thread runs after this call (its heartbeat ticks again).
    fn assert_runtime_runs(&self) {
        while self.ticks.try_recv().is_ok() {}
        self.ticks
            .recv_timeout(BOUND)
            .expect("the runtime's thread is blocked: file I/O runs on it");
    }

    /// The body's next report, within the bound.
    fn next(&self) -> String {
        self.said
            .recv_timeout(BOUND)
            .expect("the body reported nothing")
    }

    /// Asserts the body has reported nothing more yet.
    fn quiet(&self) {
        if let Ok(s) = self.said.try_recv() {
            panic!("reported {s:?} while the I/O was held");
        }
    }

    fn join(self) {
        self.thread.join().expect("the runtime's thread panicked");
    }
}

/// The scan reads metadata files on the blocking pool: while one read is held, the runtime runs
/// and cancelling the start token ends the start; released, the start completes.
#[test]
fn the_scan_reads_metadata_off_the_runtime() {
    let (work, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let metadata = timeline(work.path(), 1, 0x10).join("metadata");
    for cancelled in [true, false] {
        let held = Held::hold(&metadata);
        let cancel = CancellationToken::new();
        let (w, s, c) = (
            work.path().to_owned(),
            store.path().to_owned(),
            cancel.clone(),
        );
        let rt = OneThread::run(move |say| async move {
            let said = match start(&w, &s, c).await {
                Ok(started) => format!("{:?}", started.states.values().collect::<Vec<_>>()),
                Err(Error::Cancelled(_)) => "cancelled".into(),
                Err(e) => e.to_string(),
            };
            say.send(said).unwrap();
        });
        held.wait_reached();
        rt.assert_runtime_runs();
        rt.quiet();
        if cancelled {
            cancel.cancel();
            assert_eq!(rt.next(), "cancelled");
            drop(held);
        } else {
            drop(held);
            assert_eq!(
                rt.next(),
                format!("{:?}", [TimelineSyncState::Ready(Lsn(0x10))])
            );
        }
        rt.join();
    }
}

/// The loop's handle, started over `work` and the local store `store`.
async fn handle(work: &Path, store: &Path) -> SyncHandle {
    let started = start(work, store, CancellationToken::new()).await;
    started.unwrap().handle.unwrap()
}

/// In the body: once the test sends timeline `n`'s metadata file through `went`, uploads its
/// layer files, waits until they are durable and says so.
async fn upload_another(handle: &SyncHandle, n: u8, went: Receiving, say: &Sender<String>) {
    let md = went.await.unwrap();
    let names = vec!["layer".into(), "sub/layer".into()];
    let lsn = handle.schedule_upload(T, tl(n), names, &md).unwrap();
    let none = CancellationToken::new();
    handle.wait_uploaded(T, tl(n), lsn, &none).await.unwrap();
    say.send(format!("{n} uploaded")).unwrap();
}

type Receiving = tokio::sync::oneshot::Receiver<Vec<u8>>;

/// In the test: once `held` is reached, the runtime must run and timeline `n`'s upload (written
/// now, its metadata sent through `go`) complete, with nothing else reported; then releases it.
fn while_held(rt: &OneThread, held: Held, work: &Path, n: u8, go: Sending) {
    held.wait_reached();
    rt.assert_runtime_runs();
    let md = std::fs::read(timeline(work, n, 0x10 * n as u64).join("metadata")).unwrap();
    go.send(md).unwrap();
    assert_eq!(rt.next(), format!("{n} uploaded"));
    rt.quiet();
    drop(held);
}

type Sending = tokio::sync::oneshot::Sender<Vec<u8>>;

/// An upload lists and reads its files on the blocking pool: while timeline 1's upload is held,
/// the runtime runs and timeline 2's upload, scheduled then, completes.
#[test]
fn an_upload_does_its_file_io_off_the_runtime() {
    let (work, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let held = Held::hold(&timeline(work.path(), 1, 0x10));
    let (go, went) = tokio::sync::oneshot::channel();
    let (w, s) = (work.path().to_owned(), store.path().to_owned());
    let rt = OneThread::run(move |say| async move {
        let handle = handle(&w, &s).await;
        upload_another(&handle, 2, went, &say).await;
        let none = CancellationToken::new();
        handle
            .wait_uploaded(T, tl(1), Lsn(0x10), &none)
            .await
            .unwrap();
        say.send("1 uploaded".into()).unwrap();
        handle.shutdown().await;
    });
    while_held(&rt, held, work.path(), 2, go);
    assert_eq!(rt.next(), "1 uploaded");
    rt.join();
}

/// A download writes its files on the blocking pool: while it is held, the runtime runs and
/// another timeline's upload completes; released, the files arrive.
#[test]
fn a_download_does_its_file_io_off_the_runtime() {
    let (first, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = timeline(first.path(), 3, 0x30);
    let (w, s) = (first.path().to_owned(), store.path().to_owned());
    let rt = OneThread::run(move |say| async move {
        let handle = handle(&w, &s).await;
        handle.wait_idle().await.unwrap();
        handle.shutdown().await;
        say.send("stored".into()).unwrap();
    });
    assert_eq!(rt.next(), "stored");
    rt.join();

    let work = tempfile::tempdir().unwrap();
    let target = timeline_dir(work.path(), &T, &tl(3));
    let held = Held::hold(&target);
    let (go, went) = tokio::sync::oneshot::channel();
    let (w, s) = (work.path().to_owned(), store.path().to_owned());
    let rt = OneThread::run(move |say| async move {
        let handle = handle(&w, &s).await;
        handle.schedule_timeline_download(T, tl(3)).unwrap();
        upload_another(&handle, 4, went, &say).await;
        handle.wait_idle().await.unwrap();
        say.send("idle".into()).unwrap();
        handle.shutdown().await;
    });
    while_held(&rt, held, work.path(), 4, go);
    assert_eq!(rt.next(), "idle");
    rt.join();
    for name in ["layer", "sub/layer", "metadata"] {
        let (got, want) = (target.join(name), source.join(name));
        assert_eq!(
            std::fs::read(got).unwrap(),
            std::fs::read(want).unwrap(),
            "{name}"
        );
    }
}
