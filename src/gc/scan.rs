//! gc's view of the store: one listing and read of manifests, index objects and packs.
//!
//! Owns the scan and what it derives (recent packs, index objects by key). Must not write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::backend::{Key, ObjectMeta};
use crate::error::Result;
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::id::PackId;
use crate::store::{READ_CONCURRENCY, Store};

use super::compact::Scanned;
use super::manifest_cache::ManifestCache;

/// A complete scan of the store.
pub(crate) struct Scan {
    pub(crate) manifests: Vec<Scanned>,
    pub(crate) indexes: BTreeMap<Key, (u64, IndexObject)>,
    pub(crate) packs: HashMap<PackId, u64>,
    /// When each pack was written, by the store's clock (liveness only: see `recent`).
    pub(crate) written: HashMap<PackId, std::time::SystemTime>,
}

impl Scan {
    /// Packs written less than `window` ago: probably a writer's uploads whose intent does not
    /// exist yet. Clocks only decide how soon space returns, never safety (format-spec 13.6).
    pub(crate) fn recent(&self, window: Duration) -> BTreeSet<PackId> {
        let now = std::time::SystemTime::now();
        self.written
            .iter()
            .filter(|(_, t)| now.duration_since(**t).map_or(true, |age| age < window))
            .map(|(p, _)| *p)
            .collect()
    }

    pub(crate) fn index_objects(&self) -> BTreeMap<Key, IndexObject> {
        self.indexes
            .iter()
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect()
    }
}

/// Lists manifests, then index objects, then packs (so that every chunk a listed manifest names
/// is in a listed index object whose packs are listed), and reads the first two kinds.
/// Manifests come from `cache` where it holds exactly the listed object.
pub(crate) async fn scan(store: &Store, cache: &mut ManifestCache) -> Result<Scan> {
    let listed = store.list(&layout::prefix(layout::MANIFESTS)).await?;
    let refs = store.list_manifests_from(&listed);
    let etags: HashMap<&Key, Option<String>> =
        listed.iter().map(|m| (&m.key, m.etag.clone())).collect();
    let read = cache.read(store, &refs, &etags).await?;
    let manifests = refs
        .iter()
        .zip(read)
        .map(|(r, m)| Scanned {
            etag: etags.get(&r.key).cloned().flatten(),
            r: r.clone(),
            manifest: m,
        })
        .collect();
    let index_meta: HashMap<Key, u64> = store
        .list(&layout::prefix(layout::INDEX))
        .await?
        .into_iter()
        .filter(|m| layout::parse_index_key(&m.key).is_some())
        .map(|m| (m.key, m.size))
        .collect();
    // Concurrently, as the manifests: any failed read still fails the scan (rule 13.4.2).
    let indexes: BTreeMap<Key, (u64, IndexObject)> =
        futures::stream::iter(index_meta.into_iter().map(|(k, size)| async move {
            let obj = store.read_index(&k).await?;
            Ok::<_, crate::Error>((k, (size, obj)))
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let pack_meta = store.list(&layout::prefix(layout::PACKS)).await?;
    let ids = pack_meta
        .iter()
        .filter_map(|m: &ObjectMeta| layout::parse_pack_key(&m.key).map(|id| (id, m)));
    let (packs, written) = ids
        .map(|(id, m)| ((id, m.size), (id, m.last_modified)))
        .unzip();
    Ok(Scan {
        manifests,
        indexes,
        packs,
        written,
    })
}
