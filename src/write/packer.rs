//! Packing: compressing the chunks nobody stored yet into packs, sealing them and uploading them
//! a few at a time, and creating the index object that names uploaded packs. The upload and
//! index routines ([`upload_pack`], [`create_index`]) are shared with gc's repack.
//!
//! Owns pack building and the first two steps of the write order (packs durable, then their
//! index object). Must not read files (`source`) or create manifests (`commit`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rayon::prelude::*;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::{BackendError, BackendExt, DynBackend, Key, Payload, PutMode};
use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::dict::{self, DictId};
use crate::format::index::{IndexObject, MAX_INDEX_BODY, MAX_INDEX_SECTIONS};
use crate::format::layout;
use crate::format::manifest::ChunkRef;
use crate::format::pack::{self, BlobEntry, PackBuilder, SealedPack};
use crate::id::{ChunkId, IndexId, PackId};
use crate::progress::DynProgress;
use crate::store::Store;
use crate::store::index_cache::DomainIndex;
use crate::write::bases::Prior;
use crate::write::request::CheckpointReport;
use crate::write::training::{Claim, TrainingRight};

/// Sealed packs waiting for an upload slot.
const PACK_QUEUE: usize = 2;
/// Packs uploaded at once.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// A pack that was uploaded, with its table and size.
#[derive(Debug)]
pub(crate) struct UploadedPack {
    pub id: PackId,
    pub entries: Vec<BlobEntry>,
    pub len: u64,
}

/// Chunks seen and stored by one checkpoint.
#[derive(Default)]
pub(crate) struct ChunkStats {
    chunks: u64,
    new_chunks: u64,
    new_raw_bytes: u64,
    new_stored_bytes: u64,
    new_deltas: u64,
}

impl ChunkStats {
    /// Copies the counts into `report`.
    pub(crate) fn report(&self, report: &mut CheckpointReport) {
        report.chunks = self.chunks;
        report.new_chunks = self.new_chunks;
        report.new_raw_bytes = self.new_raw_bytes;
        report.new_deltas = self.new_deltas;
        report.new_stored_bytes = self.new_stored_bytes;
    }
}

/// State shared by the workers of one checkpoint.
pub(crate) struct IngestCtx {
    pub(crate) chunker: Chunker,
    zstd_level: i32,
    /// The store's dictionary, once there is one (format-spec 5.1).
    encoder: RwLock<Option<Arc<dict::Encoder>>>,
    /// Where the writer's checkpoints claim the training, and this one's claim once it trained.
    training: TrainingRight,
    claim: Mutex<Option<Claim>>,
    pack_target: u64,
    /// Chunks stored before this checkpoint began.
    index: DomainIndex,
    /// Where bases are read from.
    backend: DynBackend,
    /// Chunks this checkpoint has put into a pack.
    session: Mutex<HashSet<ChunkId>>,
    builder: Mutex<PackBuilder>,
    tx: PackSender,
    stats: Mutex<ChunkStats>,
    pub(crate) progress: DynProgress,
}

impl IngestCtx {
    /// The shared state of one checkpoint's workers, sending sealed packs to `tx`.
    /// `dict` is the store's dictionary ([`Store::load_dictionaries`]); without one, the first
    /// [`dict::TRAIN_BYTES`] of new chunks of the writer's checkpoints train it, in the
    /// checkpoint that gathers the last of them, if it can claim `training`.
    pub(crate) fn new(
        store: &Store,
        index: DomainIndex,
        tx: PackSender,
        progress: DynProgress,
        dict: Option<Arc<dict::Dictionary>>,
        training: TrainingRight,
    ) -> IngestCtx {
        let level = store.config().zstd_level;
        let encoder = dict
            .and_then(|d| dict::Encoder::new(&d, level))
            .map(Arc::new);
        IngestCtx {
            chunker: store.chunker(),
            zstd_level: level,
            encoder: RwLock::new(encoder),
            training,
            claim: Mutex::new(None),
            pack_target: store.config().pack_target_size,
            index,
            backend: store.backend().clone(),
            session: Mutex::new(HashSet::new()),
            builder: Mutex::new(PackBuilder::default()),
            tx,
            stats: Mutex::new(ChunkStats::default()),
            progress,
        }
    }

    /// The training claim, if this checkpoint trained the dictionary: kept once its uploads
    /// (the dictionary's first) succeeded, given back if dropped.
    pub(crate) fn take_claim(&self) -> Option<Claim> {
        self.claim.lock().expect("claim lock").take()
    }

    /// What the workers stored, once they are done (the pack channel closes with it).
    pub(crate) fn finish(self) -> ChunkStats {
        self.stats.into_inner().expect("stats lock")
    }

    /// Claims `id` for this checkpoint unless it is stored or claimed already.
    pub(crate) fn claim(&self, id: &ChunkId) -> bool {
        !self.index.contains(id) && self.session.lock().expect("session lock").insert(*id)
    }

    /// Whether `id` is stored, or being stored by this checkpoint, as a blob of its own.
    pub(crate) fn has(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.session.lock().expect("session lock").contains(id)
    }

    /// Chunks stored before this checkpoint began.
    pub(crate) fn index(&self) -> &DomainIndex {
        &self.index
    }

    /// The store's backend.
    pub(crate) fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// Hashes a batch of chunks and compresses the ones nobody stored yet into packs, except
    /// those whose file has a previous version with a base at their offset (`prior`: that
    /// version and the offset of the batch's first chunk). Those are returned naming their base
    /// and stored later, as deltas once their bases are read (`deltas`), so that no worker waits
    /// on the store.
    pub(crate) fn store_batch(
        &self,
        chunks: &[&[u8]],
        prior: Option<(&Prior, u64)>,
    ) -> Result<Vec<ChunkRef>> {
        let ids: Vec<ChunkId> = chunks.par_iter().map(|c| ChunkId::of(c)).collect();
        let mut at = prior.map_or(0, |(_, o)| o);
        let refs: Vec<ChunkRef> = chunks
            .iter()
            .zip(&ids)
            .map(|(c, id)| {
                let here = at;
                at += c.len() as u64;
                let base = prior
                    .and_then(|(p, _)| p.base_at(here))
                    .filter(|b| b != id && !self.has(id));
                ChunkRef {
                    id: *id,
                    len: c.len() as u32,
                    base,
                }
            })
            .collect();
        let fresh: Vec<bool> = refs
            .iter()
            .map(|r| r.base.is_none() && self.claim(&r.id))
            .collect();
        // Sampled before encoding: the batch that completes the sample is already compressed
        // with the dictionary it trains (a batch can be a whole 8 MiB window of a large file).
        if self.encoder.read().expect("encoder lock").is_none() {
            let new = chunks.iter().zip(&fresh).filter(|(_, f)| **f);
            self.sample(new.map(|(c, _)| *c))?;
        }
        let encoder = self.encoder();
        let blobs: Vec<pack::Blob> = chunks
            .par_iter()
            .zip(&ids)
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|((c, id), _)| self.encode_whole(*id, c, encoder.as_deref()))
            .collect();
        self.stats.lock().expect("stats lock").chunks += chunks.len() as u64;
        self.add_blobs(blobs)?;
        self.progress
            .advance(chunks.iter().map(|c| c.len() as u64).sum());
        Ok(refs)
    }

    /// The store's dictionary, if the writer knows one yet.
    pub(crate) fn encoder(&self) -> Option<Arc<dict::Encoder>> {
        self.encoder.read().expect("encoder lock").clone()
    }

    /// `chunk` as a blob of its own: with the store's dictionary if there is one.
    pub(crate) fn encode_whole(
        &self,
        id: ChunkId,
        chunk: &[u8],
        encoder: Option<&dict::Encoder>,
    ) -> pack::Blob {
        match encoder {
            Some(e) => pack::encode_blob_with(id, chunk, e),
            None => pack::encode_blob(id, chunk, self.zstd_level),
        }
    }

    /// The level deltas are compressed at.
    pub(crate) fn zstd_level(&self) -> i32 {
        self.zstd_level
    }

    /// Counts new blobs and adds them to packs, sending each pack that fills.
    pub(crate) fn add_blobs(&self, blobs: Vec<pack::Blob>) -> Result<()> {
        {
            let mut s = self.stats.lock().expect("stats lock");
            for b in &blobs {
                s.new_chunks += 1;
                s.new_raw_bytes += b.entry.raw_len as u64;
                s.new_stored_bytes += b.entry.stored_len as u64;
                s.new_deltas += (b.entry.compression == pack::Compression::Delta) as u64;
            }
        }
        blobs.into_iter().try_for_each(|b| self.add_blob(b))
    }

    /// Adds new chunks to the writer's sample; the worker that completes it trains the
    /// store's dictionary, has it uploaded before any pack that uses it, and starts using it.
    fn sample<'a>(&self, new: impl Iterator<Item = &'a [u8]>) -> Result<()> {
        let Some((full, mut claim)) = self.training.sample(new) else {
            return Ok(()); // not full yet, or another checkpoint of this writer trains
        };
        let Some((object, encoder)) = full.train(self.zstd_level) else {
            return Ok(()); // nothing worth a dictionary: stay per-chunk (the claim goes back)
        };
        tracing::info!(dictionary = %encoder.id, "trained the store's compression dictionary");
        // Sent before the encoder is published: every pack holding a blob that names it is
        // sealed, and so queued, after the dictionary (the uploader stores it first).
        self.tx.send_dict(encoder.id, object)?;
        claim.trained(encoder.id);
        *self.encoder.write().expect("encoder lock") = Some(Arc::new(encoder));
        *self.claim.lock().expect("claim lock") = Some(claim);
        Ok(())
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
        self.tx.send(pack)
    }

    /// Seals and sends the last, partly filled pack.
    pub(crate) fn flush(&self) -> Result<()> {
        let b = std::mem::take(&mut *self.builder.lock().expect("pack lock"));
        if b.is_empty() {
            Ok(())
        } else {
            self.send(self.seal(b))
        }
    }

    fn seal(&self, b: PackBuilder) -> SealedPack {
        seal_unique(b, self.zstd_level)
    }
}

/// Seals a pack with a random 32-byte salt blob, so that no two packs ever written share an id
/// (format-spec 13.3.2): a delete gc sent for an earlier pack with the same chunks, however late
/// it lands, can never hit this one.
pub(crate) fn seal_unique(mut b: PackBuilder, zstd_level: i32) -> SealedPack {
    let nonce = crate::id::unique_bytes();
    b.push(pack::encode_blob(ChunkId::of(&nonce), &nonce, zstd_level));
    b.seal()
}

/// The first upload failure, as the upload task publishes it before it stops taking packs.
type FailureSlot = Arc<Mutex<Option<Error>>>;

/// Where workers send sealed packs. When the uploads stopped, a send fails with (a copy of) the
/// upload failure that stopped them, so the cause reaches the caller whichever error wins.
pub(crate) struct PackSender {
    tx: mpsc::Sender<Upload>,
    failure: FailureSlot,
}

/// What the upload task stores: packs, and before the first pack that uses it, a dictionary.
enum Upload {
    Pack(SealedPack),
    Dict(DictId, Vec<u8>),
}

impl PackSender {
    fn send(&self, pack: SealedPack) -> Result<()> {
        self.send_upload(Upload::Pack(pack))
    }

    /// Queues a dictionary object; packs queued after it are uploaded once it is stored.
    fn send_dict(&self, id: DictId, object: Vec<u8>) -> Result<()> {
        self.send_upload(Upload::Dict(id, object))
    }

    fn send_upload(&self, u: Upload) -> Result<()> {
        self.tx
            .blocking_send(u)
            .map_err(|_| match &*self.failure.lock().expect("failure lock") {
                Some(e) => copy_error(e),
                None => Error::Internal("the pack upload task ended without a result".into()),
            })
    }
}

/// The same error kind and message (backend errors keep their kind; their source becomes text).
fn copy_error(e: &Error) -> Error {
    use BackendError as B;
    let Error::Backend(b) = e else {
        return Error::Internal(format!("pack upload failed: {e}"));
    };
    let text = |s: &crate::backend::BoxError| -> crate::backend::BoxError { s.to_string().into() };
    Error::Backend(match b {
        B::NotFound { key } => B::NotFound { key: key.clone() },
        B::AlreadyExists { key } => B::AlreadyExists { key: key.clone() },
        B::PreconditionFailed { key } => B::PreconditionFailed { key: key.clone() },
        B::InvalidKey { key, reason } => B::InvalidKey {
            key: key.clone(),
            reason,
        },
        B::InvalidRange {
            key,
            start,
            end,
            size,
        } => B::InvalidRange {
            key: key.clone(),
            start: *start,
            end: *end,
            size: *size,
        },
        B::TooLarge { limit } => B::TooLarge { limit: *limit },
        B::NotImplemented { what } => B::NotImplemented { what },
        B::Transient { op, key, source } => B::transient(op, key, text(source)),
        B::Other { op, key, source } => B::other(op, key, text(source)),
    })
}

/// Starts uploading the packs sent to the returned sender; the task ends when it is dropped.
pub(crate) fn start_uploads(
    backend: DynBackend,
) -> (PackSender, JoinHandle<Result<Vec<UploadedPack>>>) {
    let (tx, rx) = mpsc::channel(PACK_QUEUE);
    let failure = FailureSlot::default();
    let task = tokio::spawn(upload_packs(backend, rx, failure.clone()));
    (PackSender { tx, failure }, task)
}

/// Uploads sealed packs as they come, a few at a time; returns what was uploaded. The first
/// failure is published in `slot` before the channel closes.
async fn upload_packs(
    backend: DynBackend,
    mut rx: mpsc::Receiver<Upload>,
    slot: FailureSlot,
) -> Result<Vec<UploadedPack>> {
    let mut tasks = JoinSet::new();
    let mut done = Vec::new();
    let mut failure = None;
    while let Some(upload) = rx.recv().await {
        let pack = match upload {
            Upload::Pack(p) => p,
            Upload::Dict(id, object) => {
                // Stored before any later pack starts: those may hold blobs naming it.
                let key = layout::dict_key(&id);
                match backend.create_bytes(&key, Bytes::from(object)).await {
                    Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
                    Err(e) => failure = failure.take().or(Some(e.into())),
                }
                if let Some(e) = &failure {
                    *slot.lock().expect("failure lock") = Some(copy_error(e));
                    break;
                }
                continue;
            }
        };
        while tasks.len() >= UPLOAD_CONCURRENCY {
            collect_one(&mut tasks, &mut done, &mut failure).await;
        }
        if let Some(e) = &failure {
            *slot.lock().expect("failure lock") = Some(copy_error(e));
            break; // dropping rx makes the workers stop
        }
        let backend = backend.clone();
        tasks.spawn(async move { upload_pack(&backend, pack).await });
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
    tasks: &mut JoinSet<Result<UploadedPack>>,
    done: &mut Vec<UploadedPack>,
    failure: &mut Option<Error>,
) {
    match tasks.join_next().await {
        Some(Ok(Ok(info))) => done.push(info),
        Some(Ok(Err(e))) => *failure = failure.take().or(Some(e)),
        Some(Err(e)) => *failure = failure.take().or(Some(Error::from(e))),
        None => {}
    }
}

/// Uploads one sealed pack. A pack already there under its id has the same bytes.
pub(crate) async fn upload_pack(backend: &DynBackend, pack: SealedPack) -> Result<UploadedPack> {
    let key = layout::pack_key(&pack.id);
    let len = pack.len();
    match backend
        .put(&key, Payload::from_parts(pack.parts), PutMode::Create)
        .await
    {
        // "Already exists" is trusted only once the fence has found the pack after its
        // validation read (format-spec 13.3.2).
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(UploadedPack {
            id: pack.id,
            entries: pack.entries,
            len,
        }),
        Err(e) => Err(Error::from(e)),
    }
}

/// An index object that was created.
#[derive(Debug)]
pub(crate) struct CreatedIndex {
    pub key: Key,
    pub len: u64,
    pub object: IndexObject,
}

/// Creates the index object naming `packs` in `domain`; they must all be durable already (the
/// second step of the write order). Sections are sorted by pack id, so equal content gets one
/// key.
pub(crate) async fn create_index(
    backend: &DynBackend,
    domain: layout::IndexDomain,
    packs: Vec<(PackId, Vec<BlobEntry>)>,
) -> Result<CreatedIndex> {
    let mut object = IndexObject { packs };
    object.packs.sort_by_key(|(id, _)| *id);
    let bytes = object.encode();
    // Never write what a reader must reject (format-spec section 6): too many sections, or a
    // body over the limit.
    let body = (bytes.len() - crate::format::envelope::OVERHEAD) as u64;
    if object.packs.len() > MAX_INDEX_SECTIONS as usize || body > MAX_INDEX_BODY {
        return Err(Error::InvalidInput(format!(
            "an index object of {} packs and {body} bytes exceeds the format's limits",
            object.packs.len()
        )));
    }
    let len = bytes.len() as u64;
    let key = layout::domain_index_key(domain, &IndexId::of(&bytes));
    match backend.create_bytes(&key, Bytes::from(bytes)).await {
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(CreatedIndex { key, len, object }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "packer_tests.rs"]
mod tests;
