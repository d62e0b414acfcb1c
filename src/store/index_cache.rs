//! A writer's long-lived chunk indexes, one per dedup domain (format-spec section 6): the
//! legacy domain, shared by every tenant, and one per tenant the writer has checkpointed,
//! loaded on that tenant's first checkpoint. Each is kept in step with the store by listing its
//! own prefix only, so a writer never lists or reads other tenants' index objects.
//!
//! Owns the caches, the set of index objects already merged into each and their refresh and
//! reload. Must not decide which packs are unusable (the gc fence tells the writer, which calls
//! [`Domains::drop_packs`]) and must not write to the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::backend::Key;
use crate::error::Result;
use crate::format::index::IndexObject;
use crate::id::{ChunkId, PackId, TenantId};
use crate::store::Store;
use crate::store::chunk_index::{ChunkIndex, Location};

/// One domain's chunk index plus the keys of the index objects merged into it.
#[derive(Debug)]
pub struct IndexCache {
    /// `None`: the legacy domain.
    tenant: Option<TenantId>,
    index: Arc<RwLock<ChunkIndex>>,
    /// Index objects already merged into `index`.
    seen: Mutex<HashSet<Key>>,
    /// The [`Domains`] epoch this cache last caught up with.
    epoch: AtomicU64,
}

impl IndexCache {
    /// Loads one domain's index, leaving out `unusable` packs. Packs are not listed: the fence
    /// drops what gc deleted, and a writer heads every pack it references (format-spec 13.3.4).
    pub async fn load(
        store: &Store,
        tenant: Option<TenantId>,
        unusable: impl IntoIterator<Item = &PackId>,
    ) -> Result<IndexCache> {
        let cache = IndexCache {
            tenant,
            index: Arc::new(RwLock::new(ChunkIndex::new())),
            seen: Mutex::new(HashSet::new()),
            epoch: AtomicU64::new(0),
        };
        cache.reload(store).await?;
        let mut index = cache.index.write().expect("index lock");
        unusable.into_iter().for_each(|p| index.drop_pack(p));
        index.compact();
        tracing::debug!(tenant = ?tenant, chunks = index.len(), packs = index.packs().len(),
            "loaded chunk index of a domain");
        drop(index);
        Ok(cache)
    }

    async fn list(&self, store: &Store) -> Result<Vec<Key>> {
        match &self.tenant {
            None => store.list_legacy_keys().await,
            Some(t) => store.list_tenant_keys(t).await,
        }
    }

    /// A read guard on the index.
    pub fn read(&self) -> RwLockReadGuard<'_, ChunkIndex> {
        self.index.read().expect("index lock")
    }

    /// Forgets every chunk of `packs`.
    pub fn drop_packs<'a>(&self, packs: impl IntoIterator<Item = &'a PackId>) {
        let mut index = self.index.write().expect("index lock");
        packs.into_iter().for_each(|p| index.drop_pack(p));
    }

    /// Learns an index object this process wrote.
    pub fn add_object(&self, object: &IndexObject) {
        self.index.write().expect("index lock").add_object(object);
    }

    /// Merges the domain's index objects written by others since this cache loaded or last
    /// refreshed; returns how many were listed as new.
    pub async fn refresh(&self, store: &Store) -> Result<usize> {
        let listed = self.list(store).await?;
        let fresh: Vec<Key> = {
            let seen = self.seen.lock().expect("seen lock");
            listed.into_iter().filter(|k| !seen.contains(k)).collect()
        };
        for key in &fresh {
            // gc merged it into an object the next refresh lists; validation keeps this safe.
            let obj = match store.read_index(key).await {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            self.add_object(&obj);
            self.seen.lock().expect("seen lock").insert(key.clone());
        }
        Ok(fresh.len())
    }

    /// Rebuilds the index from every object of the domain (packs gc deleted may linger
    /// otherwise).
    pub async fn reload(&self, store: &Store) -> Result<()> {
        let mut attempt = 0;
        let objects = loop {
            match store.read_indexes(self.list(store).await?).await {
                Err(e) if e.is_not_found() && attempt < crate::store::GC_RACE_RETRIES => {
                    attempt += 1
                }
                other => break other?,
            }
        };
        let mut index = ChunkIndex::new();
        objects.values().for_each(|o| index.add_object(o));
        index.compact();
        *self.index.write().expect("index lock") = index;
        *self.seen.lock().expect("seen lock") = objects.into_keys().collect();
        Ok(())
    }
}

/// What one tenant's checkpoint deduplicates against: its own domain, then the legacy domain.
#[derive(Clone, Debug)]
pub struct DomainIndex {
    own: Arc<RwLock<ChunkIndex>>,
    legacy: Arc<RwLock<ChunkIndex>>,
}

impl DomainIndex {
    /// Where `chunk` is, if either domain knows it.
    pub fn get(&self, chunk: &ChunkId) -> Option<Location> {
        let own = self.own.read().expect("index lock").get(chunk);
        own.or_else(|| self.legacy.read().expect("index lock").get(chunk))
    }

    /// Whether either domain knows `chunk`.
    pub fn contains(&self, chunk: &ChunkId) -> bool {
        self.own.read().expect("index lock").contains(chunk)
            || self.legacy.read().expect("index lock").contains(chunk)
    }

    /// A new index of those of `chunks` either domain knows (for planning a restore).
    pub fn subset<'a>(&self, chunks: impl IntoIterator<Item = &'a ChunkId>) -> ChunkIndex {
        let (own, legacy) = (
            self.own.read().expect("index lock"),
            self.legacy.read().expect("index lock"),
        );
        ChunkIndex::from_locations(
            chunks
                .into_iter()
                .filter_map(|c| own.get(c).or_else(|| legacy.get(c)).map(|l| (*c, l))),
        )
    }
}

/// A writer's caches: the legacy domain's and each loaded tenant's. When the gc state changes,
/// every cache forgets the packs it must at once (in memory), but only the legacy domain and
/// the checkpointing tenant's list their prefixes again; the others catch up on their tenant's
/// next checkpoint ([`Domains::catch_up`]), so a writer of many tenants does not list every
/// domain after each gc run.
#[derive(Debug)]
pub struct Domains {
    legacy: IndexCache,
    tenants: Mutex<HashMap<TenantId, Arc<IndexCache>>>,
    /// Bumped when caches must list their domain again (gc changed the state).
    refresh_epoch: AtomicU64,
    /// Bumped when caches must be rebuilt (deletions the state no longer enumerates).
    reload_epoch: AtomicU64,
}

impl Domains {
    /// Loads the legacy domain (leaving out `unusable` packs); tenants load on first use.
    pub async fn load(store: &Store, unusable: &BTreeSet<PackId>) -> Result<Domains> {
        Ok(Domains {
            legacy: IndexCache::load(store, None, unusable).await?,
            tenants: Mutex::new(HashMap::new()),
            refresh_epoch: AtomicU64::new(0),
            reload_epoch: AtomicU64::new(0),
        })
    }

    /// Marks every cache as behind: `reload` when it must be rebuilt, else listed again.
    pub fn mark_behind(&self, reload: bool) {
        let epoch = self.refresh_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        if reload {
            self.reload_epoch.store(epoch, Ordering::SeqCst);
        }
    }

    /// Brings the legacy cache and `cache` up to the newest epoch: listed again (or rebuilt),
    /// then `unusable` (what the gc state read after [`Domains::mark_behind`] forbids) dropped,
    /// since objects listed now may name packs dropped before.
    pub async fn catch_up(
        &self,
        store: &Store,
        cache: &IndexCache,
        unusable: &BTreeSet<PackId>,
    ) -> Result<()> {
        let (refresh, reload) = (
            self.refresh_epoch.load(Ordering::SeqCst),
            self.reload_epoch.load(Ordering::SeqCst),
        );
        for c in [&self.legacy, cache] {
            let at = c.epoch.load(Ordering::SeqCst);
            if at >= refresh {
                continue;
            }
            if at < reload {
                c.reload(store).await?;
            } else {
                c.refresh(store).await?;
            }
            c.drop_packs(unusable);
            c.epoch.store(refresh, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether `cache` or the legacy cache is behind the newest epoch.
    pub fn behind(&self, cache: &IndexCache) -> bool {
        let refresh = self.refresh_epoch.load(Ordering::SeqCst);
        [&self.legacy, cache]
            .iter()
            .any(|c| c.epoch.load(Ordering::SeqCst) < refresh)
    }

    /// `tenant`'s cache if loaded.
    pub fn loaded(&self, tenant: &TenantId) -> Option<Arc<IndexCache>> {
        self.tenants
            .lock()
            .expect("domains lock")
            .get(tenant)
            .cloned()
    }

    /// `tenant`'s cache, loading its domain (leaving out `unusable` packs) on first use.
    pub async fn tenant(
        &self,
        store: &Store,
        tenant: &TenantId,
        unusable: &BTreeSet<PackId>,
    ) -> Result<Arc<IndexCache>> {
        if let Some(c) = self.loaded(tenant) {
            return Ok(c);
        }
        let cache = IndexCache::load(store, Some(*tenant), unusable).await?;
        let epoch = self.refresh_epoch.load(Ordering::SeqCst);
        cache.epoch.store(epoch, Ordering::SeqCst);
        let cache = Arc::new(cache);
        let mut tenants = self.tenants.lock().expect("domains lock");
        Ok(tenants.entry(*tenant).or_insert(cache).clone())
    }

    /// What `cache` (a tenant's) deduplicates against.
    pub fn view(&self, cache: &IndexCache) -> DomainIndex {
        DomainIndex {
            own: cache.index.clone(),
            legacy: self.legacy.index.clone(),
        }
    }

    fn all(&self) -> Vec<Arc<IndexCache>> {
        let tenants = self.tenants.lock().expect("domains lock");
        tenants.values().cloned().collect()
    }

    /// Forgets every chunk of `packs` in every loaded domain.
    pub fn drop_packs(&self, packs: &BTreeSet<PackId>) {
        self.legacy.drop_packs(packs);
        self.all().iter().for_each(|c| c.drop_packs(packs));
    }

    /// Refreshes every loaded domain; returns how many objects were listed as new.
    pub async fn refresh(&self, store: &Store) -> Result<usize> {
        let mut n = self.legacy.refresh(store).await?;
        for c in self.all() {
            n += c.refresh(store).await?;
        }
        Ok(n)
    }

    /// Chunks and heap bytes held over every loaded domain.
    pub fn totals(&self) -> (usize, usize) {
        let mut out = (
            self.legacy.read().len(),
            self.legacy.read().entry_heap_bytes(),
        );
        for c in self.all() {
            let i = c.read();
            out = (out.0 + i.len(), out.1 + i.entry_heap_bytes());
        }
        out
    }
}
