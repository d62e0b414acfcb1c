//! gc's view of the store: one listing and read of manifests, index objects and packs.
//!
//! Owns the scan and what it derives (recent packs, index objects by key). Must not write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rayon::prelude::*;

use crate::backend::{Key, ObjectMeta};
use crate::error::Result;
use crate::format::index::{IndexObject, MAX_INDEX_BODY};
use crate::format::layout;
use crate::format::manifest::MAX_MANIFEST_BODY;
use crate::id::{IdMap, PackId};
use crate::store::Store;

use super::cache::Caches;
use super::compact::Scanned;
use super::report::Laps;

/// A complete scan of the store.
pub(crate) struct Scan {
    /// The manifests and index objects as listed (what the caches save copies of).
    pub(crate) listed: (Vec<ObjectMeta>, Vec<ObjectMeta>),
    pub(crate) manifests: Vec<Scanned>,
    pub(crate) indexes: BTreeMap<Key, (u64, IndexObject)>,
    pub(crate) packs: IdMap<PackId, u64>,
    /// When each pack was written, by the store's clock (liveness only: see `recent`).
    pub(crate) written: IdMap<PackId, std::time::SystemTime>,
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

    /// Every index object read, in key order.
    pub(crate) fn index_objects(&self) -> impl Iterator<Item = &IndexObject> {
        self.indexes.values().map(|(_, o)| o)
    }
}

/// Lists manifests, then index objects, then packs (so that every chunk a listed manifest names
/// is in a listed index object whose packs are listed), and reads the first two kinds, taking
/// from `caches` the copies that are exactly the listed objects.
pub(crate) async fn scan(store: &Store, caches: &mut Caches, laps: &mut Laps) -> Result<Scan> {
    let listed = list_kind(store, layout::MANIFESTS).await?;
    laps.lap("list-manifests");
    scan_listed(store, listed, caches, laps).await
}

/// Loads gc's caches while listing the manifests (the copies are checked against the listing
/// later, so the two may overlap), then scans as [`scan`] does.
pub(crate) async fn load_and_scan(store: &Store, laps: &mut Laps) -> Result<(Caches, Scan)> {
    let (mut caches, listed) =
        futures::join!(Caches::load(store), list_kind(store, layout::MANIFESTS));
    laps.lap("load-caches-and-list-manifests");
    let scan = scan_listed(store, listed?, &mut caches, laps).await?;
    Ok((caches, scan))
}

/// [`scan`] from the manifests already `listed`.
async fn scan_listed(
    store: &Store,
    listed: Vec<ObjectMeta>,
    caches: &mut Caches,
    laps: &mut Laps,
) -> Result<Scan> {
    let refs = store.list_manifests_from(&listed);
    let by_key: HashMap<&Key, &ObjectMeta> = listed.iter().map(|m| (&m.key, m)).collect();
    let manifest_meta: Vec<ObjectMeta> = refs.iter().map(|r| by_key[&r.key].clone()).collect();
    let max = MAX_MANIFEST_BODY + 64;
    let bytes = caches.manifests.read(store, &manifest_meta, max).await?;
    laps.lap("read-manifests");
    // Decoding and checking is CPU work: spread over the cores.
    let manifests: Vec<Scanned> = (refs.par_iter().zip(&manifest_meta).zip(&bytes))
        .map(|((r, meta), b)| {
            Ok(Scanned {
                etag: meta.etag.clone(),
                r: r.clone(),
                manifest: Store::decode_manifest(r, b)?,
            })
        })
        .collect::<Result<_>>()?;
    laps.lap("decode-manifests");
    let index_meta: Vec<ObjectMeta> = list_kind(store, layout::INDEX)
        .await?
        .into_iter()
        .filter(|m| layout::parse_index_key(&m.key).is_some())
        .collect();
    laps.lap("list-indexes");
    // Any failed read fails the scan (rule 13.4.2).
    let bytes = caches
        .indexes
        .read(store, &index_meta, MAX_INDEX_BODY + 64)
        .await?;
    let indexes = (index_meta.par_iter().zip(&bytes))
        .map(|(m, b)| Ok((m.key.clone(), (m.size, Store::decode_index(&m.key, b)?))))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .collect();
    laps.lap("read-indexes");
    let pack_meta = list_kind(store, layout::PACKS).await?;
    laps.lap("list-packs");
    let ids = pack_meta
        .iter()
        .filter_map(|m: &ObjectMeta| layout::parse_pack_key(&m.key).map(|id| (id, m)));
    let (packs, written) = ids
        .map(|(id, m)| ((id, m.size), (id, m.last_modified)))
        .unzip();
    Ok(Scan {
        listed: (manifest_meta, index_meta),
        manifests,
        indexes,
        packs,
        written,
    })
}

/// Every object that can be of one kind: under [`layout::MANIFESTS`], [`layout::PACKS`] or
/// [`layout::INDEX`] (the legacy domain, then every tenant's), in key order, with keys that
/// continue with a hex id listed 16 ways at once (`Store::list_hex`). Other keys under those
/// prefixes are no objects of the layout.
pub(crate) async fn list_kind(store: &Store, prefix: &str) -> Result<Vec<ObjectMeta>> {
    if prefix != layout::INDEX {
        return store.list_hex(prefix).await;
    }
    let (legacy, tenants) = futures::try_join!(
        store.list_hex(layout::INDEX),
        store.list_hex(layout::TENANT_INDEX)
    )?;
    Ok([legacy, tenants].concat())
}
