//! The read side of a restore: every needed chunk grouped by pack and coalesced into ranged reads,
//! the reads fetched in parallel, each blob decoded, re-hashed and written into the temporary
//! files that need it, and each file checked against its hash once complete.
//!
//! Delta blobs (format-spec 5.2) need their base's bytes. The deltas are cut into groups whose
//! bases add up to at most [`BASE_BUDGET`]. Whole blobs are read first, with the first group's
//! bases, which are kept in memory; then that group's deltas are decoded against them and the
//! bases dropped; each further group reads its bases, then decodes its deltas.
//!
//! A pack that is gone when it is read (gc repacked it after the plan was made) is not an error
//! at once: those reads are planned again from a freshly loaded index and retried once.
//!
//! Owns reading packs for a restore. Must not create, rename or remove anything but the
//! temporary files of its targets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{DecodeError, Error, Result};
use crate::format::pack::{self, Compression};
use crate::format::{delta, layout};
use crate::id::{ChunkId, PackId};
use crate::progress::DynProgress;
use crate::restore::dest::{Target, hash_reader};
use crate::store::Store;
use crate::store::chunk_index::{ChunkIndex, Location};

/// Ranged reads in flight at once.
pub(crate) const RESTORE_CONCURRENCY: usize = 4;
/// Blobs closer than this are fetched in one read (the gap is downloaded and discarded).
const COALESCE_GAP: u64 = 256 << 10;
/// Longest single ranged read.
const MAX_RANGE: u64 = 20 << 20;
/// Raw bytes of the bases held in memory at once.
const BASE_BUDGET: u64 = 64 << 20;

/// The bytes of the bases of the delta group being restored.
type Bases = std::sync::Mutex<HashMap<ChunkId, Arc<Vec<u8>>>>;

/// One chunk needed, and every place it goes.
#[derive(Clone)]
pub(crate) struct Need {
    chunk: ChunkId,
    loc: Location,
    /// (target index, offset in that file)
    dests: Vec<(usize, u64)>,
    /// For a delta blob: the chunk it decodes to and its base.
    delta: Option<(ChunkId, ChunkId)>,
    /// Whether the decoded bytes are a base the next stage needs.
    keep: bool,
}

/// The reads of a restore, as stages run one after another (see the module doc).
pub(crate) struct ReadPlan {
    pub(crate) stages: Vec<Vec<RangeRead>>,
}

/// One ranged read of a pack and the blobs it covers.
pub(crate) struct RangeRead {
    pub(crate) pack: PackId,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) blobs: Vec<Need>,
}

/// Where `chunk` of `file` is according to `index`, checked against the manifest's length.
fn locate(index: &ChunkIndex, chunk: &ChunkId, len: u32, file: &str) -> Result<Location> {
    let loc = index.get(chunk).ok_or_else(|| {
        Error::Integrity(format!(
            "file {file:?}: chunk {chunk} is in no index object (missing data)"
        ))
    })?;
    if loc.raw_len != len {
        return Err(Error::Integrity(format!(
            "file {file:?}: chunk {chunk} is {} bytes in pack {} but the manifest says {len}",
            loc.raw_len, loc.pack
        )));
    }
    Ok(loc)
}

/// Where base `b` of a delta `file` needs is: a whole blob (format-spec 5.2).
fn locate_base(index: &ChunkIndex, b: &ChunkId, file: &str) -> Result<Location> {
    match index.get(b) {
        Some(loc) if loc.compression != Compression::Delta => Ok(loc),
        Some(_) => Err(Error::Integrity(format!(
            "file {file:?}: base {b} of a delta is itself indexed as a delta"
        ))),
        None => Err(Error::Integrity(format!(
            "file {file:?}: base {b} of a delta is in no index object (missing data)"
        ))),
    }
}

/// Every blob the targets need, each once with all its destinations, as ranged reads in stages.
pub(crate) fn plan_reads(index: &ChunkIndex, targets: &[Target]) -> Result<ReadPlan> {
    let mut needs: HashMap<ChunkId, Need> = HashMap::new();
    for (ti, t) in targets.iter().enumerate() {
        let mut offset = 0u64;
        for c in &t.entry.chunks {
            let blob = c.blob_id();
            let loc = locate(index, &blob, c.len, &t.entry.name)?;
            needs
                .entry(blob)
                .or_insert_with(|| Need {
                    chunk: blob,
                    loc,
                    dests: Vec::new(),
                    delta: c.base.map(|b| (c.id, b)),
                    keep: false,
                })
                .dests
                .push((ti, offset));
            t.remaining.fetch_add(1, Ordering::Relaxed);
            offset += c.len as u64;
        }
    }
    let (mut deltas, whole): (Vec<Need>, Vec<Need>) =
        needs.into_values().partition(|n| n.delta.is_some());
    deltas.sort_by_key(|n| (n.loc.pack, n.loc.offset));
    let mut groups = delta_groups(index, targets, deltas)?.into_iter();
    // The first group's bases are read with the whole blobs (a base some file also needs whole
    // is read once), so a restore whose bases fit the budget runs in two stages.
    let mut first: HashMap<ChunkId, Need> = whole.into_iter().map(|n| (n.chunk, n)).collect();
    let mut stages = Vec::new();
    if let Some((bases, deltas)) = groups.next() {
        for b in bases {
            first.entry(b.chunk).or_insert(b).keep = true;
        }
        stages.push(coalesce(first.into_values()));
        stages.push(coalesce(deltas));
    } else {
        stages.push(coalesce(first.into_values()));
    }
    for (bases, deltas) in groups {
        stages.push(coalesce(bases));
        stages.push(coalesce(deltas));
    }
    Ok(ReadPlan { stages })
}

/// `deltas` in groups whose bases add up to at most [`BASE_BUDGET`]: each group's bases (as
/// needs to keep) and its deltas.
fn delta_groups(
    index: &ChunkIndex,
    targets: &[Target],
    deltas: Vec<Need>,
) -> Result<Vec<(Vec<Need>, Vec<Need>)>> {
    let mut out = Vec::new();
    let (mut group, mut bases, mut held) = (Vec::new(), HashMap::new(), 0u64);
    for n in deltas {
        let (_, b) = n.delta.expect("a delta");
        if !bases.contains_key(&b) {
            let loc = locate_base(index, &b, file_of(&n, targets))?;
            if held + loc.raw_len as u64 > BASE_BUDGET && !group.is_empty() {
                let done = std::mem::take(&mut bases).into_values().collect();
                out.push((done, std::mem::take(&mut group)));
                held = 0;
            }
            held += loc.raw_len as u64;
            let keep = Need {
                chunk: b,
                loc,
                dests: Vec::new(),
                delta: None,
                keep: true,
            };
            bases.insert(b, keep);
        }
        group.push(n);
    }
    if !group.is_empty() {
        out.push((bases.into_values().collect(), group));
    }
    Ok(out)
}

/// The file a need is for, for messages ("a delta's base" for a base).
fn file_of<'a>(need: &Need, targets: &'a [Target]) -> &'a str {
    need.dests.first().map_or("(a delta's base)", |&(ti, _)| {
        targets[ti].entry.name.as_str()
    })
}

/// Groups needs by pack and merges neighbours into ranged reads.
fn coalesce(needs: impl IntoIterator<Item = Need>) -> Vec<RangeRead> {
    let mut by_pack: BTreeMap<PackId, Vec<Need>> = BTreeMap::new();
    for need in needs {
        by_pack.entry(need.loc.pack).or_default().push(need);
    }
    let mut ranges: Vec<RangeRead> = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|n| n.loc.offset);
        for need in blobs {
            let (start, end) = (
                need.loc.offset,
                need.loc.offset + need.loc.stored_len as u64,
            );
            match ranges.last_mut() {
                Some(r)
                    if r.pack == pack
                        && start <= r.end + COALESCE_GAP
                        && end - r.start <= MAX_RANGE =>
                {
                    r.end = r.end.max(end);
                    r.blobs.push(need);
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
    ranges
}

/// What the reads of a restore added up to.
#[derive(Default)]
pub(crate) struct ReadStats {
    pub(crate) ranges: usize,
    pub(crate) chunks: usize,
    pub(crate) bytes: u64,
}

impl ReadStats {
    pub(crate) fn of<'a>(ranges: impl IntoIterator<Item = &'a RangeRead>) -> ReadStats {
        let mut s = ReadStats::default();
        for r in ranges {
            s.ranges += 1;
            s.chunks += r.blobs.len();
            s.bytes += r.end - r.start;
        }
        s
    }

    fn add(&mut self, o: &ReadStats) {
        self.ranges += o.ranges;
        self.chunks += o.chunks;
        self.bytes += o.bytes;
    }
}

/// Runs the stages of `plan` in order ([`fetch_and_write`] each); returns what retries read.
pub(crate) async fn fetch_and_write_all(
    store: &Store,
    plan: ReadPlan,
    targets: &Arc<Vec<Target>>,
    progress: &DynProgress,
) -> Result<ReadStats> {
    let bases: Arc<Bases> = Arc::default();
    let mut retried = ReadStats::default();
    for stage in plan.stages {
        let decodes_deltas = stage
            .iter()
            .flat_map(|r| &r.blobs)
            .any(|n| n.delta.is_some());
        let r = fetch_and_write(store, stage, targets, progress, &bases).await?;
        retried.add(&r);
        if decodes_deltas {
            bases.lock().expect("bases lock").clear();
        }
    }
    Ok(retried)
}

/// Fetches and writes every range; the reads of packs found gone are planned again from a
/// reloaded index and retried once. Returns what the retry read.
async fn fetch_and_write(
    store: &Store,
    ranges: Vec<RangeRead>,
    targets: &Arc<Vec<Target>>,
    progress: &DynProgress,
    bases: &Arc<Bases>,
) -> Result<ReadStats> {
    let gone = fetch_ranges(store, ranges, targets, progress, bases).await?;
    if gone.is_empty() {
        return Ok(ReadStats::default());
    }
    tracing::info!(
        packs = gone.len(),
        "packs gone during the restore (repacked by gc?); reloading the index"
    );
    let mut index = store.load_index().await?;
    // An index object may still name a pack gc has just deleted; never plan a read of it again.
    gone.iter().for_each(|r| index.drop_pack(&r.pack));
    let mut needs = Vec::new();
    for r in gone {
        for mut need in r.blobs {
            let name = file_of(&need, targets);
            need.loc = locate(&index, &need.chunk, need.loc.raw_len, name)?;
            needs.push(need);
        }
    }
    let ranges = coalesce(needs);
    let stats = ReadStats::of(&ranges);
    if let Some(r) = fetch_ranges(store, ranges, targets, progress, bases)
        .await?
        .first()
    {
        let need = &r.blobs[0];
        return Err(Error::Integrity(format!(
            "pack {} for chunk {} of file {:?} is gone, also after reloading the index",
            r.pack,
            need.chunk,
            file_of(need, targets)
        )));
    }
    Ok(stats)
}

/// Fetches `ranges` and writes their chunks; returns the ranges whose pack was not found.
async fn fetch_ranges(
    store: &Store,
    ranges: Vec<RangeRead>,
    targets: &Arc<Vec<Target>>,
    progress: &DynProgress,
    bases: &Arc<Bases>,
) -> Result<Vec<RangeRead>> {
    let results: Vec<Option<RangeRead>> = futures::stream::iter(ranges.into_iter().map(|r| {
        let (targets, progress, bases) = (targets.clone(), progress.clone(), bases.clone());
        async move {
            let key = layout::pack_key(&r.pack);
            let bytes = match store.backend().get_range(&key, r.start..r.end).await {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => return Ok(Some(r)),
                Err(e) => {
                    let first = &r.blobs[0];
                    return Err(Error::Integrity(format!(
                        "reading pack {} for chunk {} of file {:?}: {e}",
                        r.pack,
                        first.chunk,
                        file_of(first, &targets)
                    )));
                }
            };
            let write = move || write_range(&r, &bytes, (&targets, &bases), &progress);
            tokio::task::spawn_blocking(write)
                .await
                .map_err(|e| Error::InvalidInput(format!("restore worker failed: {e}")))??;
            Ok(None)
        }
    }))
    .buffer_unordered(RESTORE_CONCURRENCY)
    .try_collect()
    .await?;
    Ok(results.into_iter().flatten().collect())
}

/// Decodes every blob of a fetched range and writes it wherever it goes.
fn write_range(
    r: &RangeRead,
    bytes: &Bytes,
    (targets, bases): (&[Target], &Bases),
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
        let raw = decode(need, data, bases).map_err(|e| {
            Error::Integrity(format!(
                "chunk {} of file {:?} in pack {} is corrupt: {}",
                need.chunk,
                file_of(need, targets),
                r.pack,
                e.reason
            ))
        })?;
        let raw = Arc::new(raw);
        if need.keep {
            // A base for a later stage's deltas (and perhaps a file's chunk as well).
            bases
                .lock()
                .expect("bases lock")
                .insert(need.chunk, raw.clone());
        }
        for &(ti, offset) in &need.dests {
            let t = &targets[ti];
            t.handle.write_at(t, &raw, offset)?;
            t.stream.feed(offset, &raw);
            progress.advance(raw.len() as u64);
            if t.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                check_file(t)?;
            }
        }
    }
    Ok(())
}

/// The raw bytes of `need`'s blob `data`; a delta is decoded against its base, which an earlier
/// stage kept in `bases`.
fn decode(need: &Need, data: &[u8], bases: &Bases) -> std::result::Result<Vec<u8>, DecodeError> {
    let entry = need.loc.entry(need.chunk);
    let Some((want, base)) = &need.delta else {
        return pack::decode_blob(&entry, data);
    };
    let raw = bases.lock().expect("bases lock").get(base).cloned();
    let raw = raw.ok_or_else(|| DecodeError::new("delta blob", format!("base {base} not read")))?;
    delta::decode_delta_blob(&entry, data, want, base, &raw)
}

/// Checks a complete temporary file against its hash, computed while it was written or else by
/// reading it back (it is made durable and renamed later, together with the others:
/// [`crate::restore::dest::commit`]).
pub(crate) fn check_file(t: &Target) -> Result<()> {
    t.handle.close();
    let hash = match t.stream.finish(t.entry.size) {
        Some(hash) => hash,
        None => {
            let tmp_path = t.dir.path().join(&t.tmp);
            let file = t.dir.reopen(&t.tmp, t.created)?;
            hash_reader(&file).map_err(|e| Error::io("read back", &tmp_path, e))?
        }
    };
    if hash != t.entry.hash {
        let _ = t.dir.remove(&t.tmp, false);
        return Err(Error::Integrity(format!(
            "file {:?}: reassembled content does not match its recorded hash",
            t.entry.name
        )));
    }
    Ok(())
}
