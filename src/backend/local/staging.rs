//! The local store's staging directory (`<root>/.staging/`): where every write is prepared before
//! it is moved into place, and how the leftovers of killed writers are counted and removed.
//!
//! The rule (format-spec section 14.3), which rests on locks, never on a clock:
//! - A writer creates its staging file with a fresh name, takes an exclusive advisory lock
//!   (`flock`) on it, and then checks the file is still linked; if a sweeper removed it before
//!   the lock was taken, the writer starts over under a new name. It holds the lock until the
//!   file was renamed or linked into place and its staging name removed.
//! - Anyone may remove a staging file on which it obtains the exclusive lock without waiting; it
//!   removes the file while holding that lock. A live writer's file is locked, so it is never
//!   removed; the kernel releases a killed writer's lock, so its leftovers can be removed at once.
//!
//! Owns the staging directory only. Must not touch keys or their files.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

/// Directory for in-flight writes, inside the root.
pub const STAGING_DIR: &str = ".staging";

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Attempts at a staging file before giving up (each retry means a sweeper removed the last one
/// between its creation and its lock).
const CREATE_ATTEMPTS: usize = 8;

/// A fresh name in the staging directory: process id, clock and a process-wide counter (unique
/// by the counter within a process, by the pid across live processes).
fn fresh_name(dir: &Path) -> PathBuf {
    let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    dir.join(format!("{}-{nanos:x}-{n}", std::process::id()))
}

/// Creates a staging file under `root`, locked, still linked. The returned file is open for
/// writing; the lock lasts until it (and every clone of it) is closed.
pub(super) fn create(root: &Path) -> io::Result<(PathBuf, File)> {
    let dir = root.join(STAGING_DIR);
    for _ in 0..CREATE_ATTEMPTS {
        let path = fresh_name(&dir);
        let open = || OpenOptions::new().write(true).create_new(true).open(&path);
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                open()?
            }
            other => other?,
        };
        if let Some(file) = lock_if_linked(file)? {
            return Ok((path, file));
        }
        // A sweeper locked and removed it before we locked it: start over.
    }
    Err(io::Error::other(format!(
        "{CREATE_ATTEMPTS} staging files in {} were removed before they could be locked",
        dir.display()
    )))
}

/// Locks a just-created staging file; `None` when it was removed before the lock was taken.
fn lock_if_linked(file: File) -> io::Result<Option<File>> {
    file.lock()?;
    Ok((file.metadata()?.nlink() > 0).then_some(file))
}

/// What the staging directory holds (and what a sweep removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StagingReport {
    /// Files of live writers (locked): left alone.
    pub live_files: u64,
    /// Leftovers of writers that are gone (unlocked) still present.
    pub stale_files: u64,
    /// Their bytes.
    pub stale_bytes: u64,
    /// Leftovers this sweep removed.
    pub removed_files: u64,
    /// Their bytes.
    pub removed_bytes: u64,
}

/// Counts the staging files of the store at `root` without changing anything.
pub fn inspect(root: &Path) -> io::Result<StagingReport> {
    scan(root, false)
}

/// Removes every staging file no live writer holds (format-spec section 14.3). Files it may not
/// remove (a read-only store) are counted as stale.
pub fn sweep(root: &Path) -> io::Result<StagingReport> {
    scan(root, true)
}

fn scan(root: &Path, remove: bool) -> io::Result<StagingReport> {
    let mut report = StagingReport::default();
    let entries = match std::fs::read_dir(root.join(STAGING_DIR)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        other => other?,
    };
    for entry in entries {
        let path = entry?.path();
        let file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                report.live_files += 1;
                continue;
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let len = file.metadata()?.len();
        // Removed while the lock is held: a writer that created it and has not locked it yet
        // finds it unlinked once it gets the lock, and starts over.
        match remove.then(|| std::fs::remove_file(&path)) {
            Some(Ok(())) => {
                report.removed_files += 1;
                report.removed_bytes += len;
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            _ => {
                report.stale_files += 1;
                report.stale_bytes += len;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_unlocked_leftovers_and_keeps_live_writers_files() {
        let dir = tempfile::tempdir().unwrap();
        let (live, _lock) = create(dir.path()).unwrap();
        let leftover = dir.path().join(STAGING_DIR).join("1-2-3");
        std::fs::write(&leftover, b"half a pack").unwrap();
        let counted = inspect(dir.path()).unwrap();
        assert_eq!((counted.live_files, counted.stale_files), (1, 1));
        assert_eq!(counted.stale_bytes, 11);
        assert!(leftover.exists(), "inspect changes nothing");
        let swept = sweep(dir.path()).unwrap();
        assert_eq!((swept.live_files, swept.removed_files), (1, 1));
        assert!(!leftover.exists() && live.exists());
        drop(_lock);
        assert_eq!(sweep(dir.path()).unwrap().removed_files, 1);
        assert!(
            !live.exists(),
            "once its writer is gone, its file is a leftover"
        );
    }

    #[test]
    fn a_writer_whose_file_was_swept_before_its_lock_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(STAGING_DIR);
        std::fs::create_dir_all(&staging).unwrap();
        // The interleaving a sweeper can force: the writer created its file, the sweeper locks
        // and removes it, and only then does the writer take its lock.
        let path = staging.join("9-9-9");
        let writer = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let sweeper = File::open(&path).unwrap();
        sweeper.try_lock().unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(sweeper);
        assert!(lock_if_linked(writer).unwrap().is_none());
        // Without the sweeper it keeps its file, and a sweep cannot take it.
        let kept = File::create(staging.join("9-9-10")).unwrap();
        let kept = lock_if_linked(kept).unwrap().expect("still linked");
        assert_eq!(sweep(dir.path()).unwrap().live_files, 1);
        drop(kept);
    }
}
