//! The checks `tests/gc_sim.rs` runs after each schedule: every chunk of every manifest resolves
//! through an index object to a pack holding it intact, and checkpoints restore byte-identically.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use layercas::format::manifest::ChunkRef;
use layercas::format::{delta, layout, pack};
use layercas::id::{ChunkId, Lsn};
use layercas::progress;
use layercas::store::Store;
use layercas::store::chunk_index::{ChunkIndex, Location};

use crate::common::{TENANT, read_tree};
use crate::{Attempt, Outcome, Plan, timeline_id};

/// Every location of every chunk named by any index object.
pub async fn all_locations(store: &Store) -> layercas::Result<HashMap<ChunkId, Vec<Location>>> {
    let mut out: HashMap<ChunkId, Vec<Location>> = HashMap::new();
    for obj in store.read_all_indexes().await?.values() {
        for (p, entries) in &obj.packs {
            let mut one = ChunkIndex::new();
            one.add_pack(*p, entries);
            for (c, loc) in one.iter() {
                out.entry(c).or_default().push(loc);
            }
        }
    }
    Ok(out)
}

/// Whether some indexed location of the blob `id` decodes (with `decode`) intact; else why not.
async fn readable_blob(
    store: &Store,
    id: &ChunkId,
    locs: &HashMap<ChunkId, Vec<Location>>,
    decode: impl Fn(&Location, &[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let Some(locs) = locs.get(id) else {
        return Err(format!("blob {id} in no index object"));
    };
    let mut why = Vec::new();
    for loc in locs {
        let key = layout::pack_key(&loc.pack);
        match store
            .backend()
            .get_range(&key, loc.offset..loc.offset + loc.stored_len as u64)
            .await
        {
            Ok(data) => match decode(loc, &data) {
                Ok(raw) => return Ok(raw),
                Err(e) => why.push(format!("{key}: {e}")),
            },
            Err(e) => why.push(format!("{key}: {e}")),
        }
    }
    Err(why.join("; "))
}

/// Whether some indexed location of each blob `r` needs holds it intact (a delta decoding
/// against its base to the chunk); else why not.
pub async fn readable(
    store: &Store,
    r: &ChunkRef,
    locs: &HashMap<ChunkId, Vec<Location>>,
) -> Result<(), String> {
    let whole = |id: ChunkId| {
        move |l: &Location, d: &[u8]| pack::decode_blob(&l.entry(id), d).map_err(|e| e.to_string())
    };
    let Some(base) = r.base else {
        return readable_blob(store, &r.id, locs, whole(r.id))
            .await
            .map(drop);
    };
    let base_raw = readable_blob(store, &base, locs, whole(base)).await?;
    let blob = r.blob_id();
    let as_delta = |l: &Location, d: &[u8]| {
        delta::decode_delta_blob(&l.entry(blob), d, &r.id, &base, &base_raw)
            .map_err(|e| e.to_string())
    };
    readable_blob(store, &blob, locs, as_delta).await.map(drop)
}

pub fn describe(attempts: &[Attempt], t: usize, lsn: u64) -> String {
    match attempts.iter().find(|a| a.timeline == t && a.lsn == lsn) {
        Some(a) => format!("{:?}", a.outcome),
        None => "unknown".into(),
    }
}

/// The checks after a schedule; appends one line per problem.
pub async fn check(
    store: &Store,
    plan: &Plan,
    attempts: &[Attempt],
    root: &Path,
    when: &str,
    resurrected: &std::collections::HashSet<String>,
    out: &mut Vec<String>,
) {
    let locs = match all_locations(store).await {
        Ok(l) => l,
        Err(e) => return out.push(format!("{when}: index unreadable: {e}")),
    };
    let refs = store
        .list_manifests(&layout::prefix(layout::MANIFESTS))
        .await
        .unwrap();
    let manifests = match store.read_manifests(&refs).await {
        Ok(m) => m,
        Err(e) => return out.push(format!("{when}: manifests unreadable: {e}")),
    };
    for m in &manifests {
        let t = m.timeline.0[0] as usize - 0x10;
        let key = layout::manifest_key(&m.tenant, &m.timeline, m.lsn).to_string();
        if resurrected.contains(&key) {
            // A create that landed after gc dropped its checkpoint by retention: no promise
            // covers a checkpoint retention dropped; the next gc deletes it again.
            continue;
        }
        let mut lost = 0;
        let mut first = String::new();
        for c in m.added.iter().flat_map(|f| &f.chunks) {
            if let Err(why) = readable(store, c, &locs).await {
                lost += 1;
                if first.is_empty() {
                    first = format!("chunk {}: {why}", c.id);
                }
            }
        }
        if lost > 0 {
            let how = describe(attempts, t, m.lsn.0);
            out.push(format!("{when}: LOST CHUNKS: timeline {t} checkpoint {} (checkpoint {how}): {lost} chunks, first {first}", m.lsn));
        }
    }
    for t in 0..plan.timelines {
        let here: Vec<u64> = refs
            .iter()
            .filter(|r| r.timeline == timeline_id(t))
            .map(|r| r.lsn.0)
            .collect();
        let last_ok = attempts
            .iter()
            .filter(|a| a.timeline == t && matches!(a.outcome, Outcome::Ok))
            .last();
        // Retention dropped it for a newer checkpoint: its create landed again later, or a
        // newer base records the drop (a gc run stopped before deleting it all).
        let dropped_late = |lsn: u64| {
            let key = layout::manifest_key(&TENANT, &timeline_id(t), Lsn(lsn)).to_string();
            let superseded = manifests
                .iter()
                .any(|m| m.timeline == timeline_id(t) && m.drops(Lsn(lsn)));
            (resurrected.contains(&key) || superseded) && here.iter().any(|l| *l > lsn)
        };
        if let Some(a) = last_ok.filter(|a| !dropped_late(a.lsn)) {
            if here.contains(&a.lsn) {
                restore_matches(store, a, root, when, "latest successful", out).await;
            } else if !here.iter().any(|l| *l > a.lsn) {
                out.push(format!("{when}: VANISHED: timeline {t} latest successful checkpoint {:#x} is gone and nothing newer exists", a.lsn));
            }
        }
        if let Some(newest) = here.iter().max() {
            if last_ok.is_none_or(|a| a.lsn != *newest) {
                if let Some(a) = attempts
                    .iter()
                    .find(|a| a.timeline == t && a.lsn == *newest)
                {
                    restore_matches(store, a, root, when, "newest (unconfirmed)", out).await;
                }
            }
        }
    }
}

pub async fn restore_matches(
    store: &Store,
    a: &Attempt,
    root: &Path,
    when: &str,
    what: &str,
    out: &mut Vec<String>,
) {
    static N: AtomicU64 = AtomicU64::new(0);
    let to = root.join(format!("restored{}", N.fetch_add(1, Ordering::Relaxed)));
    let t = a.timeline;
    match store
        .restore_timeline(
            &TENANT,
            &timeline_id(t),
            Some(Lsn(a.lsn)),
            &to,
            progress::none(),
        )
        .await
    {
        Err(e) => out.push(format!(
            "{when}: RESTORE FAILED: timeline {t} {what} checkpoint {:#x} ({:?}): {e}",
            a.lsn, a.outcome
        )),
        Ok(_) if read_tree(&to) != a.files => out.push(format!(
            "{when}: RESTORE MISMATCH: timeline {t} {what} checkpoint {:#x} ({:?})",
            a.lsn, a.outcome
        )),
        Ok(_) => {}
    }
    let _ = std::fs::remove_dir_all(&to);
}
