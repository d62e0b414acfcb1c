//! Looking inside a store: what tenants, timelines and checkpoints it holds, and how much space
//! it takes against how much it represents.
//!
//! Owns read-only summaries for people and scripts (`casctl ls`, `casctl stats`). Must not modify
//! the store.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::Prefix;
use crate::error::Result;
use crate::format::layout;
use crate::format::manifest::TimelineState;
use crate::store::Store;

/// One timeline's checkpoints.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineListing {
    /// Tenant id in hex.
    pub tenant: String,
    /// Timeline id in hex.
    pub timeline: String,
    /// LSNs of its checkpoints, ascending, in Postgres notation.
    pub checkpoints: Vec<String>,
}

/// Every timeline with checkpoints, sorted by tenant and timeline. Reads only the listing.
pub async fn list_timelines(store: &Store) -> Result<Vec<TimelineListing>> {
    let mut out: Vec<TimelineListing> = Vec::new();
    for r in store.list_all_manifests().await? {
        let (tenant, timeline) = (r.tenant.to_string(), r.timeline.to_string());
        match out.last_mut() {
            Some(t) if t.tenant == tenant && t.timeline == timeline => {
                t.checkpoints.push(r.lsn.to_string())
            }
            _ => out.push(TimelineListing {
                tenant,
                timeline,
                checkpoints: vec![r.lsn.to_string()],
            }),
        }
    }
    Ok(out)
}

/// Space used against space represented.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreStats {
    /// Sum over every checkpoint of the size of all its files: what storing each checkpoint as a
    /// full copy would take.
    pub logical_bytes: u64,
    /// Sum of the sizes of the files each checkpoint added: what storing each new file once
    /// would take.
    pub added_bytes: u64,
    /// Bytes of every object in the store.
    pub stored_bytes: u64,
    /// Bytes in packs (chunk data).
    pub pack_bytes: u64,
    /// Bytes in index objects (the chunk-to-pack map).
    pub index_bytes: u64,
    /// Bytes in manifests.
    pub manifest_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: usize,
    /// Pack objects.
    pub packs: usize,
    /// Index objects.
    pub index_objects: usize,
    /// Manifests (one a checkpoint, or a base).
    pub manifests: usize,
    /// Distinct tenants with a manifest.
    pub tenants: usize,
    /// Distinct timelines with a manifest.
    pub timelines: usize,
    /// logical_bytes / stored_bytes.
    pub dedup_ratio: f64,
}

/// Computes [`StoreStats`]; reads every manifest and index object.
pub async fn stats(store: &Store) -> Result<StoreStats> {
    let all = store.list(&Prefix::all()).await?;
    let mut s = StoreStats::default();
    for m in &all {
        s.stored_bytes += m.size;
        if layout::parse_pack_key(&m.key).is_some() {
            s.packs += 1;
            s.pack_bytes += m.size;
        } else if layout::parse_index_key(&m.key).is_some() {
            s.index_objects += 1;
            s.index_bytes += m.size;
        } else if layout::parse_manifest_key(&m.key).is_some() {
            s.manifests += 1;
            s.manifest_bytes += m.size;
        }
    }
    s.chunks = store.load_index().await?.len();
    let refs = store.list_manifests_from(&all);
    let manifests = store.read_manifests(&refs).await?;
    let mut states: BTreeMap<_, TimelineState> = BTreeMap::new();
    for m in manifests {
        s.added_bytes += m.added.iter().map(|f| f.size).sum::<u64>();
        let key = (m.tenant, m.timeline);
        let state = TimelineState::apply(states.remove(&key), m);
        s.logical_bytes += state.logical_bytes();
        states.insert(key, state);
    }
    s.timelines = states.len();
    s.tenants = states
        .keys()
        .map(|(t, _)| *t)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    s.dedup_ratio = if s.stored_bytes == 0 {
        0.0
    } else {
        s.logical_bytes as f64 / s.stored_bytes as f64
    };
    Ok(s)
}
