//! Reading the request's files: unchanged files are recognised by hash, known content is reused
//! whole, and the rest is cut into chunks (in memory for small files, in batches read on a
//! separate thread for large ones) and handed to the packer.
//!
//! Owns file reading, hashing and batching, and the parallel run over a checkpoint's files. Must
//! not build packs (`packer`) or touch manifests and index objects (`commit`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::manifest::{ChunkRef, FileEntry};
use crate::id::FileHash;
use crate::write::packer::IngestCtx;
use crate::write::request::{CheckpointReport, SourceFile};

/// Files up to this size are read whole and chunked in memory.
const SMALL_FILE: u64 = 4 << 20;
/// Bytes of chunks hashed and compressed together in one parallel batch.
const BATCH_BYTES: usize = 8 << 20;

/// One file of a checkpoint with its entry in the previous checkpoint, if any.
pub(crate) type Job = (SourceFile, Option<FileEntry>);

/// What happened to one file.
pub(crate) enum FileOutcome {
    Unchanged,
    Added {
        entry: FileEntry,
        deduplicated: bool,
    },
}

impl FileOutcome {
    /// Counts the outcome into `report`; returns the entry of an added file.
    pub(crate) fn tally(self, report: &mut CheckpointReport) -> Option<FileEntry> {
        match self {
            FileOutcome::Unchanged => {
                report.files_unchanged += 1;
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

/// Records every job on the blocking pool, files in parallel, then flushes the last pack.
pub(crate) async fn ingest_all(
    ctx: Arc<IngestCtx>,
    jobs: Vec<Job>,
    known: HashMap<FileHash, Vec<ChunkRef>>,
) -> Result<Vec<FileOutcome>> {
    let total: u64 = jobs
        .iter()
        .filter_map(|(f, _)| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    ctx.progress.set_total(total);
    let work = tokio::task::spawn_blocking(move || {
        let results: Result<Vec<FileOutcome>> = jobs
            .par_iter()
            .map(|(src, old)| ingest_file(&ctx, src, old.as_ref(), &known))
            .collect();
        let flushed = ctx.flush();
        results.and_then(|r| flushed.map(|()| r))
    });
    work.await
        .map_err(|e| Error::InvalidInput(format!("ingest worker failed: {e}")))?
}

/// Records one file: unchanged, reused whole, or chunked.
pub(crate) fn ingest_file(
    ctx: &IngestCtx,
    src: &SourceFile,
    old: Option<&FileEntry>,
    known: &HashMap<FileHash, Vec<ChunkRef>>,
) -> Result<FileOutcome> {
    let io = |op, e| Error::io(op, &src.path, e);
    let size = std::fs::metadata(&src.path)
        .map_err(|e| io("stat", e))?
        .len();
    let (hash, small) = hash_file(&src.path, size).map_err(|e| io("read", e))?;
    if old.is_some_and(|o| o.hash == hash && o.size == size) {
        ctx.progress.advance(size);
        return Ok(FileOutcome::Unchanged);
    }
    let entry = |chunks| FileEntry {
        name: src.name.clone(),
        size,
        hash,
        chunks,
    };
    if let Some(chunks) = known.get(&hash) {
        ctx.progress.advance(size);
        return Ok(FileOutcome::Added {
            entry: entry(chunks.clone()),
            deduplicated: true,
        });
    }
    let chunks = match small {
        Some(data) => ctx.store_batch(&ctx.chunker.chunk_slice(&data).collect::<Vec<_>>())?,
        None => chunk_large_file(ctx, &src.path)?,
    };
    let stored: u64 = chunks.iter().map(|c| c.len as u64).sum();
    if stored != size {
        return Err(Error::InvalidInput(format!(
            "{} changed while it was being recorded",
            src.path.display()
        )));
    }
    Ok(FileOutcome::Added {
        entry: entry(chunks),
        deduplicated: false,
    })
}

/// The file's blake3, plus its bytes when it is small enough to keep.
fn hash_file(path: &Path, size: u64) -> std::io::Result<(FileHash, Option<Vec<u8>>)> {
    if size <= SMALL_FILE {
        let data = std::fs::read(path)?;
        return Ok((FileHash(*blake3::hash(&data).as_bytes()), Some(data)));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(BufReader::with_capacity(1 << 20, File::open(path)?))?;
    Ok((FileHash(*hasher.finalize().as_bytes()), None))
}

/// Streams a large file through the chunker on a reader thread, in batches.
fn chunk_large_file(ctx: &IngestCtx, path: &Path) -> Result<Vec<ChunkRef>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<Vec<u8>>>>(1);
    let chunker = ctx.chunker.clone();
    let reader = std::thread::spawn(move || read_batches(chunker, file, tx));
    let mut refs = Vec::new();
    let result = (|| {
        for batch in rx.iter() {
            let batch = batch.map_err(|e| Error::io("read", path, e))?;
            let slices: Vec<&[u8]> = batch.iter().map(|c| &c[..]).collect();
            refs.extend(ctx.store_batch(&slices)?);
        }
        Ok(())
    })();
    drop(rx);
    let _ = reader.join();
    result.map(|()| refs)
}

fn read_batches(
    chunker: Chunker,
    file: File,
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<Vec<u8>>>>,
) {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for chunk in chunker.chunk_reader(BufReader::with_capacity(1 << 20, file.take(u64::MAX))) {
        match chunk {
            Ok(c) => {
                bytes += c.len();
                batch.push(c);
                if bytes >= BATCH_BYTES {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                    bytes = 0;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}
