//! gc's placement of index sections into dedup domains (format-spec sections 6 and 13.4.8):
//! which tenants need which packs named in their domain, the rewrite of index objects per
//! domain (dropping doomed or missing packs, merging a domain's many objects, moving legacy
//! sections into the domains of the tenants that reference them, and naming in a tenant's
//! domain every pack holding a chunk its kept manifests reference), and the index objects of
//! repacked packs.
//!
//! Owns these decisions and writes. Every rewrite creates all its new objects before deleting
//! any old one; a section only ever leaves a tenant's domain when its pack is doomed or gone,
//! and leaves the legacy domain only once some tenant's domain names it. Must not touch packs,
//! manifests or the gc state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures::{StreamExt, TryStreamExt};

use crate::backend::Key;
use crate::error::Result;
use crate::format::index::IndexObject;
use crate::format::layout::{self, IndexDomain};
use crate::format::manifest::{ChunkRef, Manifest};
use crate::format::pack::BlobEntry;
use crate::id::{ChunkId, IdMap, IdSet, PackId, TenantId};
use crate::store::{READ_CONCURRENCY, Store};
use crate::write::packer;

/// A domain's objects are merged when there are more than this many.
pub const MAX_INDEX_OBJECTS: usize = 16;
/// Entries per index object gc writes.
const ENTRIES_PER_INDEX: usize = 1 << 20;
/// The level of the objects gc writes into a tenant's domain.
const GC_LEVEL: u8 = 1;

/// A domain, levels aside: `None` is the legacy domain.
type Domain = Option<TenantId>;

/// The chunks each tenant's manifests reference.
pub type Owned = BTreeMap<TenantId, IdSet<ChunkId>>;

/// The chunks each tenant of `manifests` references.
pub fn owned<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> Owned {
    let mut out = Owned::new();
    for m in manifests {
        let set = out.entry(m.tenant).or_default();
        let refs = m.added.iter().flat_map(|f| f.chunks.iter());
        set.extend(refs.flat_map(ChunkRef::stored_ids));
    }
    out
}

/// The tenants whose chunks `entries` hold.
fn owners(owned: &Owned, entries: &[BlobEntry]) -> BTreeSet<TenantId> {
    owned
        .iter()
        .filter(|(_, cs)| entries.iter().any(|e| cs.contains(&e.chunk)))
        .map(|(t, _)| *t)
        .collect()
}

/// Creates the index objects naming new `packs` (repacked blobs): each pack in the domain of
/// every tenant whose chunks it holds, in the legacy domain when none does. Returns their keys
/// and bytes.
pub async fn create_for_owners(
    store: &Store,
    packs: &[(PackId, Vec<BlobEntry>)],
    owned: &Owned,
) -> Result<(Vec<Key>, u64)> {
    let mut by_domain: BTreeMap<Domain, Vec<(PackId, Vec<BlobEntry>)>> = BTreeMap::new();
    for (p, es) in packs {
        let ts = owners(owned, es);
        if ts.is_empty() {
            by_domain.entry(None).or_default().push((*p, es.clone()));
        }
        for t in ts {
            by_domain.entry(Some(t)).or_default().push((*p, es.clone()));
        }
    }
    let (mut keys, mut bytes) = (Vec::new(), 0);
    for (d, sections) in by_domain {
        let (k, b) = write_all(store, d, sections).await?;
        keys.extend(k);
        bytes += b;
    }
    Ok((keys, bytes))
}

/// Index objects rewritten: how many were deleted and written.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexRewrite {
    pub deleted: usize,
    pub written: usize,
    pub bytes_freed: u64,
}

/// What each domain should name, and what it names now.
#[derive(Default)]
struct DomainPlan<'a> {
    /// Keys of the domain's objects.
    keys: Vec<&'a Key>,
    /// Sections of packs that exist and are not doomed, one per pack.
    want: BTreeMap<PackId, &'a Vec<BlobEntry>>,
    /// Packs added to the domain by this rewrite.
    added: BTreeSet<PackId>,
    /// Whether the domain's objects must be rewritten whole.
    rewrite: bool,
}

/// Rewrites index objects per domain (see the module doc): a domain naming a pack in `gone` or
/// one that does not exist, or holding more than [`MAX_INDEX_OBJECTS`] objects, is rewritten
/// whole; legacy sections move to the domains of the tenants of `owned` needing them; a tenant
/// whose domain lacks a pack holding one of its chunks gets one more object naming it. New
/// objects are all created before any old one is deleted.
pub async fn rewrite_indexes(
    store: &Store,
    indexes: &BTreeMap<Key, (u64, IndexObject)>,
    packs: &IdMap<PackId, u64>,
    gone: &BTreeSet<PackId>,
    owned: &Owned,
) -> Result<IndexRewrite> {
    apply(store, indexes, plan(indexes, packs, gone, owned)).await
}

/// Whether [`rewrite_indexes`] with these arguments would write or delete any index object.
pub fn rewrite_needed(
    indexes: &BTreeMap<Key, (u64, IndexObject)>,
    packs: &IdMap<PackId, u64>,
    owned: &Owned,
) -> bool {
    let plans = plan(indexes, packs, &BTreeSet::new(), owned);
    plans.values().any(|p| p.rewrite || !p.added.is_empty())
}

/// What [`rewrite_indexes`] writes, per domain.
fn plan<'a>(
    indexes: &'a BTreeMap<Key, (u64, IndexObject)>,
    packs: &IdMap<PackId, u64>,
    gone: &BTreeSet<PackId>,
    owned: &Owned,
) -> BTreeMap<Domain, DomainPlan<'a>> {
    let stale = |p: &PackId| gone.contains(p) || !packs.contains_key(p);
    let mut plans: BTreeMap<Domain, DomainPlan> = BTreeMap::new();
    let mut home: IdMap<ChunkId, (PackId, &Vec<BlobEntry>)> = IdMap::default();
    for (k, (_, o)) in indexes {
        let Some((d, _)) = layout::parse_index_key(k) else {
            continue;
        };
        let plan = plans.entry(d.tenant()).or_default();
        plan.keys.push(k);
        for (p, es) in &o.packs {
            if stale(p) {
                plan.rewrite = true;
                continue;
            }
            plan.want.entry(*p).or_insert(es);
            for e in es {
                home.entry(e.chunk).or_insert((*p, es));
            }
        }
    }
    for plan in plans.values_mut() {
        plan.rewrite |= plan.keys.len() > MAX_INDEX_OBJECTS;
    }
    cover(&mut plans, owned, &home);
    let named: IdSet<PackId> = plans
        .iter()
        .filter(|(d, _)| d.is_some())
        .flat_map(|(_, p)| p.want.keys().copied())
        .collect();
    if let Some(legacy) = plans.get_mut(&None) {
        let before = legacy.want.len();
        legacy.want.retain(|p, _| !named.contains(p));
        legacy.rewrite |= legacy.want.len() != before;
    }
    plans
}

/// Adds to each tenant's domain the home pack of every chunk it owns that the domain does not
/// name yet.
fn cover<'a>(
    plans: &mut BTreeMap<Domain, DomainPlan<'a>>,
    owned: &Owned,
    home: &IdMap<ChunkId, (PackId, &'a Vec<BlobEntry>)>,
) {
    for (t, chunks) in owned {
        let plan = plans.entry(Some(*t)).or_default();
        let mut have: IdSet<ChunkId> = plan
            .want
            .values()
            .flat_map(|es| es.iter().map(|e| e.chunk))
            .collect();
        for c in chunks {
            if have.contains(c) {
                continue;
            }
            let Some((p, es)) = home.get(c) else { continue };
            plan.want.insert(*p, es);
            plan.added.insert(*p);
            have.extend(es.iter().map(|e| e.chunk));
        }
    }
}

/// Writes what `plans` says, then deletes the objects replaced.
async fn apply(
    store: &Store,
    indexes: &BTreeMap<Key, (u64, IndexObject)>,
    plans: BTreeMap<Domain, DomainPlan<'_>>,
) -> Result<IndexRewrite> {
    let mut out = IndexRewrite::default();
    let mut replaced: Vec<Key> = Vec::new();
    let mut writes = Vec::new();
    for (d, plan) in plans {
        let sections: Vec<(PackId, Vec<BlobEntry>)> = if plan.rewrite {
            replaced.extend(plan.keys.iter().map(|k| (*k).clone()));
            plan.want
                .iter()
                .map(|(p, es)| (*p, (*es).clone()))
                .collect()
        } else {
            let added = plan.added.iter();
            added.map(|p| (*p, plan.want[p].clone())).collect()
        };
        writes.push(write_all(store, d, sections));
    }
    // Domains are independent: their objects are created concurrently, and every one exists
    // before any object they replace is deleted.
    let outputs: HashSet<Key> = futures::stream::iter(writes)
        .buffer_unordered(READ_CONCURRENCY)
        .try_fold(HashSet::new(), |mut all, (keys, _)| async move {
            all.extend(keys);
            Ok(all)
        })
        .await?;
    out.written = outputs.len();
    let gone: Vec<Key> = replaced
        .into_iter()
        .filter(|k| !outputs.contains(k))
        .collect();
    crate::backend::delete_batched(store.backend().as_ref(), &gone, |_| {}).await?;
    out.deleted = gone.len();
    out.bytes_freed = gone.iter().map(|k| indexes[k].0).sum();
    Ok(out)
}

/// Creates objects of about [`ENTRIES_PER_INDEX`] entries naming `sections` in domain `d`.
async fn write_all(
    store: &Store,
    d: Domain,
    sections: Vec<(PackId, Vec<BlobEntry>)>,
) -> Result<(Vec<Key>, u64)> {
    let domain = d.map_or(IndexDomain::Legacy, |t| IndexDomain::Tenant(t, GC_LEVEL));
    let (mut keys, mut bytes) = (Vec::new(), 0);
    let mut current = Vec::new();
    let mut entries = 0;
    let last = sections.len();
    for (i, (p, es)) in sections.into_iter().enumerate() {
        entries += es.len();
        current.push((p, es));
        if entries >= ENTRIES_PER_INDEX || i + 1 == last {
            let created =
                packer::create_index(store.backend(), domain, std::mem::take(&mut current)).await?;
            keys.push(created.key);
            bytes += created.len;
            entries = 0;
        }
    }
    Ok((keys, bytes))
}
