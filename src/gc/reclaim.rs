//! Pack reclamation: marking live chunks, choosing packs to delete or repack, copying live blobs
//! into new packs, deciding after the window which condemned packs may really go, and rewriting
//! index objects without them.
//!
//! Owns these computations and the repack writes (packs first, then the index objects that
//! name them, through `gc::domains`). Must not touch manifests or the gc state; where index
//! sections go is `gc::domains`.
//!
//! A damaged pack (shorter than its index says, or a blob failing its check) is never copied
//! from: repack skips it whole with a warning, so the re-mark keeps it while it holds a live
//! chunk no other pack holds (it stays condemned, so writers do not deduplicate against it).
//! Nothing panics on what a pack's bytes say.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::BackendError;
use crate::error::{DecodeError, Error, Result};
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::format::manifest::{ChunkRef, Manifest};
use crate::format::pack::{self, Blob, BlobEntry, PackBuilder};
use crate::id::{ChunkId, IdMap, IdSet, PackId};
use crate::progress::DynProgress;
use crate::store::Store;
use crate::write::packer;

/// Packs smaller than this are consolidated by default ([`ReclaimPlan::consolidate`]).
pub const SMALL_PACK: u64 = 4 << 20;

/// Every blob any of `manifests` needs (chunks, delta blobs and their bases, by the ids they are
/// indexed under): a superset of the blobs of every state they fold to.
pub fn live_chunks<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> IdSet<ChunkId> {
    manifests
        .into_iter()
        .flat_map(|m| m.added.iter())
        .flat_map(|f| f.chunks.iter().flat_map(ChunkRef::stored_ids))
        .collect()
}

/// Index sections per pack (first section seen wins), from every index object.
pub fn sections<'a>(
    indexes: impl IntoIterator<Item = &'a IndexObject>,
) -> BTreeMap<PackId, Vec<BlobEntry>> {
    let mut out = BTreeMap::new();
    for obj in indexes {
        for (p, entries) in &obj.packs {
            out.entry(*p).or_insert_with(|| entries.clone());
        }
    }
    out
}

/// What reclamation will do.
#[derive(Debug, Default, Clone)]
pub struct ReclaimPlan {
    /// Packs with nothing live (or in no index object).
    pub dead: BTreeSet<PackId>,
    /// Packs whose live fraction is below the threshold: their live blobs are copied.
    pub repack: BTreeSet<PackId>,
    /// Per pack to repack, the chunks to copy out of it.
    pub copy: BTreeMap<PackId, BTreeSet<ChunkId>>,
    /// Bytes of the dead and repacked packs, and of the blobs copied.
    pub bytes_released: u64,
    pub bytes_copied: u64,
    /// The packs that stay, with the live chunks placed in them and their live bytes.
    pub kept: BTreeMap<PackId, (BTreeSet<ChunkId>, u64)>,
    /// The order in which packs are copied (every key of `copy`; see [`ReclaimPlan::order_by`]).
    pub order: Vec<PackId>,
    /// Packs were left for a later run (young, or protected by an intent) that would otherwise
    /// have been removed or consolidated.
    pub deferred: bool,
}

impl ReclaimPlan {
    /// Adds every kept pack smaller than `small` and not in `young` to the packs repacked, when
    /// there are at least two: their live blobs are copied into packs of the target size, so at
    /// most one small pack is left and a timeline with many small checkpoints restores in few
    /// requests. `young` packs (written within the window) are left for a later run: a writer
    /// may be deduplicating against them (`deferred` says so when that held a consolidation back).
    pub fn consolidate(
        &mut self,
        packs: &IdMap<PackId, u64>,
        small: u64,
        young: &BTreeSet<PackId>,
    ) {
        let (picked, held_back): (Vec<PackId>, Vec<PackId>) = self
            .kept
            .keys()
            .filter(|p| packs.get(*p).is_some_and(|s| *s < small))
            .copied()
            .partition(|p| !young.contains(p));
        self.deferred |= !held_back.is_empty() && picked.len() + held_back.len() >= 2;
        if picked.len() < 2 {
            return;
        }
        for p in picked {
            let Some((chunks, live_bytes)) = self.kept.remove(&p) else {
                continue;
            };
            self.repack.insert(p);
            self.bytes_released += packs.get(&p).copied().unwrap_or(0);
            self.bytes_copied += live_bytes;
            self.copy.insert(p, chunks);
            self.order.push(p);
        }
    }

    /// Orders the packs to copy by the smallest `rank` of the chunks copied out of them (gc
    /// ranks chunks by the first tenant, timeline and LSN naming them), so that blobs of one
    /// timeline end up side by side in the new packs.
    pub fn order_by(&mut self, rank: &IdMap<ChunkId, usize>) {
        let key = |p: &PackId| {
            self.copy
                .get(p)
                .and_then(|cs| cs.iter().filter_map(|c| rank.get(c)).min().copied())
                .unwrap_or(usize::MAX)
        };
        let mut order: Vec<(usize, PackId)> = self.order.iter().map(|p| (key(p), *p)).collect();
        order.sort();
        self.order = order.into_iter().map(|(_, p)| p).collect();
    }
}

/// Decides which packs die and which are repacked. Each live chunk is kept in one pack (the
/// first in id order that holds it); the other copies count as dead.
pub fn plan(
    sections: &BTreeMap<PackId, Vec<BlobEntry>>,
    packs: &IdMap<PackId, u64>,
    live: &IdSet<ChunkId>,
    threshold: f64,
) -> ReclaimPlan {
    let mut out = ReclaimPlan::default();
    let mut placed: IdSet<ChunkId> = IdSet::default();
    for (id, size) in packs {
        if !sections.contains_key(id) {
            out.dead.insert(*id);
            out.bytes_released += size;
        }
    }
    for (id, entries) in sections {
        let Some(size) = packs.get(id) else { continue };
        let mine: BTreeSet<ChunkId> = entries
            .iter()
            .filter(|e| live.contains(&e.chunk) && placed.insert(e.chunk))
            .map(|e| e.chunk)
            .collect();
        // Blobs of at most 32 stored bytes (every pack's salt, tiny files) do not count: a pack
        // is not worth rewriting for them.
        let total: u64 = entries
            .iter()
            .filter(|e| e.stored_len > 32)
            .map(|e| e.stored_len as u64)
            .sum();
        let live_bytes: u64 = entries
            .iter()
            .filter(|e| mine.contains(&e.chunk))
            .map(|e| e.stored_len as u64)
            .sum();
        if mine.is_empty() {
            out.dead.insert(*id);
            out.bytes_released += size;
        } else if (live_bytes as f64) < threshold * total as f64 {
            out.repack.insert(*id);
            out.bytes_released += size;
            out.bytes_copied += live_bytes;
            out.copy.insert(*id, mine);
            out.order.push(*id);
        } else {
            out.kept.insert(*id, (mine, live_bytes));
        }
    }
    out
}

/// The condemned packs that must survive: they hold a live chunk no other usable pack holds.
pub fn rescued(
    sections: &BTreeMap<PackId, Vec<BlobEntry>>,
    packs: &IdMap<PackId, u64>,
    live: &IdSet<ChunkId>,
    condemned: &BTreeSet<PackId>,
) -> BTreeSet<PackId> {
    let covered: IdSet<ChunkId> = sections
        .iter()
        .filter(|(p, _)| packs.contains_key(*p) && !condemned.contains(*p))
        .flat_map(|(_, es)| es.iter().map(|e| e.chunk))
        .collect();
    condemned
        .iter()
        .filter(|p| {
            sections.get(*p).is_some_and(|es| {
                es.iter()
                    .any(|e| live.contains(&e.chunk) && !covered.contains(&e.chunk))
            })
        })
        .copied()
        .collect()
}

/// Copies the planned live blobs into new packs, uploads them, then creates the index objects
/// naming them in the domains of the tenants of `owned` whose chunks they hold
/// ([`super::domains::create_for_owners`]). Returns the new packs' ids and bytes written.
pub async fn repack(
    store: &Store,
    plan: &ReclaimPlan,
    (sections, owned): (&BTreeMap<PackId, Vec<BlobEntry>>, &super::domains::Owned),
    progress: &DynProgress,
) -> Result<(Vec<PackId>, u64)> {
    progress.set_total(plan.bytes_copied);
    // Blobs compressed with a dictionary name it; every dictionary is older than its packs.
    store.load_dictionaries().await?;
    let target = store.config().pack_target_size;
    let mut builder = PackBuilder::default();
    let mut written: Vec<(PackId, Vec<BlobEntry>)> = Vec::new();
    let mut bytes = 0u64;
    for id in &plan.order {
        let (Some(chunks), Some(entries)) = (plan.copy.get(id), sections.get(id)) else {
            continue;
        };
        let blobs = match read_blobs(store, id, entries, chunks).await {
            Ok(blobs) => blobs,
            Err(e) if is_damage(&e) => {
                tracing::warn!(pack = %id, error = %e, "damaged pack not repacked; kept while it holds live chunks");
                continue;
            }
            Err(e) => return Err(e),
        };
        for blob in blobs {
            progress.advance(blob.entry.stored_len as u64);
            builder.push(blob);
            if builder.is_full(target) {
                bytes += upload(store, std::mem::take(&mut builder), &mut written).await?;
            }
        }
    }
    if !builder.is_empty() {
        bytes += upload(store, builder, &mut written).await?;
    }
    bytes += super::domains::create_for_owners(store, &written, owned)
        .await?
        .1;
    Ok((written.into_iter().map(|(p, _)| p).collect(), bytes))
}

/// The blobs of `chunks` in pack `id`, read in one piece and checked.
async fn read_blobs(
    store: &Store,
    id: &PackId,
    entries: &[BlobEntry],
    chunks: &BTreeSet<ChunkId>,
) -> Result<Vec<Blob>> {
    let key = layout::pack_key(id);
    let (offsets, end) = pack::offsets(entries);
    let data = store.backend().get_range(&key, 0..end).await?;
    if (data.len() as u64) < end {
        let reason = format!("{} bytes where the index needs {end}", data.len());
        return Err(Error::corrupt(&key, DecodeError::new("pack", reason)));
    }
    let mut out = Vec::new();
    for (e, off) in entries.iter().zip(offsets) {
        if !chunks.contains(&e.chunk) {
            continue;
        }
        let blob = data.slice(off as usize..(off + e.stored_len as u64) as usize);
        pack::check_blob(e, &blob).map_err(|d| Error::corrupt(&key, d))?;
        out.push(Blob {
            entry: *e,
            data: blob,
        });
    }
    Ok(out)
}

/// Whether `e` says a pack's bytes are damaged (as opposed to a failed request, which aborts
/// the run): its blobs failed their check, or it is shorter than its index says.
fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::Backend(BackendError::InvalidRange { .. })
    )
}

/// Seals and uploads one pack of copied blobs (shared with the writer); returns its bytes.
async fn upload(
    store: &Store,
    builder: PackBuilder,
    written: &mut Vec<(PackId, Vec<BlobEntry>)>,
) -> Result<u64> {
    let sealed = packer::seal_unique(builder, store.config().zstd_level);
    let uploaded = packer::upload_pack(store.backend(), sealed).await?;
    written.push((uploaded.id, uploaded.entries));
    Ok(uploaded.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;

    fn e(c: &str, len: u32) -> BlobEntry {
        BlobEntry {
            chunk: ChunkId::of(c.as_bytes()),
            compression: Compression::None,
            stored_len: len,
            raw_len: len,
        }
    }

    #[test]
    fn dead_repacked_and_rescued_packs_are_chosen_by_live_bytes() {
        let (p1, p2, p3, p4) = (
            PackId::of(b"1"),
            PackId::of(b"2"),
            PackId::of(b"3"),
            PackId::of(b"orphan"),
        );
        let mut sections = BTreeMap::new();
        sections.insert(p1, vec![e("a", 90), e("b", 10)]);
        sections.insert(p2, vec![e("c", 10), e("d", 90)]);
        sections.insert(p3, vec![e("x", 50)]);
        let packs: IdMap<PackId, u64> = [(p1, 150), (p2, 150), (p3, 100), (p4, 10)]
            .into_iter()
            .collect();
        let live: IdSet<ChunkId> = ["a", "c"]
            .iter()
            .map(|c| ChunkId::of(c.as_bytes()))
            .collect();
        let plan = plan(&sections, &packs, &live, 0.75);
        assert_eq!(plan.dead, [p3, p4].into_iter().collect());
        assert_eq!(plan.repack, [p2].into_iter().collect());
        assert_eq!(plan.bytes_copied, 10);
        // At re-mark, a condemned pack holding a live chunk found nowhere else survives.
        let condemned: BTreeSet<PackId> = [p2, p3].into_iter().collect();
        assert_eq!(
            rescued(&sections, &packs, &live, &condemned),
            [p2].into_iter().collect()
        );
        sections.insert(PackId::of(b"copy"), vec![e("c", 10)]);
        let mut packs = packs;
        packs.insert(PackId::of(b"copy"), 60);
        assert!(rescued(&sections, &packs, &live, &condemned).is_empty());
    }

    #[test]
    fn small_packs_are_consolidated_in_timeline_order_unless_young_or_alone() {
        let ids: Vec<PackId> = (0..4u8).map(|i| PackId::of(&[i])).collect();
        let mut sections = BTreeMap::new();
        for (i, p) in ids.iter().enumerate() {
            sections.insert(*p, vec![e(&format!("c{i}"), 100)]);
        }
        let mut packs: IdMap<PackId, u64> = ids.iter().map(|p| (*p, 200)).collect();
        packs.insert(ids[3], 10 << 20);
        let live: IdSet<ChunkId> = (0..4)
            .map(|i| ChunkId::of(format!("c{i}").as_bytes()))
            .collect();
        let fresh = plan(&sections, &packs, &live, 0.75);
        assert!(fresh.repack.is_empty() && fresh.kept.len() == 4);
        let mut p = fresh.clone();
        let young: BTreeSet<PackId> = [ids[2]].into_iter().collect();
        p.consolidate(&packs, SMALL_PACK, &young);
        let want: BTreeSet<PackId> = [ids[0], ids[1]].into_iter().collect();
        assert_eq!(
            p.repack, want,
            "small, old packs only; the large and the young one stay"
        );
        assert_eq!((p.bytes_copied, p.bytes_released), (200, 400));
        // Copied in the order of the first manifest naming their chunks.
        let rank: IdMap<ChunkId, usize> = [(ChunkId::of(b"c1"), 0), (ChunkId::of(b"c0"), 1)]
            .into_iter()
            .collect();
        p.order_by(&rank);
        assert_eq!(p.order, vec![ids[1], ids[0]]);
        // A single small pack is left alone.
        let mut alone = fresh;
        let young: BTreeSet<PackId> = [ids[1], ids[2]].into_iter().collect();
        alone.consolidate(&packs, SMALL_PACK, &young);
        assert!(alone.repack.is_empty());
    }
}

/// Adds the own tables of condemned packs no index object names, so that re-marking sees what
/// they hold (format-spec 13.4.7). Returns the packs whose table could not be read: they are
/// kept, since what they hold is unknown.
pub(crate) async fn add_unindexed_tables(
    store: &Store,
    sections: &mut BTreeMap<PackId, Vec<crate::format::pack::BlobEntry>>,
    packs: &IdMap<PackId, u64>,
    condemned: &BTreeSet<PackId>,
) -> BTreeSet<PackId> {
    let mut unreadable = BTreeSet::new();
    let unindexed: Vec<PackId> = condemned
        .iter()
        .filter(|p| !sections.contains_key(*p))
        .copied()
        .collect();
    for p in &unindexed {
        let Some(size) = packs.get(p) else { continue };
        match store.read_pack_table(*p, *size).await {
            Ok(table) => {
                sections.insert(*p, table);
            }
            Err(e) => {
                tracing::warn!(pack = %p, error = %e, "unreadable condemned pack kept");
                unreadable.insert(*p);
            }
        }
    }
    unreadable
}
