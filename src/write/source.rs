//! Reading the request's files: unchanged files are recognised by hash, known content is reused
//! whole, and the rest is cut into chunks (in memory for small files, in batches read on a
//! separate thread for large ones) and handed to the packer.
//!
//! Each file is read exactly once, through one open handle: its whole-file hash and its chunks
//! come from the same bytes, so a manifest never records a hash its chunks do not reproduce. A
//! file whose size, inode, mtime or ctime changes between its open and its end, or that reads
//! shorter or longer than its size at open, fails the checkpoint with an error naming it.
//!
//! Owns file reading, hashing and batching, and the parallel run over a checkpoint's files. Must
//! not build packs (`packer`) or touch manifests and index objects (`commit`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, FileEntry, TimelineState};
use crate::id::FileHash;
use crate::write::bases::Prior;
use crate::write::deltas;
use crate::write::packer::IngestCtx;
use crate::write::request::{CheckpointReport, SourceFile};
use crate::write::stream::{self, BufferPool, Pooled};

/// Files up to this size are read whole (into one of the pool's blocks) and chunked in memory.
const SMALL_FILE: u64 = 4 << 20;
const _: () = assert!(SMALL_FILE < stream::BATCH_BYTES as u64);

/// One file of a checkpoint with its entry in the previous checkpoint and its previous version
/// (the same file, or the one its name continues: `bases`), if any.
pub(crate) type Job = (SourceFile, Option<FileEntry>, Option<Arc<Prior>>);

/// What happened to one file.
pub(crate) enum FileOutcome {
    /// The same content as in the previous checkpoint; `read` is false when it was carried over
    /// by name and size without reading it.
    Unchanged { read: bool },
    Added {
        entry: FileEntry,
        deduplicated: bool,
    },
}

impl FileOutcome {
    /// The entry of an added file.
    fn entry(&mut self) -> Option<&mut FileEntry> {
        match self {
            FileOutcome::Added { entry, .. } => Some(entry),
            FileOutcome::Unchanged { .. } => None,
        }
    }

    /// Counts the outcome into `report`; returns the entry of an added file.
    pub(crate) fn tally(self, report: &mut CheckpointReport) -> Option<FileEntry> {
        match self {
            FileOutcome::Unchanged { read } => {
                report.files_unchanged += 1;
                report.files_not_read += !read as usize;
                None
            }
            FileOutcome::Added {
                entry,
                deduplicated,
            } => {
                report.files_added += 1;
                report.files_deduplicated += deduplicated as usize;
                report.chunked_bytes += if deduplicated { 0 } else { entry.size };
                report.bytes_added += entry.size;
                Some(entry)
            }
        }
    }
}

/// Records every job on the blocking pool, files in parallel; then stores the chunks left for
/// their bases (`deltas`) and flushes the last pack. With `immutable_names`, a file whose
/// previous entry has its size is not read (see [`crate::write::CheckpointOptions`]).
pub(crate) async fn ingest_all(
    ctx: Arc<IngestCtx>,
    jobs: Vec<Job>,
    known: HashMap<FileHash, Vec<ChunkRef>>,
    immutable_names: bool,
) -> Result<Vec<FileOutcome>> {
    let total: u64 = jobs
        .iter()
        .filter_map(|(f, _, _)| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    ctx.progress.set_total(total);
    let paths: Arc<Vec<PathBuf>> = Arc::new(jobs.iter().map(|(f, _, _)| f.path.clone()).collect());
    let c = ctx.clone();
    let first = tokio::task::spawn_blocking(move || {
        // Three blocks per worker: one being read, one waiting, one being cut.
        let pool = BufferPool::new(c.chunker.max_size(), 3 * rayon::current_num_threads());
        jobs.par_iter()
            .map(|(src, old, prior)| match old {
                Some(old) if immutable_names && same_size(&src.path, old) => {
                    c.progress.advance(old.size);
                    Ok(FileOutcome::Unchanged { read: false })
                }
                _ => ingest_file(&c, &pool, (src, prior.as_deref()), old.as_ref(), &known),
            })
            .collect::<Result<Vec<FileOutcome>>>()
    });
    let worker_failed = |e| Error::Internal(format!("ingest worker failed: {e}"));
    let mut outcomes = first.await.map_err(worker_failed)??;
    let mut entries: Vec<Option<&mut FileEntry>> =
        outcomes.iter_mut().map(FileOutcome::entry).collect();
    deltas::store_pending(&ctx, paths, &mut entries).await?;
    tokio::task::spawn_blocking(move || ctx.flush())
        .await
        .map_err(worker_failed)??;
    Ok(outcomes)
}

/// Whole files of the previous checkpoint by content hash, to reuse their chunks.
pub(crate) fn known_files(prev: Option<&TimelineState>) -> HashMap<FileHash, Vec<ChunkRef>> {
    prev.map(|p| {
        p.files
            .values()
            .map(|f| (f.hash, f.chunks.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// Whether `path` is a regular file of the size `old` records (a file that cannot be stat'ed is
/// read, and its error reported, like any other).
fn same_size(path: &Path, old: &FileEntry) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == old.size)
}

/// Records one file: unchanged, reused whole, or chunked.
pub(crate) fn ingest_file(
    ctx: &IngestCtx,
    pool: &BufferPool,
    (src, prior): (&SourceFile, Option<&Prior>),
    old: Option<&FileEntry>,
    known: &HashMap<FileHash, Vec<ChunkRef>>,
) -> Result<FileOutcome> {
    let snap = read_once(ctx, pool, &src.path, prior)?;
    let size = snap.size;
    let entry = |chunks| FileEntry {
        name: src.name.clone(),
        size,
        hash: snap.hash,
        chunks,
    };
    let unchanged = old.is_some_and(|o| o.hash == snap.hash && o.size == size);
    let reused = known.get(&snap.hash);
    let chunks = match (snap.content, reused) {
        // A large file's chunks were stored (and its progress counted) while it was read.
        (Content::Chunked(_), _) if unchanged => return Ok(FileOutcome::Unchanged { read: true }),
        (Content::Chunked(chunks), _) => chunks,
        (Content::Whole(_), _) if unchanged => {
            ctx.progress.advance(size);
            return Ok(FileOutcome::Unchanged { read: true });
        }
        (Content::Whole(_), Some(chunks)) => {
            ctx.progress.advance(size);
            chunks.clone()
        }
        (Content::Whole(data), None) => {
            let chunks = ctx.chunker.chunk_slice(&data).collect::<Vec<_>>();
            ctx.store_batch(&chunks, prior.map(|p| (p, 0)))?
        }
    };
    Ok(FileOutcome::Added {
        entry: entry(chunks),
        deduplicated: reused.is_some(),
    })
}

/// A file as read once: its hash and size, and its bytes (small) or its stored chunks (large).
struct Snapshot<'p> {
    hash: FileHash,
    size: u64,
    content: Content<'p>,
}

enum Content<'p> {
    Whole(Pooled<'p>),
    Chunked(Vec<ChunkRef>),
}

/// What tells one version of a file from another: when none of it changes between the open and
/// the end of the read, the bytes read are the file's content at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Opens `path` for reading if it is a regular file, neither following a symbolic link (one
/// swapped in after the caller listed the directory included) nor blocking on a fifo.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => invalid("a symbolic link; layercas reads only regular files"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(invalid(
            "not a regular file (fifo, socket or device); layercas reads only regular files",
        ));
    }
    Ok(file)
}

/// Reads `path` once: hashes it, and chunks and stores it when it is large.
fn read_once<'p>(
    ctx: &IngestCtx,
    pool: &'p BufferPool,
    path: &Path,
    prior: Option<&Prior>,
) -> Result<Snapshot<'p>> {
    let file = open_regular(path).map_err(|e| Error::io("open", path, e))?;
    let before = Stamp::of(&file).map_err(|e| Error::io("stat", path, e))?;
    hook::call(path, 0);
    let stat = file.try_clone().map_err(|e| Error::io("open", path, e))?;
    let (hash, read, content) = if before.len <= SMALL_FILE {
        let mut data = pool.take();
        file.take(before.len + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("read", path, e))?;
        let hash = FileHash(*blake3::hash(&data).as_bytes());
        (hash, data.len() as u64, Content::Whole(data))
    } else {
        let (hash, read, chunks) =
            stream::chunk_large_file(ctx, pool, (path, prior), file, before.len)?;
        (hash, read, Content::Chunked(chunks))
    };
    hook::call(path, read);
    let after = Stamp::of(&stat).map_err(|e| Error::io("stat", path, e))?;
    if after != before || read != before.len {
        return Err(Error::io(
            "checkpoint",
            path,
            std::io::Error::other(format!(
                "the file changed while it was being read ({} bytes at open, {read} read, \
                 {} bytes at the end{}); record it again once it is stable",
                before.len,
                after.len,
                if after == before { "" } else { ", modified" }
            )),
        ));
    }
    Ok(Snapshot {
        hash,
        size: read,
        content,
    })
}

/// Test hooks: a callback run at fixed points of a file's read (after the open, after each
/// batch, after the end, and with [`hook::SECOND_PASS`] before each reread of `deltas`), so that
/// tests can change the file at exactly that point. Outside tests, calling one does nothing.
pub(crate) mod hook {
    use std::path::Path;
    #[cfg(test)]
    use std::{path::PathBuf, sync::Mutex};

    /// The point before a chunk is read again for its delta.
    pub(crate) const SECOND_PASS: u64 = u64::MAX;

    #[cfg(test)]
    type Hook = Box<dyn FnMut(u64) + Send>;
    #[cfg(test)]
    static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    /// Runs `f(bytes read so far)` at each hook point while `path` is read.
    #[cfg(test)]
    pub(crate) fn set(path: &Path, f: impl FnMut(u64) + Send + 'static) {
        HOOKS
            .lock()
            .unwrap()
            .push((path.to_path_buf(), Box::new(f)));
    }

    /// Removes the hooks of `path`.
    #[cfg(test)]
    pub(crate) fn clear(path: &Path) {
        HOOKS.lock().unwrap().retain(|(p, _)| p != path);
    }

    /// Runs the hooks of `path` at point `read`.
    pub(crate) fn call(path: &Path, read: u64) {
        #[cfg(test)]
        for (p, f) in HOOKS.lock().unwrap().iter_mut() {
            if p == path {
                f(read);
            }
        }
        #[cfg(not(test))]
        let _ = (path, read);
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
