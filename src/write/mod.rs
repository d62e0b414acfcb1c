//! Checkpointing: turning local files into chunks, packs, an index object and a manifest.
//!
//! Owns the write path and its ordering, which is the whole of crash safety:
//! 1. every new chunk is compressed into a pack, and every pack is uploaded and durable;
//! 2. then one index object naming those packs is created;
//! 3. then the manifest is created (conditionally: a checkpoint is never overwritten).
//! A crash before 3 leaves packs or an index that nothing references (gc removes them); the
//! checkpoint is invisible until its manifest exists.
//!
//! Work is spread over both cores: files are processed in parallel, and within a file the chunks
//! of each batch are hashed and compressed in parallel (rayon), while packs upload concurrently
//! on the async runtime. Memory stays bounded: a file is read in batches, at most a few packs
//! are in flight. Must not read manifests of other timelines or delete anything.
//!
//! Concurrent gc is fenced by [`crate::gc::fence`]: the writer applies the gc state before
//! deduplicating, validates its references after uploading, and creates its index object and
//! manifest only within the window of that validation; references into condemned packs are
//! stored again (in salted packs) instead.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rayon::prelude::*;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backend::{BackendError, BackendExt, DynBackend, Key};
use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::index::{ChunkIndex, IndexObject};
use crate::format::layout;
use crate::format::manifest::{self, ChunkRef, FileEntry, Manifest, TimelineState};
use crate::format::metadata::TimelineMetadata;
use crate::format::pack::{self, BlobEntry, PackBuilder, SealedPack};
use crate::gc::fence::{Fence, IndexAction, Validation};
use crate::id::{ChunkId, FileHash, PackId, TenantId, TimelineId};
use crate::progress::DynProgress;
use crate::store::Store;

/// Files up to this size are read whole and chunked in memory.
const SMALL_FILE: u64 = 4 << 20;
/// Bytes of chunks hashed and compressed together in one parallel batch.
const BATCH_BYTES: usize = 8 << 20;
/// Sealed packs waiting for an upload slot.
const PACK_QUEUE: usize = 2;
/// Packs uploaded at once.
pub const UPLOAD_CONCURRENCY: usize = 4;
/// Times a checkpoint stores chunks again because gc condemned packs it meant to reference.
const FENCE_RETRIES: usize = 3;

/// A local file to record under `name`.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Relative, `/`-separated name in the timeline.
    pub name: String,
    pub path: PathBuf,
}

/// Whether the given files are the whole timeline or only additions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// The files are the timeline's complete set: names in the previous checkpoint that are not
    /// given are recorded as removed.
    Full,
    /// The files are added to the previous checkpoint's set; nothing is removed.
    Incremental,
}

/// One checkpoint to record.
#[derive(Clone, Debug)]
pub struct CheckpointRequest {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    /// Its `disk_consistent_lsn` is the checkpoint's LSN.
    pub metadata: TimelineMetadata,
    pub files: Vec<SourceFile>,
    pub mode: CheckpointMode,
}

/// What a checkpoint did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckpointReport {
    pub lsn: String,
    pub manifest: String,
    /// Files in the request.
    pub files: usize,
    /// Files recorded as added (new or changed).
    pub files_added: usize,
    /// Files unchanged since the previous checkpoint.
    pub files_unchanged: usize,
    /// Added files whose whole content was already stored (not chunked again).
    pub files_deduplicated: usize,
    pub files_removed: usize,
    /// Bytes of the added files.
    pub bytes_added: u64,
    /// Bytes of the added files that had to be chunked (not recognised whole), and their chunks.
    pub chunked_bytes: u64,
    pub chunks: u64,
    /// Chunks not stored before, and their raw and stored bytes.
    pub new_chunks: u64,
    pub new_raw_bytes: u64,
    pub new_stored_bytes: u64,
    /// Objects created: packs, index objects, manifests.
    pub packs_written: usize,
    pub index_objects_written: usize,
}

/// A writer: a store plus the chunk index it deduplicates against. Keep one for many checkpoints
/// so the index is loaded once; it learns the packs it writes.
pub struct Writer {
    store: Store,
    index: Arc<RwLock<ChunkIndex>>,
    /// Index objects already merged into `index`.
    seen_indexes: Mutex<HashSet<Key>>,
    /// The newest known state of each timeline this writer recorded, to avoid re-reading its
    /// manifests for the next checkpoint.
    states: Mutex<HashMap<(TenantId, TimelineId), TimelineState>>,
    /// The gc generation applied to `index`.
    fence: Fence,
}

impl Writer {
    /// Loads the store's index.
    pub async fn new(store: Store) -> Result<Writer> {
        let fence = Fence::new();
        let unusable = fence.prime(store.backend()).await?;
        let (mut index, seen) = store.load_index_objects().await?;
        unusable.iter().for_each(|p| index.drop_pack(p));
        index.compact();
        tracing::debug!(
            chunks = index.len(),
            packs = index.packs().len(),
            "loaded chunk index"
        );
        Ok(Writer {
            store,
            index: Arc::new(RwLock::new(index)),
            seen_indexes: Mutex::new(seen.into_iter().collect()),
            states: Mutex::new(HashMap::new()),
            fence,
        })
    }

    /// Applies the gc state to the index before deduplicating against it (fence step 1).
    async fn apply_gc_state(&self) -> Result<()> {
        let drop = match self.fence.before_dedup(self.store.backend()).await? {
            IndexAction::Keep => return Ok(()),
            IndexAction::Drop(packs) => {
                self.refresh_index().await?;
                packs
            }
            IndexAction::Reload(packs) => {
                let objects = self.store.read_all_indexes().await?;
                let mut index = ChunkIndex::new();
                objects.values().for_each(|o| index.add_object(o));
                *self.index.write().expect("index lock") = index;
                *self.seen_indexes.lock().expect("seen lock") = objects.into_keys().collect();
                packs
            }
        };
        let mut index = self.index.write().expect("index lock");
        drop.iter().for_each(|p| index.drop_pack(p));
        Ok(())
    }

    /// Stores the files, again while gc condemns packs they would reference; returns the
    /// entries, the packs written and a validation (fence step 2).
    async fn store_fenced(
        &self,
        req: &CheckpointRequest,
        prev: Option<&TimelineState>,
        report: &mut CheckpointReport,
        progress: DynProgress,
    ) -> Result<(Vec<FileEntry>, Vec<SealedPackInfo>, Validation)> {
        for attempt in 0..=FENCE_RETRIES {
            self.apply_gc_state().await?;
            let retry = attempt > 0;
            let (added, packs) = self
                .store_files(&req.files, prev, retry, report, progress.clone())
                .await?;
            let own: HashMap<ChunkId, PackId> = packs
                .iter()
                .flat_map(|p| p.entries.iter().map(|e| (e.chunk, p.id)))
                .collect();
            let chunks: Vec<ChunkId> = added.iter().flat_map(|f| &f.chunks).map(|c| c.id).collect();
            let backend = self.store.backend();
            match self
                .fence
                .validate(backend, &self.index, &own, &chunks)
                .await?
            {
                Ok(v) => return Ok((added, packs, v)),
                Err(bad) => {
                    tracing::info!(
                        packs = bad.len(),
                        "gc condemned packs this checkpoint used; storing again"
                    );
                    let mut index = self.index.write().expect("index lock");
                    bad.iter().for_each(|p| index.drop_pack(p));
                }
            }
        }
        Err(Error::Fenced(format!(
            "gc condemned packs under checkpoint {} {FENCE_RETRIES} times",
            req.metadata.disk_consistent_lsn
        )))
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of chunks known to be stored.
    pub fn known_chunks(&self) -> usize {
        self.index.read().expect("index lock").len()
    }

    /// Heap bytes the chunk index holds for its entries.
    pub fn index_heap_bytes(&self) -> usize {
        self.index.read().expect("index lock").entry_heap_bytes()
    }

    /// Merges index objects written by others since this writer loaded or last refreshed.
    pub async fn refresh_index(&self) -> Result<usize> {
        let listed = self.store.list(&layout::prefix(layout::INDEX)).await?;
        let fresh: Vec<Key> = {
            let seen = self.seen_indexes.lock().expect("seen lock");
            listed
                .into_iter()
                .map(|m| m.key)
                .filter(|k| layout::parse_index_key(k).is_some() && !seen.contains(k))
                .collect()
        };
        for key in &fresh {
            // gc merged it into an object the next refresh lists; validation keeps this safe.
            let obj = match self.store.read_index(key).await {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            self.index.write().expect("index lock").add_object(&obj);
            self.seen_indexes
                .lock()
                .expect("seen lock")
                .insert(key.clone());
        }
        Ok(fresh.len())
    }

    /// Restores a timeline (at `at`, or its newest checkpoint) into `to`, finding chunks through
    /// this writer's index after merging any index objects written since it was loaded.
    pub async fn restore(
        &self,
        tenant: &TenantId,
        timeline: &TimelineId,
        at: Option<crate::id::Lsn>,
        to: &Path,
        progress: DynProgress,
    ) -> Result<crate::restore::RestoreReport> {
        let state = self.store.checkpoint_state(tenant, timeline, at).await?;
        self.refresh_index().await?;
        let plan = {
            let index = self.index.read().expect("index lock");
            self.store.plan_restore(&index, &state, to, &progress)?
        };
        self.store.execute_restore(plan, progress).await
    }

    /// The timeline's state as of its newest manifest in `refs`, from the cache when it is current.
    async fn previous_state(
        &self,
        refs: &[crate::store::ManifestRef],
        key: (TenantId, TimelineId),
    ) -> Result<Option<TimelineState>> {
        let newest = refs.last().map(|r| r.lsn);
        if let Some(cached) = self.states.lock().expect("states lock").get(&key) {
            if Some(cached.lsn) == newest {
                return Ok(Some(cached.clone()));
            }
        }
        Ok(TimelineState::fold(self.store.read_chain(refs).await?))
    }

    /// Records one checkpoint. Fails with `AlreadyExists` if the timeline has a checkpoint at
    /// this LSN and with `InvalidInput` if it has a newer one.
    pub async fn checkpoint(
        &self,
        req: CheckpointRequest,
        progress: DynProgress,
    ) -> Result<CheckpointReport> {
        let lsn = req.metadata.disk_consistent_lsn;
        let refs = self
            .store
            .timeline_manifests(&req.tenant, &req.timeline)
            .await?;
        if let Some(newest) = refs.last() {
            if newest.lsn == lsn {
                return Err(Error::AlreadyExists(format!("checkpoint {}", newest.key)));
            }
            if newest.lsn > lsn {
                return Err(Error::InvalidInput(format!(
                    "checkpoint at {lsn} is older than the newest recorded one at {}",
                    newest.lsn
                )));
            }
        }
        let prev = self
            .previous_state(&refs, (req.tenant, req.timeline))
            .await?;
        for f in &req.files {
            manifest::validate_name(&f.name)
                .map_err(|e| Error::InvalidInput(format!("file name {:?}: {e}", f.name)))?;
        }

        let mut report = CheckpointReport {
            lsn: lsn.to_string(),
            files: req.files.len(),
            ..Default::default()
        };
        let (added, packs, validation) = self
            .store_fenced(&req, prev.as_ref(), &mut report, progress)
            .await?;
        let removed = removed_names(&req, prev.as_ref());
        report.files_removed = removed.len();
        validation.check("index object")?;
        self.commit_index(&packs, &mut report).await?;

        let manifest = Manifest {
            tenant: req.tenant,
            timeline: req.timeline,
            lsn,
            prev_lsn: prev.as_ref().map(|p| p.lsn),
            metadata: req.metadata,
            added,
            removed,
            base: false,
        };
        manifest.validate().map_err(Error::InvalidInput)?;
        let key = layout::manifest_key(&req.tenant, &req.timeline, lsn);
        validation.check("manifest")?;
        match self
            .store
            .backend()
            .create_bytes(&key, Bytes::from(manifest.encode()))
            .await
        {
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(Error::AlreadyExists(format!("checkpoint {key}")));
            }
            other => other?,
        }
        report.manifest = key.to_string();
        let state = TimelineState::apply(prev, manifest);
        self.states
            .lock()
            .expect("states lock")
            .insert((req.tenant, req.timeline), state);
        tracing::info!(manifest = %key, added = report.files_added, new_chunks = report.new_chunks, "checkpoint recorded");
        Ok(report)
    }

    /// Stores the content of every changed file; returns their entries and the packs written.
    async fn store_files(
        &self,
        files: &[SourceFile],
        prev: Option<&TimelineState>,
        retry: bool,
        report: &mut CheckpointReport,
        progress: DynProgress,
    ) -> Result<(Vec<FileEntry>, Vec<SealedPackInfo>)> {
        *report = CheckpointReport {
            lsn: std::mem::take(&mut report.lsn),
            files: files.len(),
            ..Default::default()
        };
        // A retry stores every chunk it cannot resolve afresh, in salted packs.
        let known_files: HashMap<FileHash, Vec<ChunkRef>> = prev
            .filter(|_| !retry)
            .map(|p| {
                p.files
                    .values()
                    .map(|f| (f.hash, f.chunks.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(PACK_QUEUE);
        let uploader = tokio::spawn(upload_packs(self.store.backend().clone(), rx));
        let ctx = Arc::new(IngestCtx {
            chunker: self.store.chunker(),
            zstd_level: self.store.config().zstd_level,
            pack_target: self.store.config().pack_target_size,
            index: self.index.clone(),
            session: Mutex::new(HashSet::new()),
            builder: Mutex::new(PackBuilder::default()),
            tx,
            stats: Mutex::new(ChunkStats::default()),
            progress,
            salt: retry,
        });
        let total: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum();
        ctx.progress.set_total(total);

        let jobs: Vec<(SourceFile, Option<FileEntry>)> = files
            .iter()
            .map(|f| (f.clone(), prev.and_then(|p| p.files.get(&f.name)).cloned()))
            .collect();
        let worker_ctx = ctx.clone();
        let work = tokio::task::spawn_blocking(move || {
            let results: Result<Vec<FileOutcome>> = jobs
                .par_iter()
                .map(|(src, old)| ingest_file(&worker_ctx, src, old.as_ref(), &known_files))
                .collect();
            let flushed = worker_ctx.flush();
            results.and_then(|r| flushed.map(|()| r))
        });
        let outcomes = work
            .await
            .map_err(|e| Error::InvalidInput(format!("ingest worker failed: {e}")));
        let ctx = Arc::try_unwrap(ctx)
            .map_err(|_| ())
            .expect("workers are done");
        let stats = ctx.stats.into_inner().expect("stats lock");
        drop(ctx.tx);
        let packs = uploader
            .await
            .map_err(|e| Error::InvalidInput(format!("upload task failed: {e}")))?;
        let outcomes = outcomes??;
        let packs = packs?;

        let mut added = Vec::new();
        for o in outcomes {
            match o {
                FileOutcome::Unchanged => report.files_unchanged += 1,
                FileOutcome::Added {
                    entry,
                    deduplicated,
                } => {
                    report.files_added += 1;
                    report.files_deduplicated += deduplicated as usize;
                    report.chunked_bytes += if deduplicated { 0 } else { entry.size };
                    report.bytes_added += entry.size;
                    added.push(entry);
                }
            }
        }
        report.chunks = stats.chunks;
        report.new_chunks = stats.new_chunks;
        report.new_raw_bytes = stats.new_raw_bytes;
        report.new_stored_bytes = stats.new_stored_bytes;
        report.packs_written = packs.len();
        Ok((added, packs))
    }

    /// Creates the index object naming `packs` (already durable) and teaches the writer's index.
    async fn commit_index(
        &self,
        packs: &[SealedPackInfo],
        report: &mut CheckpointReport,
    ) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let mut object = IndexObject {
            packs: packs.iter().map(|p| (p.id, p.entries.clone())).collect(),
        };
        object.packs.sort_by_key(|(id, _)| *id);
        let bytes = object.encode();
        let key = layout::index_key(&crate::id::IndexId::of(&bytes));
        match self
            .store
            .backend()
            .create_bytes(&key, Bytes::from(bytes))
            .await
        {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        report.index_objects_written = 1;
        self.index.write().expect("index lock").add_object(&object);
        Ok(())
    }
}

fn removed_names(req: &CheckpointRequest, prev: Option<&TimelineState>) -> Vec<String> {
    let (Some(prev), CheckpointMode::Full) = (prev, req.mode) else {
        return Vec::new();
    };
    let given: HashSet<&str> = req.files.iter().map(|f| f.name.as_str()).collect();
    prev.files
        .keys()
        .filter(|n| !given.contains(n.as_str()))
        .cloned()
        .collect()
}

/// A pack that was uploaded, with its table.
#[derive(Debug)]
struct SealedPackInfo {
    id: PackId,
    entries: Vec<BlobEntry>,
}

#[derive(Default)]
struct ChunkStats {
    chunks: u64,
    new_chunks: u64,
    new_raw_bytes: u64,
    new_stored_bytes: u64,
}

/// State shared by the workers of one checkpoint.
struct IngestCtx {
    chunker: Chunker,
    zstd_level: i32,
    pack_target: u64,
    /// Chunks stored before this checkpoint began.
    index: Arc<RwLock<ChunkIndex>>,
    /// Chunks this checkpoint has put into a pack.
    session: Mutex<HashSet<ChunkId>>,
    builder: Mutex<PackBuilder>,
    tx: mpsc::Sender<SealedPack>,
    stats: Mutex<ChunkStats>,
    progress: DynProgress,
    /// Add a random blob to every pack, so that its bytes (and id) differ from any condemned
    /// pack holding the same chunks.
    salt: bool,
}

enum FileOutcome {
    Unchanged,
    Added {
        entry: FileEntry,
        deduplicated: bool,
    },
}

impl IngestCtx {
    /// Claims `id` for this checkpoint unless it is stored or claimed already.
    fn claim(&self, id: &ChunkId) -> bool {
        !self.index.read().expect("index lock").contains(id)
            && self.session.lock().expect("session lock").insert(*id)
    }

    /// Hashes a batch of chunks, compresses the ones nobody stored yet, adds them to packs.
    fn store_batch(&self, chunks: &[&[u8]]) -> Result<Vec<ChunkRef>> {
        let ids: Vec<ChunkId> = chunks.par_iter().map(|c| ChunkId::of(c)).collect();
        let fresh: Vec<bool> = ids.iter().map(|id| self.claim(id)).collect();
        let blobs: Vec<pack::Blob> = chunks
            .par_iter()
            .zip(&ids)
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|((c, id), _)| pack::encode_blob(*id, c, self.zstd_level))
            .collect();
        {
            let mut s = self.stats.lock().expect("stats lock");
            s.chunks += chunks.len() as u64;
            for b in &blobs {
                s.new_chunks += 1;
                s.new_raw_bytes += b.entry.raw_len as u64;
                s.new_stored_bytes += b.entry.stored_len as u64;
            }
        }
        for blob in blobs {
            self.add_blob(blob)?;
        }
        self.progress
            .advance(chunks.iter().map(|c| c.len() as u64).sum());
        Ok(ids
            .into_iter()
            .zip(chunks)
            .map(|(id, c)| ChunkRef {
                id,
                len: c.len() as u32,
            })
            .collect())
    }

    fn add_blob(&self, blob: pack::Blob) -> Result<()> {
        let sealed = {
            let mut b = self.builder.lock().expect("pack lock");
            b.push(blob);
            b.is_full(self.pack_target)
                .then(|| self.seal(std::mem::take(&mut *b)))
        };
        match sealed {
            Some(p) => self.send(p),
            None => Ok(()),
        }
    }

    fn send(&self, pack: SealedPack) -> Result<()> {
        self.tx
            .blocking_send(pack)
            .map_err(|_| Error::InvalidInput("pack upload stopped; see the upload error".into()))
    }

    /// Seals and sends the last, partly filled pack.
    fn flush(&self) -> Result<()> {
        let b = std::mem::take(&mut *self.builder.lock().expect("pack lock"));
        if b.is_empty() {
            Ok(())
        } else {
            self.send(self.seal(b))
        }
    }

    fn seal(&self, mut b: PackBuilder) -> SealedPack {
        if self.salt {
            let nonce = crate::gc::fence::nonce();
            b.push(pack::encode_blob(
                ChunkId::of(&nonce),
                &nonce,
                self.zstd_level,
            ));
        }
        b.seal()
    }
}

/// Records one file: unchanged, reused whole, or chunked.
fn ingest_file(
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

/// Uploads sealed packs as they come, a few at a time; returns what was uploaded.
async fn upload_packs(
    backend: DynBackend,
    mut rx: mpsc::Receiver<SealedPack>,
) -> Result<Vec<SealedPackInfo>> {
    let mut tasks = JoinSet::new();
    let mut done = Vec::new();
    let mut failure = None;
    while let Some(pack) = rx.recv().await {
        while tasks.len() >= UPLOAD_CONCURRENCY {
            collect_one(&mut tasks, &mut done, &mut failure).await;
        }
        if failure.is_some() {
            break; // dropping rx makes the workers stop
        }
        let backend = backend.clone();
        tasks.spawn(async move {
            let key = layout::pack_key(&pack.id);
            match backend
                .put(&key, pack.payload, crate::backend::PutMode::Create)
                .await
            {
                Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(SealedPackInfo {
                    id: pack.id,
                    entries: pack.entries,
                }),
                Err(e) => Err(Error::from(e)),
            }
        });
    }
    drop(rx);
    while !tasks.is_empty() {
        collect_one(&mut tasks, &mut done, &mut failure).await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

async fn collect_one(
    tasks: &mut JoinSet<Result<SealedPackInfo>>,
    done: &mut Vec<SealedPackInfo>,
    failure: &mut Option<Error>,
) {
    match tasks.join_next().await {
        Some(Ok(Ok(info))) => done.push(info),
        Some(Ok(Err(e))) => *failure = failure.take().or(Some(e)),
        Some(Err(e)) => {
            *failure = failure.take().or(Some(Error::InvalidInput(format!(
                "upload task panicked: {e}"
            ))))
        }
        None => {}
    }
}
