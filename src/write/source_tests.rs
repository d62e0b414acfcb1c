//! A file rewritten at any point while it is checkpointed either fails the checkpoint, with an
//! error naming it, or yields a checkpoint that restores and verifies. The hook in `source`
//! changes the file at exact points of its one read: after the open, after the first batch, after
//! the end.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hook;
use crate::backend::local::LocalBackend;
use crate::format::config::StoreConfig;
use crate::format::metadata::TimelineMetadata;
use crate::id::{Lsn, TenantId, TimelineId};
use crate::progress;
use crate::store::Store;
use crate::verify::{VerifyOptions, verify};
use crate::write::{CheckpointMode, CheckpointOptions, CheckpointRequest, SourceFile, Writer};

const TENANT: TenantId = TenantId([0xaa; 16]);
const TIMELINE: TimelineId = TimelineId([0xbb; 16]);
/// Three batches: two full ones and a short last one.
const BIG: usize = 18 << 20;
const SMALL: usize = 300 << 10;

/// `len` seeded random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut out);
    out
}

/// Ways a file changes under the reader; each returns the file's new content.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Same size, new bytes, written in place.
    Rewrite,
    /// Cut to half its size.
    Truncate,
    /// A mebibyte appended.
    Append,
    /// A new file renamed over the name (the open handle keeps the old one).
    Replace,
}

impl Change {
    fn apply(self, path: &Path, len: usize, seed: u64) -> Vec<u8> {
        let new = noise(len, seed);
        match self {
            Change::Rewrite => {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all_at(&new, 0).unwrap();
                new
            }
            Change::Truncate => {
                let mut old = std::fs::read(path).unwrap();
                old.truncate(len / 2);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len((len / 2) as u64)
                    .unwrap();
                old
            }
            Change::Append => {
                let mut old = std::fs::read(path).unwrap();
                let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                let extra = noise(1 << 20, seed);
                f.write_all_at(&extra, len as u64).unwrap();
                old.extend_from_slice(&extra);
                old
            }
            Change::Replace => {
                let tmp = path.with_extension("new");
                std::fs::write(&tmp, &new).unwrap();
                std::fs::rename(&tmp, path).unwrap();
                new
            }
        }
    }

    /// Whether the change must be caught (it changes what the open handle reads, in size).
    fn changes_size(self) -> bool {
        matches!(self, Change::Truncate | Change::Append)
    }
}

/// Where the hook fires: the n-th hook call of the file's read.
#[derive(Clone, Copy, Debug)]
enum Point {
    AfterOpen,
    AfterFirstBatch,
    AtEnd,
}

struct Case {
    change: Change,
    point: Point,
    len: usize,
}

async fn run_case(store: &Store, work: &Path, lsn: u64, case: &Case) {
    let name = format!("f{lsn}");
    let path: PathBuf = work.join(&name);
    let original = noise(case.len, lsn);
    std::fs::write(&path, &original).unwrap();
    let fire_at = match (case.point, case.len > SMALL) {
        (Point::AfterOpen, _) => 0,
        (Point::AfterFirstBatch, true) => 1,
        (Point::AtEnd, true) => 3,
        (_, false) => 1, // a small file has two points: open and end
    };
    let changed: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let (c, p, change, len) = (changed.clone(), path.clone(), case.change, case.len);
    let mut calls = 0;
    hook::set(&path, move |_read| {
        if calls == fire_at {
            *c.lock().unwrap() = Some(change.apply(&p, len, lsn + 1000));
        }
        calls += 1;
    });
    let writer = Writer::new(store.clone()).await.unwrap();
    let req = CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: TimelineMetadata::at(Lsn(lsn)),
        files: vec![SourceFile {
            name: name.clone(),
            path: path.clone(),
        }],
        mode: CheckpointMode::Full,
    };
    let result = writer.checkpoint(req, progress::none()).await;
    hook::clear(&path);
    let what = format!(
        "{:?} at {:?} of a {} byte file",
        case.change, case.point, case.len
    );
    let new = changed.lock().unwrap().clone().expect("the hook fired");
    match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&*path.to_string_lossy()), "{what}: {msg}");
            assert!(msg.contains("changed while"), "{what}: {msg}");
        }
        Ok(_) => {
            assert!(!case.change.changes_size(), "{what}: not caught");
            let (_r, out) = tempdir();
            let r = store
                .restore_timeline(&TENANT, &TIMELINE, Some(Lsn(lsn)), &out, progress::none())
                .await;
            r.unwrap_or_else(|e| panic!("{what}: the checkpoint does not restore: {e}"));
            let restored = std::fs::read(out.join(&name)).unwrap();
            assert!(
                restored == original || restored == new,
                "{what}: restored neither version"
            );
        }
    }
    std::fs::remove_file(&path).unwrap();
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

/// A store with the default configuration in `dir`.
async fn local_store(dir: &Path) -> Store {
    let backend = Arc::new(LocalBackend::new(dir).unwrap());
    Store::open_or_create(backend, StoreConfig::default_config())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_read_fails_or_restores() {
    let (_s, store_dir) = tempdir();
    let (_w, work) = tempdir();
    let store = local_store(&store_dir).await;
    let mut lsn = 0x10;
    for change in [
        Change::Rewrite,
        Change::Truncate,
        Change::Append,
        Change::Replace,
    ] {
        for point in [Point::AfterOpen, Point::AfterFirstBatch, Point::AtEnd] {
            for len in [SMALL, BIG] {
                run_case(&store, &work, lsn, &Case { change, point, len }).await;
                lsn += 0x10;
            }
        }
    }
    // Every checkpoint that was recorded reads back whole.
    let opts = VerifyOptions {
        read_data: true,
        ..VerifyOptions::default()
    };
    let report = verify(&store, opts, progress::none()).await.unwrap();
    assert_eq!(report.errors(), 0, "{:?}", report.problems);
}

/// A file rewritten between the first pass (which left its new chunks for their bases) and the
/// second (which reads them again to store them as deltas) fails the checkpoint, naming it;
/// nothing of the second version is recorded, and the store stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_between_the_passes_fails_the_checkpoint() {
    let (_s, store_dir) = tempdir();
    let (_w, work) = tempdir();
    let store = local_store(&store_dir).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    let one = noise(300 << 10, 7);
    let opts = CheckpointOptions::default();
    record(&writer, &work, 0x10, &[("rel__1", &one)], opts).await;
    let mut two = one.clone();
    two.iter_mut().step_by(40_000).for_each(|b| *b ^= 0xff);
    let path = work.join("rel__2");
    std::fs::write(&path, &two).unwrap();
    let (target, mut done) = (path.clone(), false);
    hook::set(&path, move |at| {
        if at == hook::SECOND_PASS && !done {
            let other: Vec<u8> = two.iter().map(|b| b ^ 0x55).collect();
            std::fs::write(&target, other).unwrap();
            done = true;
        }
    });
    let req = CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: TimelineMetadata::at(Lsn(0x20)),
        files: vec![SourceFile {
            name: "rel__2".into(),
            path: path.clone(),
        }],
        mode: CheckpointMode::Full,
    };
    let e = writer.checkpoint_with(req, opts, progress::none()).await;
    hook::clear(&path);
    let e = e.expect_err("the file changed between the passes");
    assert!(
        e.to_string().contains("changed while it was being read")
            && e.to_string().contains("rel__2"),
        "{e}"
    );
    let state = store
        .checkpoint_state(&TENANT, &TIMELINE, None)
        .await
        .unwrap();
    assert_eq!(
        state.lsn,
        Lsn(0x10),
        "the failed checkpoint recorded nothing"
    );
    let opts = VerifyOptions {
        read_data: true,
        ..VerifyOptions::default()
    };
    let report = verify(&store, opts, progress::none()).await.unwrap();
    assert_eq!(report.errors(), 0, "{:?}", report.problems);
}

/// Records `files` (name, content) of `work` at `lsn`, with `opts`.
async fn record(
    writer: &Writer,
    work: &Path,
    lsn: u64,
    files: &[(&str, &[u8])],
    opts: CheckpointOptions,
) -> crate::write::CheckpointReport {
    for (name, data) in files {
        std::fs::write(work.join(name), data).unwrap();
    }
    let req = CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: TimelineMetadata::at(Lsn(lsn)),
        files: files
            .iter()
            .map(|(name, _)| SourceFile {
                name: name.to_string(),
                path: work.join(name),
            })
            .collect(),
        mode: CheckpointMode::Full,
    };
    writer
        .checkpoint_with(req, opts, progress::none())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_names_carry_known_files_over_without_reading_them() {
    let (_s, store_dir) = tempdir();
    let (_w, work) = tempdir();
    let store = local_store(&store_dir).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    let (a, big, c, d) = (noise(SMALL, 1), noise(BIG, 2), noise(SMALL, 3), noise(7, 4));
    let all = CheckpointOptions::default();
    let first: &[(&str, &[u8])] = &[("a", &a), ("big", &big), ("c", &c)];
    record(&writer, &work, 0x10, first, all).await;
    // `a` and `big` keep their names and sizes but not their bytes (breaking the promise, so
    // that a read would show); `c` changes size, `d` is new, and nothing else is given.
    let (a2, big2) = (noise(SMALL, 5), noise(BIG, 6));
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for name in ["a", "big"] {
        let o = opened.clone();
        hook::set(&work.join(name), move |_| {
            o.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let trust = CheckpointOptions {
        immutable_names: true,
        ..Default::default()
    };
    let second: &[(&str, &[u8])] = &[("a", &a2), ("big", &big2), ("c", &c[1..]), ("d", &d)];
    let r = record(&writer, &work, 0x20, second, trust).await;
    let read = opened.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read, 0, "a file known by name and size was read");
    assert_eq!((r.files_unchanged, r.files_not_read), (2, 2));
    assert_eq!((r.files_added, r.files_removed), (2, 0));
    assert_eq!(r.bytes_added, (SMALL - 1 + 7) as u64);
    // Without the option the same request reads (and records) the changed bytes.
    let r = record(&writer, &work, 0x30, second, all).await;
    for name in ["a", "big"] {
        hook::clear(&work.join(name));
    }
    assert_eq!((r.files_added, r.files_not_read), (2, 0));
    let restored = |lsn: u64| {
        let store = store.clone();
        async move {
            let (dir, out) = tempdir();
            store
                .restore_timeline(&TENANT, &TIMELINE, Some(Lsn(lsn)), &out, progress::none())
                .await
                .unwrap();
            let read = |n: &str| std::fs::read(out.join(n)).ok();
            let got = [read("a"), read("big"), read("c"), read("d")];
            drop(dir);
            got
        }
    };
    let carried = restored(0x20).await;
    assert_eq!(carried[0].as_deref(), Some(&a[..]), "a carried over");
    assert_eq!(carried[1].as_deref(), Some(&big[..]), "big carried over");
    assert_eq!(carried[2].as_deref(), Some(&c[1..]));
    assert_eq!(carried[3].as_deref(), Some(&d[..]));
    let reread = restored(0x30).await;
    assert_eq!(reread[0].as_deref(), Some(&a2[..]));
    assert_eq!(reread[1].as_deref(), Some(&big2[..]));
    // A name the request leaves out is still removed.
    let r = record(&writer, &work, 0x40, &[("d", &d)], trust).await;
    assert_eq!((r.files_removed, r.files_not_read), (3, 1));
    assert_eq!(restored(0x40).await[..3], [None, None, None]);
}

/// A file swapped for a symbolic link or a fifo after the caller listed it fails the checkpoint
/// with an error naming it, without following the link or blocking on the fifo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_or_fifo_among_the_files_fails_without_being_read() {
    let (_s, store_dir) = tempdir();
    let (_w, work) = tempdir();
    let store = local_store(&store_dir).await;
    let writer = Writer::new(store).await.unwrap();
    std::fs::write(work.join("target"), b"elsewhere").unwrap();
    std::os::unix::fs::symlink(work.join("target"), work.join("link")).unwrap();
    let fifo = std::ffi::CString::new(work.join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    for (name, why) in [("link", "symbolic link"), ("pipe", "not a regular file")] {
        let req = CheckpointRequest {
            tenant: TENANT,
            timeline: TIMELINE,
            metadata: TimelineMetadata::at(Lsn(0x100)),
            files: vec![SourceFile {
                name: name.to_string(),
                path: work.join(name),
            }],
            mode: CheckpointMode::Full,
        };
        let checkpoint = writer.checkpoint(req, progress::none());
        let e = tokio::time::timeout(std::time::Duration::from_secs(60), checkpoint)
            .await
            .unwrap_or_else(|_| panic!("the checkpoint of {name} hung"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why) && e.contains(name), "{name}: {e}");
    }
}
