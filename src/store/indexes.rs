//! Reading index objects and building chunk indexes from them: the whole store's (gc, verify,
//! statistics) or one tenant's dedup domain (its own objects plus the legacy domain; writers and
//! restores of that tenant, format-spec section 6).
//!
//! Owns the index reads (each object re-hashed against its key, decoded totally, a listing that
//! lost a race with gc retried). Must not write anything.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use crate::backend::{BackendExt, Key};
use crate::error::{DecodeError, Error, Result};
use crate::format::index::{IndexObject, MAX_INDEX_BODY};
use crate::format::layout::{self, IndexDomain};
use crate::id::{ChunkId, IndexId, PackId, TenantId};
use crate::store::chunk_index::ChunkIndex;
use crate::store::{GC_RACE_RETRIES, READ_CONCURRENCY, Store};

/// Index objects by key.
pub type IndexObjects = BTreeMap<Key, IndexObject>;

impl Store {
    /// Reads and checks one index object of either domain form: its bytes hash to its key and
    /// decode.
    pub async fn read_index(&self, key: &Key) -> Result<IndexObject> {
        if layout::parse_index_key(key).is_none() {
            return Err(Error::InvalidInput(format!("{key} is not an index key")));
        }
        let bytes = self.backend.get_bytes(key, MAX_INDEX_BODY + 64).await?;
        Self::decode_index(key, &bytes)
    }

    /// Checks that `bytes` hash to the id in `key` and decodes them as an index object.
    pub fn decode_index(key: &Key, bytes: &[u8]) -> Result<IndexObject> {
        let (_, id) = layout::parse_index_key(key)
            .ok_or_else(|| Error::InvalidInput(format!("{key} is not an index key")))?;
        if IndexId::of(bytes) != id {
            return Err(Error::corrupt(
                key,
                DecodeError::new("index", "content does not hash to its key"),
            ));
        }
        IndexObject::decode(bytes).map_err(|e| Error::corrupt(key, e))
    }

    /// Every index object of every domain, keyed by its key.
    pub async fn read_all_indexes(&self) -> Result<IndexObjects> {
        self.read_retrying(None, true).await
    }

    /// The index objects `tenant`'s checkpoints and restores read: the legacy domain, then the
    /// tenant's own domain (listed in that order, so an object gc moves from the legacy domain
    /// into the tenant's, creating before deleting, is seen at least once).
    pub async fn read_domain_indexes(&self, tenant: &TenantId) -> Result<IndexObjects> {
        self.read_retrying(Some(tenant), false).await
    }

    async fn read_retrying(&self, tenant: Option<&TenantId>, all: bool) -> Result<IndexObjects> {
        let mut attempt = 0;
        loop {
            let keys = match (all, tenant) {
                (true, _) => self.list_index_keys(&layout::prefix(layout::INDEX)).await,
                (false, t) => self.list_domain_keys(t).await,
            };
            match self.read_indexes(keys?).await {
                Err(e) if e.is_not_found() && attempt < GC_RACE_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    /// Index keys (of either form) under `prefix`.
    async fn list_index_keys(&self, prefix: &crate::backend::Prefix) -> Result<Vec<Key>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(layout::is_index_key)
            .collect())
    }

    /// The keys of the legacy domain and, with `tenant`, of that tenant's domain (legacy first).
    pub async fn list_domain_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<Key>> {
        let mut keys = self.list_legacy_keys().await?;
        if let Some(t) = tenant {
            keys.extend(self.list_tenant_keys(t).await?);
        }
        Ok(keys)
    }

    /// The keys of the legacy domain, listed by their 16 first hex digits so that no tenant's
    /// domain is listed with them.
    pub async fn list_legacy_keys(&self) -> Result<Vec<Key>> {
        let listed = self.list_hex(layout::INDEX).await?;
        Ok(listed
            .into_iter()
            .map(|m| m.key)
            .filter(|k| matches!(layout::parse_index_key(k), Some((IndexDomain::Legacy, _))))
            .collect())
    }

    /// The keys of `tenant`'s domain (every level).
    pub async fn list_tenant_keys(&self, tenant: &TenantId) -> Result<Vec<Key>> {
        let own = self
            .list_index_keys(&layout::tenant_index_prefix(tenant))
            .await?;
        Ok(own
            .into_iter()
            .filter(|k| layout::parse_index_key(k).and_then(|(d, _)| d.tenant()) == Some(*tenant))
            .collect())
    }

    /// Reads `keys`, [`READ_CONCURRENCY`] at a time; a missing one fails the read (`NotFound`).
    pub async fn read_indexes(&self, keys: Vec<Key>) -> Result<IndexObjects> {
        futures::stream::iter(keys.into_iter().map(|k| async move {
            let obj = self.read_index(&k).await?;
            Ok::<_, Error>((k, obj))
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
    }

    /// The chunk index built from every index object, leaving out packs that do not exist (an
    /// index object can outlive a pack gc deleted if gc was interrupted; another copy of its
    /// chunks then exists, or gc would not have deleted it).
    pub async fn load_index(&self) -> Result<ChunkIndex> {
        let objects = self.read_all_indexes().await?;
        // List packs after reading index objects: a pack written after the listing is still
        // found, as its index object was written after it.
        let packs: HashSet<PackId> = self
            .list_hex(layout::PACKS)
            .await?
            .iter()
            .filter_map(|m| layout::parse_pack_key(&m.key))
            .collect();
        self.index_of(&objects, |p| packs.contains(p)).await
    }

    /// The chunk index of `tenant`'s domain and the legacy domain only: what a restore of that
    /// tenant's timelines needs (format-spec section 6). Unlike [`Store::load_index`] it does not
    /// list packs, which would cost a request per 1,000 packs of the whole store: a pack gc
    /// deleted after its index object was read shows as a missing pack when a restore reads it,
    /// and the restore then plans those reads again without it (`restore::reads`).
    pub async fn load_tenant_index(&self, tenant: &TenantId) -> Result<ChunkIndex> {
        let objects = self.read_domain_indexes(tenant).await?;
        self.index_of(&objects, |_| true).await
    }

    /// Like [`Store::load_tenant_index`], but lists and reads the domains again (a bounded number
    /// of times) while some of `needed` resolves nowhere: a listing is not a snapshot, and one
    /// that ran while gc moved or merged index objects may have seen neither the old nor the new
    /// object (format-spec section 6). After that, the whole store's index is the last resort.
    pub async fn load_tenant_index_for(
        &self,
        tenant: &TenantId,
        needed: &[ChunkId],
    ) -> Result<ChunkIndex> {
        let unresolved = |index: &ChunkIndex| needed.iter().filter(|c| !index.contains(c)).count();
        let mut index = self.load_tenant_index(tenant).await?;
        for _ in 0..GC_RACE_RETRIES {
            if unresolved(&index) == 0 {
                return Ok(index);
            }
            tracing::info!(%tenant, "chunks resolve nowhere in the tenant's domain; listing again");
            index = self.load_tenant_index(tenant).await?;
        }
        if unresolved(&index) > 0 {
            tracing::warn!(%tenant, "chunks outside the tenant's domain; reading every index object");
            index = self.load_index().await?;
        }
        Ok(index)
    }

    /// The chunk index of the packs of `objects` that `keep` accepts.
    async fn index_of(
        &self,
        objects: &IndexObjects,
        keep: impl Fn(&PackId) -> bool,
    ) -> Result<ChunkIndex> {
        // Dictionaries are older than the packs whose blobs name them, and index objects newer:
        // loaded after the objects were read, every dictionary they need is found.
        self.load_dictionaries().await?;
        let mut index = ChunkIndex::new();
        for obj in objects.values() {
            for (pack, entries) in obj.packs.iter().filter(|(p, _)| keep(p)) {
                index.add_pack(*pack, entries);
            }
        }
        index.compact();
        Ok(index)
    }
}
