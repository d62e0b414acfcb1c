//! Restore: reassembling a timeline's files from chunks into a local directory.
//!
//! Owns the read path. Reads are planned per pack: the blobs a restore needs from one pack are
//! sorted by offset and neighbours are coalesced into one ranged read; ranges are fetched in
//! parallel and decompressed on blocking threads. Every chunk is re-hashed, every file is
//! re-hashed when complete, and only then renamed from its temporary name
//! (`.layercas-<hash of name>.tmp` in the same directory) to its final name. The `metadata` file is
//! written last, so an interrupted restore never leaves a timeline that looks complete, nor a
//! half-written file under its final name. Must not write to the store.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::manifest::{FileEntry, TimelineState};
use crate::format::metadata::METADATA_FILE_NAME;
use crate::format::pack;
use crate::id::{ChunkId, FileHash, PackId};
use crate::progress::DynProgress;
use crate::store::Store;
use crate::store::chunk_index::{ChunkIndex, Location};

/// Ranged reads in flight at once.
pub const RESTORE_CONCURRENCY: usize = 4;
/// Blobs closer than this are fetched in one read (the gap is downloaded and discarded).
const COALESCE_GAP: u64 = 256 << 10;
/// Longest single ranged read.
const MAX_RANGE: u64 = 20 << 20;

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// The checkpoint restored.
    pub lsn: String,
    /// Files in the restored timeline.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Files already present with the right content, left as they were.
    pub files_reused: usize,
    /// Chunks read from the store.
    pub chunks_fetched: usize,
    /// Range reads made (adjacent chunks of a pack are read together).
    pub range_reads: usize,
    /// Bytes read from the store (stored form, before decompression).
    pub bytes_downloaded: u64,
}

/// A file being restored.
struct Target {
    entry: FileEntry,
    final_path: PathBuf,
    tmp_path: PathBuf,
    /// Distinct chunk placements not yet written.
    remaining: AtomicUsize,
}

/// One chunk needed, and every place it goes.
#[derive(Clone)]
struct Need {
    chunk: ChunkId,
    loc: Location,
    /// (target index, offset in that file)
    dests: Vec<(usize, u64)>,
}

/// One ranged read of a pack and the blobs it covers.
struct RangeRead {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Need>,
}

/// A restore ready to run: its temporary files exist and its reads are grouped.
pub struct RestorePlan {
    root: PathBuf,
    targets: Vec<Target>,
    ranges: Vec<RangeRead>,
    metadata: Vec<u8>,
    report: RestoreReport,
}

impl Store {
    /// Restores `state` into `to` (created if missing) using `index` to find chunks.
    pub async fn restore_state(
        &self,
        index: &ChunkIndex,
        state: &TimelineState,
        to: &Path,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let plan = self.plan_restore(index, state, to, &progress)?;
        self.execute_restore(plan, progress).await
    }

    /// Decides what to fetch for restoring `state` into `to`, and creates the temporary files.
    /// Needs `index` only while it runs.
    pub fn plan_restore(
        &self,
        index: &ChunkIndex,
        state: &TimelineState,
        to: &Path,
        progress: &DynProgress,
    ) -> Result<RestorePlan> {
        std::fs::create_dir_all(to).map_err(|e| Error::io("create directory", to, e))?;
        let root = to.canonicalize().map_err(|e| Error::io("resolve", to, e))?;
        let mut report = RestoreReport {
            lsn: state.lsn.to_string(),
            files: state.files.len(),
            ..Default::default()
        };
        report.bytes = state.logical_bytes();
        progress.set_total(report.bytes);
        let targets = prepare_targets(&root, state, &mut report, progress)?;
        let ranges = match plan_reads(index, &targets) {
            Ok(ranges) => ranges,
            Err(e) => {
                discard(&targets);
                return Err(e);
            }
        };
        report.range_reads = ranges.len();
        report.chunks_fetched = ranges.iter().map(|r| r.blobs.len()).sum();
        report.bytes_downloaded = ranges.iter().map(|r| r.end - r.start).sum();
        Ok(RestorePlan {
            root,
            targets,
            ranges,
            metadata: state.metadata.to_file_bytes(),
            report,
        })
    }

    /// Fetches, checks and writes everything `plan` names; renames each file into place when it
    /// is complete, and writes the metadata file last.
    pub async fn execute_restore(
        &self,
        plan: RestorePlan,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let RestorePlan {
            root,
            targets,
            ranges,
            metadata,
            report,
        } = plan;
        let targets = Arc::new(targets);
        if let Err(e) = self.fetch_and_write(ranges, &targets, &progress).await {
            discard(&targets);
            return Err(e);
        }
        for t in targets.iter().filter(|t| t.entry.chunks.is_empty()) {
            finish_file(t)?;
        }
        // The metadata file goes last: only now does the timeline look complete.
        write_atomically(&root.join(METADATA_FILE_NAME), &metadata)?;
        Ok(report)
    }

    /// Fetches every planned range and writes its chunks into the temporary files.
    async fn fetch_and_write(
        &self,
        ranges: Vec<RangeRead>,
        targets: &Arc<Vec<Target>>,
        progress: &DynProgress,
    ) -> Result<()> {
        futures::stream::iter(ranges.into_iter().map(|r| {
            let (targets, progress) = (targets.clone(), progress.clone());
            async move {
                let bytes = self
                    .backend()
                    .get_range(&layout::pack_key(&r.pack), r.start..r.end)
                    .await
                    .map_err(|e| {
                        let first = &r.blobs[0];
                        Error::Integrity(format!(
                            "reading pack {} for chunk {} of file {:?}: {e}",
                            r.pack, first.chunk, targets[first.dests[0].0].entry.name
                        ))
                    })?;
                tokio::task::spawn_blocking(move || write_range(&r, &bytes, &targets, &progress))
                    .await
                    .map_err(|e| Error::InvalidInput(format!("restore worker failed: {e}")))?
            }
        }))
        .buffer_unordered(RESTORE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// Restores a timeline at `at` (or its newest checkpoint) into `to`.
    pub async fn restore_timeline(
        &self,
        tenant: &crate::id::TenantId,
        timeline: &crate::id::TimelineId,
        at: Option<crate::id::Lsn>,
        to: &Path,
        progress: DynProgress,
    ) -> Result<RestoreReport> {
        let state = self.checkpoint_state(tenant, timeline, at).await?;
        let index = self.load_index().await?;
        self.restore_state(&index, &state, to, progress).await
    }
}

/// Removes the temporary files of an abandoned restore (completed files were renamed already).
fn discard(targets: &[Target]) {
    for t in targets {
        let _ = std::fs::remove_file(&t.tmp_path);
    }
}

/// Decides where each file goes; leaves out files already present with the right content.
fn prepare_targets(
    root: &Path,
    state: &TimelineState,
    report: &mut RestoreReport,
    progress: &DynProgress,
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for entry in state.files.values() {
        match prepare_target(root, entry) {
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
fn prepare_target(root: &Path, entry: &FileEntry) -> Result<Option<Target>> {
    let final_path = root.join(&entry.name);
    let parent = final_path
        .parent()
        .expect("a file has a parent")
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io("create directory", &parent, e))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| Error::io("resolve", &parent, e))?;
    if !real_parent.starts_with(root) {
        return Err(Error::InvalidInput(format!(
            "file {:?} would be written outside {}",
            entry.name,
            root.display()
        )));
    }
    if already_present(&final_path, entry) {
        return Ok(None);
    }
    let tmp_path = real_parent.join(format!(
        ".layercas-{}.tmp",
        &blake3::hash(entry.name.as_bytes()).to_hex()[..16]
    ));
    let file = File::create(&tmp_path).map_err(|e| Error::io("create", &tmp_path, e))?;
    file.set_len(entry.size)
        .map_err(|e| Error::io("size", &tmp_path, e))?;
    Ok(Some(Target {
        entry: entry.clone(),
        final_path,
        tmp_path,
        remaining: AtomicUsize::new(0),
    }))
}

fn already_present(path: &Path, entry: &FileEntry) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() && md.len() == entry.size => {
            hash_path(path).is_ok_and(|h| h == entry.hash)
        }
        _ => false,
    }
}

fn hash_path(path: &Path) -> std::io::Result<FileHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::io::BufReader::with_capacity(
        1 << 20,
        File::open(path)?,
    ))?;
    Ok(FileHash(*hasher.finalize().as_bytes()))
}

/// Groups every needed chunk by pack and coalesces neighbours into ranged reads.
fn plan_reads(index: &ChunkIndex, targets: &[Target]) -> Result<Vec<RangeRead>> {
    let mut needs: HashMap<ChunkId, Need> = HashMap::new();
    for (ti, t) in targets.iter().enumerate() {
        let mut offset = 0u64;
        for c in &t.entry.chunks {
            let loc = index.get(&c.id).ok_or_else(|| {
                Error::Integrity(format!(
                    "file {:?}: chunk {} is in no index object (missing data)",
                    t.entry.name, c.id
                ))
            })?;
            if loc.raw_len != c.len {
                return Err(Error::Integrity(format!(
                    "file {:?}: chunk {} is {} bytes in pack {} but the manifest says {}",
                    t.entry.name, c.id, loc.raw_len, loc.pack, c.len
                )));
            }
            needs
                .entry(c.id)
                .or_insert_with(|| Need {
                    chunk: c.id,
                    loc,
                    dests: Vec::new(),
                })
                .dests
                .push((ti, offset));
            t.remaining.fetch_add(1, Ordering::Relaxed);
            offset += c.len as u64;
        }
    }
    let mut by_pack: BTreeMap<PackId, Vec<Need>> = BTreeMap::new();
    for need in needs.into_values() {
        by_pack.entry(need.loc.pack).or_default().push(need);
    }
    let mut ranges = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|n| n.loc.offset);
        for need in blobs {
            let (start, end) = (
                need.loc.offset,
                need.loc.offset + need.loc.stored_len as u64,
            );
            match ranges.last_mut() {
                Some(RangeRead {
                    pack: p,
                    start: s,
                    end: e,
                    blobs,
                }) if *p == pack && start <= *e + COALESCE_GAP && end - *s <= MAX_RANGE => {
                    *e = (*e).max(end);
                    blobs.push(need);
                }
                _ => ranges.push(RangeRead {
                    pack,
                    start,
                    end,
                    blobs: vec![need],
                }),
            }
        }
    }
    Ok(ranges)
}

/// Decodes every blob of a fetched range and writes it wherever it goes.
fn write_range(
    r: &RangeRead,
    bytes: &Bytes,
    targets: &[Target],
    progress: &DynProgress,
) -> Result<()> {
    if bytes.len() as u64 != r.end - r.start {
        return Err(Error::Integrity(format!(
            "pack {} is shorter than its index says ({} of {} bytes at {})",
            r.pack,
            bytes.len(),
            r.end - r.start,
            r.start
        )));
    }
    for need in &r.blobs {
        let at = (need.loc.offset - r.start) as usize;
        let data = &bytes[at..at + need.loc.stored_len as usize];
        let raw = pack::decode_blob(&need.loc.entry(need.chunk), data).map_err(|e| {
            Error::Integrity(format!(
                "chunk {} of file {:?} in pack {} is corrupt: {}",
                need.chunk, targets[need.dests[0].0].entry.name, r.pack, e.reason
            ))
        })?;
        for &(ti, offset) in &need.dests {
            let t = &targets[ti];
            let file = OpenOptions::new()
                .write(true)
                .open(&t.tmp_path)
                .map_err(|e| Error::io("open", &t.tmp_path, e))?;
            file.write_all_at(&raw, offset)
                .map_err(|e| Error::io("write", &t.tmp_path, e))?;
            progress.advance(raw.len() as u64);
            if t.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                finish_file(t)?;
            }
        }
    }
    Ok(())
}

/// Checks a complete temporary file against its hash, makes it durable and gives it its name.
fn finish_file(t: &Target) -> Result<()> {
    let hash = hash_path(&t.tmp_path).map_err(|e| Error::io("read back", &t.tmp_path, e))?;
    if hash != t.entry.hash {
        let _ = std::fs::remove_file(&t.tmp_path);
        return Err(Error::Integrity(format!(
            "file {:?}: reassembled content does not match its recorded hash",
            t.entry.name
        )));
    }
    File::open(&t.tmp_path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", &t.tmp_path, e))?;
    std::fs::rename(&t.tmp_path, &t.final_path)
        .map_err(|e| Error::io("rename", &t.final_path, e))?;
    sync_parent(&t.final_path)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("a file has a parent");
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", parent, e))
}

/// Writes `bytes` to a temporary name, fsyncs, and renames it to `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".layercas-{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    sync_parent(path)
}
