//! gc's plan from one scan (format-spec 13.4, rules 3 and 4): which manifests retention keeps,
//! which kept manifests become bases, which packs die and which are repacked or consolidated,
//! and in what order blobs are copied. Also how a run ending its work plans again to decide
//! whether it may seal (`seal::conclude`).
//!
//! Owns these decisions. Must not write anything: the run (`gc::run`) acts on the plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::backend::Key;
use crate::error::Result;
use crate::id::PackId;
use crate::store::Store;

use super::retention::{self, TimelineCheckpoints};
use super::scan::Scan;
use super::{GcOptions, GcReport, compact, intents, missing, reclaim};

/// Plans compaction and reclamation from the first scan, after checking that every chunk of
/// the remaining manifests resolves (refusing otherwise unless `allow_missing`).
pub(crate) async fn plan_run(
    store: &Store,
    first: &Scan,
    opts: &GcOptions,
    report: &mut GcReport,
) -> Result<(
    compact::CompactPlan,
    BTreeMap<PackId, Vec<crate::format::pack::BlobEntry>>,
    reclaim::ReclaimPlan,
)> {
    let spared = intents::read_all(store).await?.protected();
    let plan = compaction_plan(first, opts);
    report.manifests_folded = plan.bases.len();
    report.manifests_deleted = plan.delete.len();
    let mut sections = reclaim::sections(first.index_objects());
    let gone = missing::check(store, remaining(first, &plan), &mut sections, &first.packs).await?;
    if let Some(m) = gone {
        if !opts.allow_missing {
            return Err(m.to_error());
        }
        tracing::warn!(count = m.count, first = %m.first_chunk, manifest = %m.first_manifest,
            "kept manifests reference missing chunks; collecting anyway (--allow-missing)");
        report.chunks_missing = m.count;
    }
    let live = reclaim::live_chunks(remaining(first, &plan));
    let mut reclaim = reclaim::plan(&sections, &first.packs, &live, opts.repack_threshold);
    // Liveness only: a writer about to commit these packs would otherwise store them again.
    let recent = first.recent(opts.window);
    let dead = reclaim.dead.len();
    reclaim
        .dead
        .retain(|p| !spared.contains(p) && !recent.contains(p));
    reclaim.deferred |= reclaim.dead.len() < dead;
    let young: BTreeSet<PackId> = recent.union(&spared).copied().collect();
    reclaim.consolidate(&first.packs, opts.small_pack, &young);
    report.left_for_later = reclaim.deferred;
    if !reclaim.copy.is_empty() {
        reclaim.order_by(&chunk_ranks(remaining(first, &plan)));
    }
    report.packs_repacked = reclaim.repack.len();
    Ok((plan, sections, reclaim))
}

/// Each chunk's position in the first manifest naming it, manifests taken in the scan's order
/// (tenant, timeline, LSN): repack copies blobs in this order.
fn chunk_ranks<'a>(
    manifests: impl Iterator<Item = &'a crate::format::manifest::Manifest>,
) -> crate::id::IdMap<crate::id::ChunkId, usize> {
    let mut rank = crate::id::IdMap::default();
    let refs = manifests.flat_map(|m| m.added.iter().flat_map(|f| f.chunks.iter()));
    for id in refs.flat_map(crate::format::manifest::ChunkRef::stored_ids) {
        let next = rank.len();
        rank.entry(id).or_insert(next);
    }
    rank
}

/// The manifests that remain once `plan` is applied (bases in place of what they replace).
pub(crate) fn remaining<'a>(
    scan: &'a Scan,
    plan: &'a compact::CompactPlan,
) -> impl Iterator<Item = &'a crate::format::manifest::Manifest> {
    let dropped: BTreeSet<&Key> = plan.delete.iter().map(|s| &s.r.key).collect();
    let replaced: HashMap<&Key, &crate::format::manifest::Manifest> =
        plan.bases.iter().map(|(s, b)| (&s.r.key, b)).collect();
    scan.manifests
        .iter()
        .filter(move |s| !dropped.contains(&s.r.key))
        .map(move |s| *replaced.get(&s.r.key).unwrap_or(&&s.manifest))
}

pub(crate) fn compaction_plan(scan: &Scan, opts: &GcOptions) -> compact::CompactPlan {
    let mut timelines: BTreeMap<_, TimelineCheckpoints> = BTreeMap::new();
    for s in &scan.manifests {
        let t = timelines
            .entry((s.r.tenant, s.r.timeline))
            .or_insert_with(|| TimelineCheckpoints {
                lsns: Vec::new(),
                newest: s.manifest.metadata.clone(),
            });
        t.lsns.push(s.r.lsn);
        t.newest = s.manifest.metadata.clone();
    }
    let kept = retention::kept(&opts.retention, &timelines);
    compact::plan(&scan.manifests, &kept, opts.max_chain)
}
