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
//! are warnings. A manifest naming chunks that only other tenants' index domains name is a
//! warning (readers find them only through their fallback; format-spec section 6). `subset`
//! (N of M) reads only the packs of one deterministic slice.
//! Must not modify the store. Chains are judged in `chains`, packs read in `packs`.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use crate::backend::{Key, ObjectMeta};
use crate::error::Result;
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::format::manifest::ChunkRef;
use crate::format::pack::{BlobEntry, Compression};
use crate::id::{ChunkId, IdMap, IdSet, PackId, TenantId};
use crate::progress::DynProgress;
use crate::store::chunk_index::ChunkIndex;
use crate::store::{READ_CONCURRENCY, Store};

mod chains;
mod packs;

use chains::{ChainCheck, Chains};
use packs::check_pack_tables;

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
    let (index, by_pack, named) = check_indexes(store, &all, &packs, &mut report).await;
    let referenced = check_manifests(store, &all, (&index, &named), &mut report).await;
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

/// Which dedup domains name each chunk (format-spec section 6): `None` is the legacy domain.
#[derive(Default)]
struct Named(IdSet<(Option<TenantId>, ChunkId)>);

impl Named {
    /// Whether `tenant`'s readers find `chunk` without their fallback: their own domain or
    /// the legacy one names it.
    fn at_home(&self, tenant: TenantId, chunk: ChunkId) -> bool {
        self.0.contains(&(Some(tenant), chunk)) || self.0.contains(&(None, chunk))
    }
}

/// Reads every index object; returns the chunk index, per pack the entries the indexes give,
/// and the domains naming each chunk.
async fn check_indexes(
    store: &Store,
    all: &[ObjectMeta],
    packs: &IdMap<PackId, ObjectMeta>,
    report: &mut VerifyReport,
) -> (ChunkIndex, BTreeMap<PackId, Vec<BlobEntry>>, Named) {
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
    let mut named = Named::default();
    for (key, result) in results {
        let domain = layout::parse_index_key(&key).and_then(|(d, _)| d.tenant());
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
                    named.0.extend(entries.iter().map(|e| (domain, e.chunk)));
                    by_pack.insert(pack, entries);
                }
            }
            Err(e) => report.error(&key, e.to_string()),
        }
    }
    (index, by_pack, named)
}

/// Decodes every manifest, checks its place in its timeline's `prev_lsn` chain and resolves
/// every chunk it names; returns the chunks referenced.
async fn check_manifests(
    store: &Store,
    all: &[ObjectMeta],
    (index, named): (&ChunkIndex, &Named),
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
        let away = m
            .added
            .iter()
            .flat_map(|f| f.chunks.iter().flat_map(ChunkRef::stored_ids));
        let away = away.filter(|c| index.contains(c) && !named.at_home(r.tenant, *c));
        if let n @ 1.. = away.count() {
            report.warning(
                &r.key,
                format!(
                    "{n} chunks are named only in other tenants' index domains: restores of this \
                     timeline read every index object to find them (the next gc names them in \
                     tenant {}'s domain)",
                    r.tenant
                ),
            );
        }
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
            referenced.extend(c.stored_ids());
            let as_delta = |b: &ChunkId| format!(" (its delta against base {b})");
            let blob = c.base.as_ref().map_or(String::new(), as_delta);
            let message = match (index.get(&c.blob_id()), c.base.map(|b| (b, index.get(&b)))) {
                (None, _) => format!(
                    "file {:?}: chunk {}{blob} is in no existing pack of any index object",
                    f.name, c.id
                ),
                (Some(l), _) if l.raw_len != c.len => format!(
                    "file {:?}: chunk {}{blob} is {} bytes in the index, {} in the manifest",
                    f.name, c.id, l.raw_len, c.len
                ),
                (_, Some((b, None))) => format!(
                    "file {:?}: base {b} of chunk {} is in no existing pack of any index object",
                    f.name, c.id
                ),
                (_, Some((b, Some(l)))) if l.compression == Compression::Delta => format!(
                    "file {:?}: base {b} of chunk {} is indexed as a delta blob",
                    f.name, c.id
                ),
                _ => continue,
            };
            report.problems.push(Problem {
                severity,
                key: r.key.to_string(),
                message,
            });
        }
    }
}
