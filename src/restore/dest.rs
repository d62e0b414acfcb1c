//! The destination of a restore: the state's names checked before anything is created, the
//! non-empty rule, clearing what `overwrite` replaces (the old metadata first, then every entry
//! the state does not have), a temporary file for every file to write, and making them durable
//! under their names together.
//!
//! Owns the layout of the destination tree. Must not read the store; reaches the tree only
//! through [`DirHandle`]s.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::manifest::{FileEntry, TimelineState, validate_name};
use crate::format::metadata::METADATA_FILE_NAME;
use crate::id::FileHash;
use crate::progress::DynProgress;
use crate::restore::RestoreReport;
use crate::restore::dirfd::{Created, DirHandle};
use crate::restore::stream_hash::StreamHash;

/// fsyncs in flight at once when files are made durable (the device queues them together).
const SYNC_WORKERS: usize = 8;

/// A file being restored: where it goes and the temporary file it is written to.
pub(crate) struct Target {
    pub(crate) entry: FileEntry,
    /// The directory it goes into.
    pub(crate) dir: Arc<DirHandle>,
    /// Its final name in `dir`.
    pub(crate) name: String,
    /// The temporary file's name in `dir`, and its identity.
    pub(crate) tmp: String,
    pub(crate) created: Created,
    /// Distinct chunk placements not yet written.
    pub(crate) remaining: AtomicUsize,
    /// The file's hash, computed as it is written.
    pub(crate) stream: StreamHash,
    /// The temporary file, open while it is being written.
    pub(crate) handle: Handle,
}

/// Temporary files kept open while written, over every restore in the process; beyond it a
/// file is opened for each write instead.
const MAX_OPEN: usize = 256;
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A target's temporary file, opened on its first write and kept open (within [`MAX_OPEN`])
/// until it is complete.
#[derive(Default)]
pub(crate) struct Handle(Mutex<Option<File>>);

impl Handle {
    /// Writes `data` at `offset` of `t`'s temporary file.
    pub(crate) fn write_at(&self, t: &Target, data: &[u8], offset: u64) -> Result<()> {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let opened;
        let file = match &*h {
            Some(f) => f,
            None => {
                let f = t.dir.reopen(&t.tmp, t.created)?;
                if OPEN.fetch_add(1, Ordering::AcqRel) < MAX_OPEN {
                    &*h.insert(f)
                } else {
                    OPEN.fetch_sub(1, Ordering::AcqRel);
                    opened = f;
                    &opened
                }
            }
        };
        file.write_all_at(data, offset)
            .map_err(|e| Error::io("write", t.dir.path().join(&t.tmp), e))
    }

    /// Closes the file if it is open.
    pub(crate) fn close(&self) {
        if self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
        {
            OPEN.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

/// Checks every name of `state` and returns the directories they need (relative, `/`-joined).
/// A name that is also a directory of another name (`x` and `x/y`) is refused.
pub(crate) fn check_names(state: &TimelineState) -> Result<BTreeSet<String>> {
    let mut dirs = BTreeSet::new();
    for name in state.files.keys() {
        validate_name(name).map_err(|e| {
            Error::InvalidInput(format!("file name {name:?} in the checkpoint: {e}"))
        })?;
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            dirs.insert(name[..at + i].to_string());
            at += i + 1;
        }
    }
    if let Some(clash) = dirs.iter().find(|d| state.files.contains_key(*d)) {
        return Err(Error::InvalidInput(format!(
            "{clash:?} is both a file and a directory in the checkpoint"
        )));
    }
    Ok(dirs)
}

/// Refuses a non-empty destination unless `overwrite`. With it, removes the old metadata first
/// (durably), so that an interrupted restore never leaves it beside other files, then every
/// entry the state does not have. Returns whether the destination held anything (else no file
/// can be in place already).
pub(crate) fn clear(
    root: &DirHandle,
    state: &TimelineState,
    dirs: &BTreeSet<String>,
    overwrite: bool,
) -> Result<bool> {
    let entries = root.entries()?;
    let Some((first, _)) = entries.first() else {
        return Ok(false);
    };
    if !overwrite {
        return Err(Error::AlreadyExists(format!(
            "restore destination {} is not empty: {:?}",
            root.path().display(),
            first
        )));
    }
    root.remove(METADATA_FILE_NAME, false)?;
    root.sync()?;
    remove_extras(root, "", state, dirs)?;
    Ok(true)
}

/// Removes from `dir` (at `rel` in the tree) everything that is neither a file nor a directory
/// of the state, and syncs it when it removed anything.
fn remove_extras(
    dir: &DirHandle,
    rel: &str,
    state: &TimelineState,
    dirs: &BTreeSet<String>,
) -> Result<()> {
    let mut removed = false;
    for (name, is_dir) in dir.entries()? {
        let path = name.to_str().map(|n| match rel {
            "" => n.to_string(),
            _ => format!("{rel}/{n}"),
        });
        match path {
            Some(p) if is_dir && dirs.contains(&p) => {
                remove_extras(&dir.child(&name, false)?, &p, state, dirs)?;
            }
            // A file of the state stays: reused if its content is right, replaced otherwise.
            Some(p) if !is_dir && state.files.contains_key(&p) => {}
            _ => {
                remove_tree(dir, &name, is_dir)?;
                removed = true;
            }
        }
    }
    if removed { dir.sync() } else { Ok(()) }
}

/// Removes `name` from `dir`, with everything under it when it is a directory.
fn remove_tree(dir: &DirHandle, name: &OsStr, is_dir: bool) -> Result<()> {
    if is_dir {
        let child = dir.child(name, false)?;
        for (n, d) in child.entries()? {
            remove_tree(&child, &n, d)?;
        }
    }
    dir.remove(name, is_dir)
}

/// Directory handles by relative path, each opened from its parent (created when missing).
pub(crate) struct Dirs {
    open: HashMap<String, Arc<DirHandle>>,
}

impl Dirs {
    pub(crate) fn new(root: Arc<DirHandle>) -> Dirs {
        Dirs {
            open: HashMap::from([(String::new(), root)]),
        }
    }

    /// The directory `rel` (`""` is the root), opening and creating its components in order.
    fn get(&mut self, rel: &str) -> Result<Arc<DirHandle>> {
        if let Some(d) = self.open.get(rel) {
            return Ok(d.clone());
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = Arc::new(self.get(parent)?.child(name, true)?);
        self.open.insert(rel.to_string(), dir.clone());
        Ok(dir)
    }
}

/// A target for every file not already in place (looked for only when the destination was not
/// empty: `reuse`); counts the others as reused.
pub(crate) fn prepare_targets(
    dirs: &mut Dirs,
    state: &TimelineState,
    reuse: bool,
    report: &mut RestoreReport,
    progress: &DynProgress,
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for entry in state.files.values() {
        match prepare_target(dirs, entry, reuse) {
            Ok(Some(t)) => targets.push(t),
            Ok(None) => {
                report.files_reused += 1;
                progress.advance(entry.size);
            }
            Err(e) => {
                discard(&targets);
                return Err(e);
            }
        }
    }
    Ok(targets)
}

/// The temporary file for `entry`, or `None` when the file is already in place.
fn prepare_target(dirs: &mut Dirs, entry: &FileEntry, reuse: bool) -> Result<Option<Target>> {
    let (parent, name) = entry.name.rsplit_once('/').unwrap_or(("", &entry.name));
    let dir = dirs.get(parent)?;
    if reuse && already_present(&dir, name, entry) {
        return Ok(None);
    }
    let (tmp, file, created) = dir.create_temp()?;
    let sized = file.set_len(entry.size);
    let target = Target {
        entry: entry.clone(),
        dir,
        name: name.to_string(),
        tmp,
        created,
        remaining: AtomicUsize::new(0),
        stream: StreamHash::new(),
        handle: Handle::default(),
    };
    if let Err(e) = sized {
        discard(std::slice::from_ref(&target));
        return Err(Error::io("size", target.dir.path().join(&target.tmp), e));
    }
    Ok(Some(target))
}

fn already_present(dir: &DirHandle, name: &str, entry: &FileEntry) -> bool {
    let Some(file) = dir.open_regular(name) else {
        return false;
    };
    file.metadata().is_ok_and(|m| m.len() == entry.size)
        && hash_reader(file).is_ok_and(|h| h == entry.hash)
}

/// The blake3 of everything `r` yields.
pub(crate) fn hash_reader(r: impl Read) -> std::io::Result<FileHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::io::BufReader::with_capacity(1 << 20, r))?;
    Ok(FileHash(*hasher.finalize().as_bytes()))
}

/// Removes the temporary files of an abandoned restore (completed files were renamed already).
pub(crate) fn discard(targets: &[Target]) {
    for t in targets {
        let _ = t.dir.remove(&t.tmp, false);
    }
}

/// Makes every checked temporary file durable and gives it its name: all are made durable
/// together (one `syncfs` per filesystem when there are many, else fsynced in parallel), then
/// renamed, then each directory is synced once. The metadata file, written after this returns, is
/// the only thing that says the timeline is complete.
pub(crate) fn commit(targets: &[Target]) -> Result<()> {
    if targets.len() >= SYNCFS_FROM && syncfs_reports_errors() {
        sync_filesystems(targets)?;
    } else {
        fsync_all(targets)?;
    }
    let mut synced = HashSet::new();
    for t in targets {
        t.dir.rename(&t.tmp, &t.name)?;
    }
    for t in targets {
        if synced.insert(Arc::as_ptr(&t.dir)) {
            t.dir.sync()?;
        }
    }
    Ok(())
}

/// From this many files on, one `syncfs` per filesystem replaces a fsync per file: one journal
/// commit and one device flush instead of hundreds (the filesystem's other dirty data is
/// written too, which a later `sync` would have had to write anyway).
const SYNCFS_FROM: usize = 32;

/// Whether `syncfs` reports writeback errors (Linux 5.8 and later); older kernels get a fsync
/// per file, which always does.
fn syncfs_reports_errors() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 8),
        _ => false,
    }
}

/// One `syncfs` for each filesystem the targets' temporary files are on, through a directory
/// handle opened before they were written (so a writeback error since is reported).
fn sync_filesystems(targets: &[Target]) -> Result<()> {
    let mut devices = HashSet::new();
    for t in targets {
        if devices.insert(t.created.dev) {
            t.dir.sync_filesystem()?;
        }
    }
    Ok(())
}

/// fsyncs every temporary file, [`SYNC_WORKERS`] at a time.
fn fsync_all(targets: &[Target]) -> Result<()> {
    let next = AtomicUsize::new(0);
    let workers = SYNC_WORKERS.min(targets.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while let Some(t) = targets.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let file = t.dir.reopen(&t.tmp, t.created)?;
                        let path = || t.dir.path().join(&t.tmp);
                        file.sync_all().map_err(|e| Error::io("fsync", path(), e))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(worker_panicked())))
    })
}

fn worker_panicked() -> Error {
    Error::Integrity("a restore fsync worker panicked".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::local::LocalBackend;
    use crate::format::config::StoreConfig;
    use crate::format::metadata::TimelineMetadata;
    use crate::id::{Lsn, TenantId, TimelineId};
    use crate::progress;
    use crate::store::Store;
    use crate::write::{CheckpointMode, CheckpointRequest, SourceFile, Writer};

    /// Many files take the `syncfs` path (on this kernel) and land whole under their names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_files_are_made_durable_together_and_renamed() {
        assert!(super::syncfs_reports_errors(), "this kernel predates 5.8?");
        let (store_dir, work, out) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let backend = Arc::new(LocalBackend::new(store_dir.path()).unwrap());
        let store = Store::open_or_create(backend, StoreConfig::default_config())
            .await
            .unwrap();
        let n = super::SYNCFS_FROM + 8;
        let files = (0..n)
            .map(|i| {
                let name = format!("d{}/f{i}", i % 3);
                let path = work.path().join(format!("f{i}"));
                std::fs::write(&path, format!("file {i} ").repeat(i + 1)).unwrap();
                SourceFile { name, path }
            })
            .collect();
        let (tenant, timeline) = (TenantId([1; 16]), TimelineId([2; 16]));
        let req = CheckpointRequest {
            tenant,
            timeline,
            metadata: TimelineMetadata::at(Lsn(0x10)),
            files,
            mode: CheckpointMode::Full,
        };
        let writer = Writer::new(store.clone()).await.unwrap();
        writer.checkpoint(req, progress::none()).await.unwrap();
        let r = store
            .restore_timeline(&tenant, &timeline, None, out.path(), progress::none())
            .await
            .unwrap();
        assert_eq!(r.files, n);
        for i in 0..n {
            let got = std::fs::read(out.path().join(format!("d{}/f{i}", i % 3))).unwrap();
            assert_eq!(got, format!("file {i} ").repeat(i + 1).into_bytes(), "f{i}");
        }
        let leftovers = walkdir::WalkDir::new(out.path()).into_iter().flatten();
        let temps = leftovers
            .filter(|e| e.file_name().to_string_lossy().starts_with(".layercas"))
            .count();
        assert_eq!(temps, 0, "temporary files left");
    }
}
