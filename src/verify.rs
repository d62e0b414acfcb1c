//! `verify`: checks that a store is whole. Every manifest decodes and every chunk it names
//! resolves through an index object to a pack that exists and whose own table lists the chunk at
//! that place; with `read_data`, every pack is read in full, re-hashed against its key, and every
//! blob is decompressed and re-hashed.
//!
//! Reports every problem, not just the first, each with the key it is about. Unreferenced packs,
//! and index entries naming packs that do not exist, are warnings (a crashed writer or gc leaves
//! them; gc removes them), not errors; a manifest chunk that resolves to no existing pack is an
//! error. A manifest whose `prev_lsn` names a missing manifest is an error naming that LSN,
//! unless it lies below its timeline's newest base: then it is a *superseded* manifest (a late
//! create of a checkpoint retention dropped, which the next gc removes) and it and its chunks
//! are warnings. `subset` (N of M) reads only the packs of one deterministic slice.
//! Must not modify the store.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use crate::backend::{BackendExt, Key, ObjectMeta};
use crate::error::{Error, Result};
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::format::pack::{self, BlobEntry};
use crate::id::{ChunkId, IdMap, IdSet, Lsn, PackId, TenantId, TimelineId};
use crate::progress::DynProgress;
use crate::store::chunk_index::ChunkIndex;
use crate::store::{READ_CONCURRENCY, Store};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data a checkpoint needs is missing or wrong.
    Error,
    /// Something is stored that nothing needs.
    Warning,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Whether the store is damaged (error) or merely untidy (warning).
    pub severity: Severity,
    /// The object the finding is about.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Manifests checked.
    pub manifests: usize,
    /// Index objects checked.
    pub index_objects: usize,
    /// Packs listed.
    pub packs: usize,
    /// Distinct chunks the manifests reference.
    pub chunks_referenced: usize,
    /// Packs whose data was read (with `read_data` or a subset).
    pub packs_read: usize,
    /// Blobs decoded and re-hashed.
    pub blobs_checked: usize,
    /// Every problem found, errors and warnings.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Number of errors (not warnings).
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    fn error(&mut self, key: impl ToString, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, key: impl ToString, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Options of a verify run.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Read every pack in full and re-hash every blob.
    pub read_data: bool,
    /// With `read_data`, read only slice N (1-based) of M: the packs whose id, as a number,
    /// is N-1 modulo M.
    pub subset: Option<(u64, u64)>,
}

/// Whether pack `id` is in slice `n` (1-based) of `m`.
pub fn in_subset(id: &PackId, (n, m): (u64, u64)) -> bool {
    let head = u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
    head % m.max(1) == n.saturating_sub(1)
}

/// Checks the whole store.
pub async fn verify(
    store: &Store,
    opts: VerifyOptions,
    progress: DynProgress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let all = store.list(&crate::backend::Prefix::all()).await?;
    let packs: IdMap<PackId, ObjectMeta> = all
        .iter()
        .filter_map(|m| layout::parse_pack_key(&m.key).map(|id| (id, m.clone())))
        .collect();
    report.packs = packs.len();
    for m in all.iter().filter(|m| is_foreign(&m.key)) {
        report.warning(&m.key, "object is not part of the layercas layout");
    }

    // Listed after the packs, so every dictionary a listed pack's blobs name is found.
    if let Err(e) = store.load_dictionaries().await {
        report.error(layout::prefix(layout::DICTS).as_str(), e.to_string());
    }
    let (index, by_pack) = check_indexes(store, &all, &packs, &mut report).await;
    let referenced = check_manifests(store, &all, &index, &mut report).await;
    report.chunks_referenced = referenced.len();
    check_pack_tables(store, &packs, &by_pack, opts, &mut report, progress).await;

    let referenced_packs: IdSet<PackId> = referenced
        .iter()
        .filter_map(|c| index.get(c))
        .map(|l| l.pack)
        .collect();
    for id in packs.keys().filter(|p| !by_pack.contains_key(*p)) {
        report.warning(
            layout::pack_key(id),
            "pack is in no index object (left by an interrupted writer?)",
        );
    }
    for id in by_pack
        .keys()
        .filter(|p| packs.contains_key(*p) && !referenced_packs.contains(*p))
    {
        report.warning(
            layout::pack_key(id),
            "no manifest references any chunk of this pack",
        );
    }
    Ok(report)
}

fn is_foreign(key: &Key) -> bool {
    !layout::is_layout_key(key) && !key.as_str().starts_with(layout::MANIFESTS)
}

/// Reads every index object; returns the chunk index and, per pack, the entries the indexes give.
async fn check_indexes(
    store: &Store,
    all: &[ObjectMeta],
    packs: &IdMap<PackId, ObjectMeta>,
    report: &mut VerifyReport,
) -> (ChunkIndex, BTreeMap<PackId, Vec<BlobEntry>>) {
    let keys: Vec<&Key> = all
        .iter()
        .map(|m| &m.key)
        .filter(|k| layout::parse_index_key(k).is_some())
        .collect();
    report.index_objects = keys.len();
    let results: Vec<(Key, Result<IndexObject>)> = futures::stream::iter(
        keys.into_iter()
            .map(|k| async move { (k.clone(), store.read_index(k).await) }),
    )
    .buffer_unordered(READ_CONCURRENCY)
    .collect()
    .await;
    let mut index = ChunkIndex::new();
    let mut by_pack = BTreeMap::new();
    for (key, result) in results {
        match result {
            Ok(obj) => {
                for (pack, entries) in obj.packs {
                    if !packs.contains_key(&pack) {
                        report.warning(
                            &key,
                            format!("orphaned index entries: pack {pack} does not exist"),
                        );
                        continue;
                    }
                    index.add_pack(pack, &entries);
                    by_pack.insert(pack, entries);
                }
            }
            Err(e) => report.error(&key, e.to_string()),
        }
    }
    (index, by_pack)
}

/// Decodes every manifest, checks its place in its timeline's `prev_lsn` chain and resolves
/// every chunk it names; returns the chunks referenced.
async fn check_manifests(
    store: &Store,
    all: &[ObjectMeta],
    index: &ChunkIndex,
    report: &mut VerifyReport,
) -> IdSet<ChunkId> {
    let mut refs = store.list_manifests_from(all);
    refs.sort_by_key(|r| (r.tenant, r.timeline, r.lsn));
    report.manifests = refs.len();
    let results: Vec<_> = futures::stream::iter(
        refs.iter()
            .map(|r| async move { (r, store.read_manifest(r).await) }),
    )
    .buffered(READ_CONCURRENCY)
    .collect()
    .await;
    let chains = Chains::of(&results);
    let mut referenced = IdSet::default();
    let mut prev: Option<&crate::store::ManifestRef> = None;
    for (r, result) in &results {
        let m = match result {
            Ok(m) => m,
            Err(e) => {
                report.error(&r.key, e.to_string());
                continue;
            }
        };
        let same_timeline = prev.filter(|p| (p.tenant, p.timeline) == (r.tenant, r.timeline));
        prev = Some(r);
        let chunks = match chains.check(m, same_timeline.map(|p| p.lsn)) {
            ChainCheck::Ok => Severity::Error,
            ChainCheck::Off(why) => {
                report.warning(&r.key, why);
                Severity::Error
            }
            ChainCheck::Superseded(why) => {
                report.warning(&r.key, why);
                Severity::Warning
            }
            ChainCheck::Broken(why) => {
                report.error(&r.key, why);
                Severity::Error
            }
        };
        check_chunks(r, m, index, chunks, &mut referenced, report);
    }
    referenced
}

/// Resolves every chunk `m` names, reporting problems at `severity`.
fn check_chunks(
    r: &crate::store::ManifestRef,
    m: &crate::format::manifest::Manifest,
    index: &ChunkIndex,
    severity: Severity,
    referenced: &mut IdSet<ChunkId>,
    report: &mut VerifyReport,
) {
    for f in &m.added {
        for c in &f.chunks {
            referenced.insert(c.id);
            let message = match index.get(&c.id) {
                None => format!(
                    "file {:?}: chunk {} is in no existing pack of any index object",
                    f.name, c.id
                ),
                Some(l) if l.raw_len != c.len => format!(
                    "file {:?}: chunk {} is {} bytes in the index, {} in the manifest",
                    f.name, c.id, l.raw_len, c.len
                ),
                Some(_) => continue,
            };
            report.problems.push(Problem {
                severity,
                key: r.key.to_string(),
                message,
            });
        }
    }
}

/// The listed LSNs and newest base of every timeline, for checking `prev_lsn` chains.
struct Chains {
    listed: HashSet<(TenantId, TimelineId, Lsn)>,
    newest_base: HashMap<(TenantId, TimelineId), Lsn>,
    /// Per timeline, the bases recording checkpoints gc dropped (`dropped_from`, base LSN).
    dropped: HashMap<(TenantId, TimelineId), Vec<(Lsn, Lsn)>>,
}

/// Where a manifest stands in its timeline's chain.
enum ChainCheck {
    Ok,
    /// Its predecessor exists but is not the preceding manifest (a warning).
    Off(String),
    /// Its predecessor is missing and it lies below the newest base (a warning).
    Superseded(String),
    /// Its predecessor is missing at or above the newest base (an error).
    Broken(String),
}

impl Chains {
    fn of(
        results: &[(
            &crate::store::ManifestRef,
            Result<crate::format::manifest::Manifest>,
        )],
    ) -> Chains {
        let mut out = Chains {
            listed: results
                .iter()
                .map(|(r, _)| (r.tenant, r.timeline, r.lsn))
                .collect(),
            newest_base: HashMap::new(),
            dropped: HashMap::new(),
        };
        for m in results
            .iter()
            .filter_map(|(_, m)| m.as_ref().ok())
            .filter(|m| m.base)
        {
            let b = out
                .newest_base
                .entry((m.tenant, m.timeline))
                .or_insert(m.lsn);
            *b = (*b).max(m.lsn);
            if let Some(from) = m.dropped_from {
                let at = out.dropped.entry((m.tenant, m.timeline)).or_default();
                at.push((from, m.lsn));
            }
        }
        out
    }

    fn check(&self, m: &crate::format::manifest::Manifest, preceding: Option<Lsn>) -> ChainCheck {
        let ranges = self.dropped.get(&(m.tenant, m.timeline));
        if let Some((_, base)) = ranges
            .into_iter()
            .flatten()
            .find(|(from, to)| *from <= m.lsn && m.lsn < *to)
        {
            return ChainCheck::Superseded(format!(
                "superseded manifest, a late create of a checkpoint gc dropped (the base at \
                 {base} records it); the next gc removes it"
            ));
        }
        let Some(p) = m.prev_lsn else {
            return ChainCheck::Ok;
        };
        if !m.base && !self.listed.contains(&(m.tenant, m.timeline, p)) {
            let base = self.newest_base.get(&(m.tenant, m.timeline));
            if base.is_some_and(|b| m.lsn < *b) {
                return ChainCheck::Superseded(format!(
                    "superseded manifest, probably a late create of a checkpoint retention \
                     dropped (its predecessor at {p} is gone, a base at {} is newer); the next \
                     gc removes it",
                    base.expect("some")
                ));
            }
            return ChainCheck::Broken(format!(
                "manifest chain broken: its predecessor, the manifest at LSN {p}, is missing"
            ));
        }
        if Some(p) != preceding {
            return ChainCheck::Off(format!(
                "previous lsn {:?} is not the preceding manifest",
                Some(p.to_string())
            ));
        }
        ChainCheck::Ok
    }
}

/// Checks each indexed pack exists and agrees with the index; with `read_data`, re-hashes it all.
async fn check_pack_tables(
    store: &Store,
    packs: &IdMap<PackId, ObjectMeta>,
    by_pack: &BTreeMap<PackId, Vec<BlobEntry>>,
    opts: VerifyOptions,
    report: &mut VerifyReport,
    progress: DynProgress,
) {
    let mut targets: Vec<(PackId, u64)> = by_pack
        .keys()
        .filter_map(|id| packs.get(id).map(|m| (*id, m.size)))
        .collect();
    if opts.read_data {
        // Unindexed packs are read too: their damage matters once gc or a writer adopts them.
        targets.extend(
            packs
                .iter()
                .filter(|(id, _)| !by_pack.contains_key(*id))
                .map(|(id, m)| (*id, m.size)),
        );
    }
    if let Some(subset) = opts.subset.filter(|_| opts.read_data) {
        targets.retain(|(id, _)| in_subset(id, subset));
    }
    progress.set_total(if opts.read_data {
        targets.iter().map(|t| t.1).sum()
    } else {
        targets.len() as u64
    });
    let results: Vec<_> = futures::stream::iter(targets.into_iter().map(|(id, size)| {
        let progress = progress.clone();
        async move {
            let r = check_pack(store, id, size, opts.read_data).await;
            progress.advance(if opts.read_data { size } else { 1 });
            (id, r)
        }
    }))
    .buffer_unordered(READ_CONCURRENCY / 2)
    .collect()
    .await;
    for (id, result) in results {
        let key = layout::pack_key(&id);
        match result {
            Err(e) => report.error(&key, e.to_string()),
            Ok(checked) => {
                if let Some(indexed) = by_pack.get(&id) {
                    if *indexed != checked.table {
                        report.error(&key, "pack table differs from what the index object says");
                    }
                }
                report.packs_read += opts.read_data as usize;
                report.blobs_checked += checked.blobs_checked;
                for (chunk, why) in checked.bad_blobs {
                    report.error(&key, format!("chunk {chunk}: {why}"));
                }
            }
        }
    }
}

struct PackCheck {
    table: Vec<BlobEntry>,
    blobs_checked: usize,
    bad_blobs: Vec<(ChunkId, String)>,
}

/// Reads a pack's table (from its tail) or, with `read_data`, the whole pack.
async fn check_pack(store: &Store, id: PackId, size: u64, read_data: bool) -> Result<PackCheck> {
    if !read_data {
        return Ok(PackCheck {
            table: store.read_pack_table(id, size).await?,
            blobs_checked: 0,
            bad_blobs: Vec::new(),
        });
    }
    let key = layout::pack_key(&id);
    let corrupt = move |e| Error::corrupt(layout::pack_key(&id), e);
    let bytes = store
        .backend()
        .get_bytes(&key, crate::format::config::MAX_PACK_TARGET * 2)
        .await?;
    tokio::task::spawn_blocking(move || {
        let table = pack::decode_pack_table(&bytes).map_err(corrupt)?;
        let (offsets, _) = pack::offsets(&table);
        let mut bad = Vec::new();
        for (e, off) in table.iter().zip(offsets) {
            let data = &bytes[off as usize..(off + e.stored_len as u64) as usize];
            if let Err(why) = pack::decode_blob(e, data) {
                bad.push((e.chunk, why.reason));
            }
        }
        // A damaged blob is named above; damage elsewhere (the table's own bytes are checksummed)
        // still shows as a hash mismatch.
        if bad.is_empty() && PackId::of(&bytes) != id {
            return Err(corrupt(crate::DecodeError::new(
                "pack",
                "content does not hash to its key",
            )));
        }
        Ok(PackCheck {
            blobs_checked: table.len(),
            table,
            bad_blobs: bad,
        })
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("verify worker failed: {e}")))?
}
