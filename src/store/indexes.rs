//! Reading index objects and building the chunk index from them.
//!
//! Owns the index reads (each object re-hashed against its key, decoded totally, a listing that
//! lost a race with gc retried). Must not write anything.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use crate::backend::{BackendExt, Key};
use crate::error::{DecodeError, Error, Result};
use crate::format::index::{IndexObject, MAX_INDEX_BODY};
use crate::format::layout;
use crate::id::{IndexId, PackId};
use crate::store::chunk_index::ChunkIndex;
use crate::store::{GC_RACE_RETRIES, READ_CONCURRENCY, Store};

impl Store {
    /// Reads and checks one index object: its bytes hash to its key and decode.
    pub async fn read_index(&self, key: &Key) -> Result<IndexObject> {
        let id = layout::parse_index_key(key)
            .ok_or_else(|| Error::InvalidInput(format!("{key} is not an index key")))?;
        let bytes = self.backend.get_bytes(key, MAX_INDEX_BODY + 64).await?;
        if IndexId::of(&bytes) != id {
            return Err(Error::corrupt(
                key,
                DecodeError::new("index", "content does not hash to its key"),
            ));
        }
        IndexObject::decode(&bytes).map_err(|e| Error::corrupt(key, e))
    }

    /// Every index object, keyed by its key.
    pub async fn read_all_indexes(&self) -> Result<BTreeMap<Key, IndexObject>> {
        let mut attempt = 0;
        loop {
            match self.read_listed_indexes().await {
                Err(e) if e.is_not_found() && attempt < GC_RACE_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn read_listed_indexes(&self) -> Result<BTreeMap<Key, IndexObject>> {
        let keys: Vec<Key> = self
            .list(&layout::prefix(layout::INDEX))
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(|k| layout::parse_index_key(k).is_some())
            .collect();
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
        Ok(self.load_index_objects().await?.0)
    }

    /// [`Store::load_index`], plus the keys of the index objects it was built from.
    pub async fn load_index_objects(&self) -> Result<(ChunkIndex, Vec<Key>)> {
        // List packs after reading index objects: a pack written after the listing is still
        // found, as its index object was written after it.
        let objects = self.read_all_indexes().await?;
        let packs: HashSet<PackId> = self
            .list(&layout::prefix(layout::PACKS))
            .await?
            .iter()
            .filter_map(|m| layout::parse_pack_key(&m.key))
            .collect();
        // Dictionaries are older than the packs whose blobs name them: load them after the listing.
        self.load_dictionaries().await?;
        let mut index = ChunkIndex::new();
        for obj in objects.values() {
            for (pack, entries) in obj.packs.iter().filter(|(p, _)| packs.contains(p)) {
                index.add_pack(*pack, entries);
            }
        }
        index.compact();
        Ok((index, objects.into_keys().collect()))
    }
}
