//! Manifest compaction: the checkpoints retention drops are folded away. Every kept manifest
//! preceded (since the previous kept one) by a dropped manifest is replaced, in place and with
//! `PutMode::Update(etag)`, by a *base* holding its whole state; only after every such
//! replacement succeeded are the dropped manifests deleted. A long run of kept deltas is also
//! cut by a base every `max_chain` manifests, so readers stop early.
//!
//! Owns the plan and its application; must not touch packs or index objects.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::backend::{Key, Payload, PutMode};
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::manifest::{Manifest, TimelineState};
use crate::id::{Lsn, TenantId, TimelineId};
use crate::store::{ManifestRef, Store};

/// A manifest as scanned, with its etag.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub r: ManifestRef,
    pub etag: Option<String>,
    pub manifest: Manifest,
}

/// What compaction will do.
#[derive(Debug, Default)]
pub struct CompactPlan {
    /// Kept manifests replaced by a base of their state.
    pub bases: Vec<(Scanned, Manifest)>,
    /// Dropped manifests, deleted after every base is written.
    pub delete: Vec<Scanned>,
    /// Every manifest the plan was made from.
    pub listed: BTreeSet<Key>,
}

/// Plans compaction of every timeline given the LSNs to keep.
pub fn plan(
    manifests: &[Scanned],
    kept: &BTreeMap<(TenantId, TimelineId), BTreeSet<Lsn>>,
    max_chain: usize,
) -> CompactPlan {
    let mut out = CompactPlan {
        listed: manifests.iter().map(|s| s.r.key.clone()).collect(),
        ..Default::default()
    };
    let mut by_tl: BTreeMap<(TenantId, TimelineId), Vec<&Scanned>> = BTreeMap::new();
    for s in manifests {
        by_tl.entry((s.r.tenant, s.r.timeline)).or_default().push(s);
    }
    for (key, list) in by_tl {
        let keep = kept.get(&key).cloned().unwrap_or_default();
        plan_timeline(key, &list, &keep, max_chain.max(2), &mut out);
    }
    out
}

/// Plans one timeline. Each manifest's state is its predecessor's (by `prev_lsn`, so a
/// manifest off the chain, such as a killed writer's create that landed late, never leaks into
/// another's state). A manifest is *superseded*, and deleted whatever retention says, when a
/// base records its LSN as dropped (`Manifest::drops`: a create that landed after gc deleted
/// it), or when its predecessor is missing and it lies below the timeline's newest base. A
/// timeline whose chain has a gap at or above its newest base is left alone.
///
/// The first kept manifest after deleted ones becomes a base (or, if it is one, is rewritten)
/// recording the deleted range, so that a late create landing there later is recognised.
fn plan_timeline(
    (tenant, timeline): (TenantId, TimelineId),
    list: &[&Scanned],
    keep: &BTreeSet<Lsn>,
    max_chain: usize,
    out: &mut CompactPlan,
) {
    let mut states: BTreeMap<Lsn, (TimelineState, usize)> = BTreeMap::new();
    let mut plan = CompactPlan::default();
    let newest_base = newest_base(list.iter().map(|s| &s.manifest));
    let recorded: Vec<&Manifest> = list
        .iter()
        .map(|s| &s.manifest)
        .filter(|m| m.dropped_from.is_some())
        .collect();
    // The last kept LSN, whether manifests were deleted since, and every LSN deleted.
    let (mut last_kept, mut gap): (Option<Lsn>, bool) = (None, false);
    let mut deleted: BTreeSet<Lsn> = BTreeSet::new();
    for s in list {
        let m = &s.manifest;
        if recorded.iter().any(|b| b.drops(m.lsn)) {
            plan.delete.push((*s).clone());
            (gap, _) = (true, deleted.insert(m.lsn));
            continue;
        }
        let (prev, prev_chain) = match m.prev_lsn.filter(|_| !m.base) {
            None => (None, 0),
            Some(p) => match states.get(&p) {
                Some((st, c)) => (Some(st.clone()), *c),
                None if newest_base.is_some_and(|b| m.lsn < b) => {
                    // Superseded: its predecessor is gone and a newer base makes it unneeded.
                    plan.delete.push((*s).clone());
                    (gap, _) = (true, deleted.insert(m.lsn));
                    continue;
                }
                None => {
                    tracing::warn!(%tenant, %timeline, lsn = %m.lsn, prev = %p, "manifest chain has a gap; timeline not compacted");
                    return;
                }
            },
        };
        let state = TimelineState::apply(prev, m.clone());
        let mut chain = if m.base { 0 } else { prev_chain + 1 };
        if !keep.contains(&s.r.lsn) {
            plan.delete.push((*s).clone());
            (gap, _) = (true, deleted.insert(m.lsn));
        } else {
            // A predecessor deleted (even one a late create off this chain followed) also
            // makes this a base: its state must not depend on a deleted manifest.
            let after_deleted = m.prev_lsn.is_some_and(|p| deleted.contains(&p));
            let from = (gap || after_deleted).then(|| last_kept.map_or(Lsn(0), |l| Lsn(l.0 + 1)));
            let covered = m.base
                && match (from, m.dropped_from) {
                    (None, _) => true,
                    (Some(f), Some(had)) => had <= f,
                    (Some(_), None) => false,
                };
            if (from.is_some() && !covered) || (!m.base && chain >= max_chain) {
                let mut base = state.to_base(tenant, timeline);
                base.dropped_from = match (from, m.dropped_from) {
                    (Some(f), Some(had)) => Some(f.min(had)),
                    (f, had) => f.or(had),
                };
                plan.bases.push(((*s).clone(), base));
                chain = 0;
            }
            (last_kept, gap) = (Some(m.lsn), false);
        }
        states.insert(m.lsn, (state, chain));
    }
    out.bases.extend(plan.bases);
    out.delete.extend(plan.delete);
}

/// The LSN of the newest base among `manifests`.
pub fn newest_base<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> Option<Lsn> {
    manifests
        .into_iter()
        .filter(|m| m.base)
        .map(|m| m.lsn)
        .max()
}

/// Writes the bases (in place, conditional on the scanned etag). The dropped manifests are
/// deleted later, by [`delete_dropped`], once gc has read the writers' intents.
pub async fn write_bases(store: &Store, plan: &CompactPlan) -> Result<()> {
    let backend = store.backend();
    for (s, base) in &plan.bases {
        let etag = match &s.etag {
            Some(e) => e.clone(),
            None => backend.head(&s.r.key).await?.etag.ok_or_else(|| {
                Error::InvalidInput(format!("{}: backend gives no etag", s.r.key))
            })?,
        };
        let payload = Payload::from_bytes(Bytes::from(base.encode()));
        backend
            .put(&s.r.key, payload, PutMode::Update(etag))
            .await?;
    }
    Ok(())
}

/// The dropped manifests of `plan` that may be deleted: all but those an intent's commit builds
/// on (`building_on`, from intents read after the scan; format-spec 13.4, rule 8) and their
/// predecessors, so that what an intent protects still restores.
pub fn deletable<'a>(plan: &'a CompactPlan, building_on: &BTreeSet<Key>) -> Vec<&'a Scanned> {
    let dropped: BTreeMap<&Key, &Scanned> = plan.delete.iter().map(|s| (&s.r.key, s)).collect();
    let mut kept: BTreeSet<&Key> = BTreeSet::new();
    for key in building_on {
        let mut at = dropped.get(key).copied();
        while let Some(s) = at {
            if !kept.insert(&s.r.key) {
                break;
            }
            let m = &s.manifest;
            at = match m.prev_lsn.filter(|_| !m.base) {
                Some(p) => dropped
                    .get(&layout::manifest_key(&m.tenant, &m.timeline, p))
                    .copied(),
                None => None,
            };
        }
    }
    plan.delete
        .iter()
        .filter(|s| !kept.contains(&s.r.key))
        .collect()
}

/// Deletes `dropped` (from [`deletable`]); returns how many and their bytes.
pub async fn delete_dropped(store: &Store, dropped: &[&Scanned]) -> Result<(usize, u64)> {
    let keys: Vec<Key> = dropped.iter().map(|s| s.r.key.clone()).collect();
    crate::backend::delete_batched(store.backend().as_ref(), &keys, |_| {}).await?;
    Ok((keys.len(), dropped.iter().map(|s| s.r.size).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ChunkRef, FileEntry};
    use crate::format::metadata::TimelineMetadata;
    use crate::id::{ChunkId, FileHash};

    fn delta(lsn: u64, prev: Option<u64>, add: &str, remove: &[&str]) -> Scanned {
        let (t, tl) = (TenantId([1; 16]), TimelineId([2; 16]));
        let m = Manifest {
            tenant: t,
            timeline: tl,
            lsn: Lsn(lsn),
            prev_lsn: prev.map(Lsn),
            metadata: TimelineMetadata::at(Lsn(lsn)),
            added: vec![FileEntry {
                name: add.into(),
                size: 1,
                hash: FileHash([lsn as u8; 32]),
                chunks: vec![ChunkRef::whole(ChunkId::of(add.as_bytes()), 1)],
            }],
            removed: remove.iter().map(|s| s.to_string()).collect(),
            base: false,
            dropped_from: None,
        };
        Scanned {
            r: ManifestRef {
                key: crate::format::layout::manifest_key(&t, &tl, Lsn(lsn)),
                tenant: t,
                timeline: tl,
                lsn: Lsn(lsn),
                size: 100,
            },
            etag: None,
            manifest: m,
        }
    }

    #[test]
    fn kept_manifests_after_a_gap_become_bases_of_the_same_state() {
        let list = vec![
            delta(1, None, "a", &[]),
            delta(2, Some(1), "b", &["a"]),
            delta(3, Some(2), "c", &[]),
            delta(4, Some(3), "d", &[]),
        ];
        let key = (TenantId([1; 16]), TimelineId([2; 16]));
        let mut kept = BTreeMap::new();
        kept.insert(key, [Lsn(1), Lsn(3), Lsn(4)].into_iter().collect());
        let p = plan(&list, &kept, 100);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].r.lsn, Lsn(2));
        assert_eq!(p.bases.len(), 1);
        let (at, base) = &p.bases[0];
        assert_eq!(at.r.lsn, Lsn(3));
        let names: Vec<&str> = base.added.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!(
            base.dropped_from,
            Some(Lsn(2)),
            "the base records what was dropped"
        );
        // The state at every kept LSN is unchanged: fold before == fold after.
        let before = TimelineState::fold(list.iter().map(|s| s.manifest.clone())).unwrap();
        let after = TimelineState::fold([base.clone(), list[3].manifest.clone()]).unwrap();
        assert_eq!(before, after);
        // Chains of kept deltas are cut every max_chain manifests.
        let mut all = BTreeMap::new();
        all.insert(key, (1..=4).map(Lsn).collect());
        let p = plan(&list, &all, 2);
        assert!(p.delete.is_empty());
        assert_eq!(
            p.bases.iter().map(|b| b.0.r.lsn.0).collect::<Vec<_>>(),
            vec![2, 4]
        );
    }

    #[test]
    fn a_superseded_manifest_is_deleted_and_a_gap_above_the_newest_base_stops_compaction() {
        let key = (TenantId([1; 16]), TimelineId([2; 16]));
        let mut base = delta(3, Some(2), "c", &[]);
        base.manifest.base = true;
        // The manifest at 2 came back (a late create) after gc deleted 1 and folded 3.
        let list = vec![
            delta(2, Some(1), "b", &[]),
            base,
            delta(4, Some(3), "d", &[]),
        ];
        let mut kept = BTreeMap::new();
        kept.insert(key, (1..=4).map(Lsn).collect());
        let p = plan(&list, &kept, 100);
        assert_eq!(
            p.delete.iter().map(|s| s.r.lsn.0).collect::<Vec<_>>(),
            vec![2]
        );
        // The base is rewritten to record the deleted range, so a second late create is known.
        assert_eq!(p.bases.len(), 1);
        assert_eq!(
            (p.bases[0].0.r.lsn, p.bases[0].1.dropped_from),
            (Lsn(3), Some(Lsn(0)))
        );
        // A gap at or above the newest base: nothing is planned.
        let list = vec![list[1].clone(), delta(5, Some(4), "e", &[])];
        let p = plan(&list, &kept, 100);
        assert!(p.delete.is_empty() && p.bases.is_empty());
    }

    #[test]
    fn late_creates_of_dropped_checkpoints_are_superseded_whatever_retention_keeps() {
        let key = (TenantId([1; 16]), TimelineId([2; 16]));
        // gc kept only 3 (a base recording that everything below it was dropped); the creates
        // of 1 (a first manifest) and 2 landed afterwards, forming a chain of their own.
        let mut base = delta(3, None, "c", &[]);
        base.manifest.base = true;
        base.manifest.dropped_from = Some(Lsn(0));
        let list = vec![
            delta(1, None, "a", &[]),
            delta(2, Some(1), "b", &[]),
            base,
            delta(4, Some(3), "d", &[]),
        ];
        let mut kept = BTreeMap::new();
        kept.insert(key, (1..=4).map(Lsn).collect());
        let p = plan(&list, &kept, 100);
        let deleted: Vec<u64> = p.delete.iter().map(|s| s.r.lsn.0).collect();
        assert_eq!(deleted, vec![1, 2]);
        assert!(p.bases.is_empty(), "the base already records the range");
    }

    #[test]
    fn every_kept_manifest_after_a_deleted_predecessor_becomes_a_base() {
        let key = (TenantId([1; 16]), TimelineId([2; 16]));
        // 4's create landed late, after 5 was written on top of 2: both follow 2.
        let list = vec![
            delta(1, None, "a", &[]),
            delta(2, Some(1), "b", &[]),
            delta(4, Some(2), "d", &[]),
            delta(5, Some(2), "e", &[]),
        ];
        let mut kept = BTreeMap::new();
        kept.insert(key, [Lsn(4), Lsn(5)].into_iter().collect());
        let p = plan(&list, &kept, 100);
        let bases: Vec<(u64, Option<Lsn>)> = p
            .bases
            .iter()
            .map(|(s, b)| (s.r.lsn.0, b.dropped_from))
            .collect();
        assert_eq!(bases, vec![(4, Some(Lsn(0))), (5, Some(Lsn(5)))]);
        let names: Vec<&str> = p.bases[1].1.added.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["a", "b", "e"],
            "5's state does not include 4's file"
        );
    }

    #[test]
    fn a_manifest_an_intent_builds_on_keeps_its_predecessors() {
        let key = (TenantId([1; 16]), TimelineId([2; 16]));
        let list = vec![
            delta(1, None, "a", &[]),
            delta(2, Some(1), "b", &[]),
            delta(3, Some(2), "c", &[]),
            delta(4, Some(3), "d", &[]),
        ];
        let mut kept = BTreeMap::new();
        kept.insert(key, [Lsn(4)].into_iter().collect());
        let p = plan(&list, &kept, 100);
        assert_eq!(p.delete.len(), 3);
        let building_on: BTreeSet<Key> = [list[1].r.key.clone()].into_iter().collect();
        let gone: Vec<u64> = deletable(&p, &building_on)
            .iter()
            .map(|s| s.r.lsn.0)
            .collect();
        assert_eq!(gone, vec![3], "2 and its predecessor 1 stay");
    }
}
