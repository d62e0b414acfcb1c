//! The second pass of a checkpoint's ingest: storing the chunks the first pass left for a base
//! (format-spec 5.2). Their bases are read from the store on the runtime, in groups that hold at
//! most [`BASE_BUDGET`] bytes of bases; then blocking workers decode each base when a chunk first
//! needs it, read each chunk again from its file at its offset, check it against its id, and
//! compress it against its base, or whole when the base could not be read (its reference then
//! loses the base).
//!
//! No worker waits on the store: a blocking worker that did would hold up a runtime whose clock
//! only moves when it is idle (the gc simulation's), and would tie a thread to a network read.
//!
//! Owns the pending list, its grouping and the re-reads. Must not choose bases (`bases`) or build
//! packs (`packer`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::delta;
use crate::format::manifest::FileEntry;
use crate::format::pack::Blob;
use crate::id::ChunkId;
use crate::write::bases::{self, Decoder};
use crate::write::packer::IngestCtx;
use crate::write::source::{hook, open_regular};

/// Bytes of bases held in memory at once.
const BASE_BUDGET: u64 = 64 << 20;

/// A chunk left for its base: its file, its place in the file's entry, its offset.
#[derive(Clone, Copy, Debug)]
struct Pending {
    file: usize,
    chunk: usize,
    offset: u64,
    id: ChunkId,
    len: u32,
    base: ChunkId,
}

/// Stores the chunks of `entries` (one per file of `paths`) that name a base and whose delta is
/// not stored yet, and takes the base out of the reference of each that ends up stored whole.
pub(crate) async fn store_pending(
    ctx: &Arc<IngestCtx>,
    paths: Arc<Vec<PathBuf>>,
    entries: &mut [Option<&mut FileEntry>],
) -> Result<()> {
    let pending: Vec<Pending> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, e.as_deref()?)))
        .flat_map(|(i, e)| pending_of(ctx, i, e))
        .collect();
    for group in groups(ctx, pending) {
        let wanted = group.iter().map(|p| p.base);
        let fetched = bases::fetch(ctx.backend(), ctx.index(), wanted).await?;
        let (c, p) = (ctx.clone(), paths.clone());
        let whole = tokio::task::spawn_blocking(move || {
            let found = Decoder::new(&fetched);
            store_group(&c, &p, &group, &found)
        })
        .await
        .map_err(|e| Error::Internal(format!("delta worker failed: {e}")))??;
        for (file, chunk) in whole {
            if let Some(e) = entries[file].as_deref_mut() {
                e.chunks[chunk].base = None;
            }
        }
    }
    Ok(())
}

/// The references of `entry` (file `file`) that name a base whose delta is not indexed.
fn pending_of(ctx: &IngestCtx, file: usize, entry: &FileEntry) -> Vec<Pending> {
    let mut offset = 0u64;
    let mut out = Vec::new();
    for (chunk, r) in entry.chunks.iter().enumerate() {
        if let Some(base) = r.base.filter(|_| !ctx.index().contains(&r.blob_id())) {
            out.push(Pending {
                file,
                chunk,
                offset,
                id: r.id,
                len: r.len,
                base,
            });
        }
        offset += r.len as u64;
    }
    out
}

/// `pending` in order, cut where the next base would take the group's bases over the budget.
fn groups(ctx: &IngestCtx, pending: Vec<Pending>) -> Vec<Vec<Pending>> {
    let (mut out, mut group) = (Vec::new(), Vec::new());
    let (mut held, mut seen) = (0u64, HashSet::new());
    for p in pending {
        if !seen.contains(&p.base) {
            let len = bases::whole(ctx.index(), &p.base).map_or(0, |l| l.raw_len as u64);
            if held + len > BASE_BUDGET && !group.is_empty() {
                out.push(std::mem::take(&mut group));
                (held, seen) = (0, HashSet::new());
            }
            held += len;
            seen.insert(p.base);
        }
        group.push(p);
    }
    if !group.is_empty() {
        out.push(group);
    }
    out
}

/// What becomes of one pending chunk.
enum Fate {
    /// Stored whole already (by this checkpoint or before): referenced whole, nothing to store.
    Whole,
    /// Stored here as a delta against its base.
    Delta,
    /// Its base could not be read: stored here whole.
    StoreWhole,
    /// Its blob is being stored by this checkpoint already (the same chunk and base elsewhere).
    Claimed,
}

/// Stores one group's chunks against `found`, the bases that could be read; returns the
/// (file, chunk) of every reference that must lose its base.
///
/// The chunks that can be stored as deltas (the first of each chunk and base pair, not stored
/// yet) are encoded first, all in parallel, each decoding its base as it needs it. Then each
/// chunk's fate is decided in order, so that which copy of a repeated chunk is stored never
/// depends on timing; an encoding its fate does not use (another writer claimed the blob
/// meanwhile) is dropped.
fn store_group(
    ctx: &IngestCtx,
    paths: &[PathBuf],
    group: &[Pending],
    found: &Decoder,
) -> Result<Vec<(usize, usize)>> {
    let mut pairs = HashSet::new();
    let candidate: Vec<bool> = group
        .iter()
        .map(|p| pairs.insert((p.id, p.base)) && !ctx.has(&p.id))
        .collect();
    let chosen = group.iter().zip(&candidate).filter(|(_, c)| **c);
    let files = open_files(paths, chosen.map(|(p, _)| p))?;
    let file_of = |p: &Pending| {
        let file = files.get(&p.file).ok_or_else(|| {
            Error::Internal(format!("chunk {} is stored but was no candidate", p.id))
        });
        file.map(|f| (f, paths[p.file].as_path()))
    };
    // `None` when the base cannot serve (the chunk is then stored whole, if at all).
    let encode_delta = |p: &Pending, (base, chunk): &mut Buffers| {
        let Some(base) = found.decode(&p.base, base)? else {
            return Ok(None);
        };
        let chunk = read_again(file_of(p)?, p, chunk)?;
        delta::encode_delta_blob(p.id, chunk, p.base, base, ctx.zstd_level())
            .ok_or_else(|| Error::Internal(format!("zstd failed on chunk {}", p.id)))
            .map(Some)
    };
    let early: Vec<Option<Blob>> = group
        .par_iter()
        .zip(&candidate)
        .map_init(Buffers::default, |bufs, (p, candidate)| match candidate {
            true => encode_delta(p, bufs),
            false => Ok(None),
        })
        .collect::<Result<_>>()?;
    let fates: Vec<Fate> = group
        .iter()
        .map(|p| fate(ctx, p, found))
        .collect::<Result<_>>()?;
    let encoder = ctx.encoder();
    let blobs = group
        .par_iter()
        .zip(&fates)
        .zip(early)
        .filter(|((_, f), _)| stores(f))
        .map(|((p, fate), early)| match (fate, early) {
            (Fate::Delta, Some(blob)) => Ok(blob),
            (Fate::Delta, None) => encode_delta(p, &mut Buffers::default())?
                .ok_or_else(|| Error::Internal(format!("base {} vanished", p.base))),
            _ => {
                let mut buf = Vec::new();
                let chunk = read_again(file_of(p)?, p, &mut buf)?;
                Ok(ctx.encode_whole(p.id, chunk, encoder.as_deref()))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    ctx.add_blobs(blobs)?;
    Ok(group
        .iter()
        .zip(&fates)
        .filter(|(_, f)| matches!(f, Fate::Whole | Fate::StoreWhole))
        .map(|(p, _)| (p.file, p.chunk))
        .collect())
}

/// A worker's buffers for a base and a chunk, reused from chunk to chunk.
type Buffers = (Vec<u8>, Vec<u8>);

/// What becomes of `p`, given the bases that could be read; claims the blob it will store.
fn fate(ctx: &IngestCtx, p: &Pending, found: &Decoder) -> Result<Fate> {
    Ok(if ctx.has(&p.id) {
        Fate::Whole
    } else if found.usable(&p.base)? {
        match ctx.claim(&delta::delta_id(&p.id, &p.base)) {
            true => Fate::Delta,
            false => Fate::Claimed,
        }
    } else if ctx.claim(&p.id) {
        Fate::StoreWhole
    } else {
        Fate::Whole
    })
}

/// The files of `chosen` chunks, each opened once.
fn open_files<'g>(
    paths: &[PathBuf],
    chosen: impl Iterator<Item = &'g Pending>,
) -> Result<HashMap<usize, File>> {
    let mut files = HashMap::new();
    for p in chosen {
        if let std::collections::hash_map::Entry::Vacant(v) = files.entry(p.file) {
            let path = &paths[p.file];
            v.insert(open_regular(path).map_err(|e| Error::io("open", path, e))?);
        }
    }
    Ok(files)
}

fn stores(f: &Fate) -> bool {
    matches!(f, Fate::Delta | Fate::StoreWhole)
}

/// The chunk `p` read from its file again, checked against its id: a file that changed since
/// the first pass fails the checkpoint as a file that changes while it is read does.
/// `buf` holds the bytes read (and is grown to hold them).
fn read_again<'b>(
    (file, path): (&File, &Path),
    p: &Pending,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    let len = p.len as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let chunk = &mut buf[..len];
    let changed = || {
        Error::io(
            "checkpoint",
            path,
            std::io::Error::other(format!(
                "the file changed while it was being read (its {} bytes at offset {} differ \
                 from the first read); record it again once it is stable",
                p.len, p.offset
            )),
        )
    };
    hook::call(path, hook::SECOND_PASS);
    match file.read_exact_at(chunk, p.offset) {
        Ok(()) if ChunkId::of(chunk) == p.id => Ok(chunk),
        Ok(()) => Err(changed()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(changed()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}
