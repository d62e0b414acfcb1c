//! A long-lived chunk index kept in step with the store: loaded once, then refreshed with the
//! index objects others wrote since (a writer keeps one for many checkpoints).
//!
//! Owns the cache, the set of index objects already merged into it and its refresh and reload.
//! Must not decide which packs are unusable (the gc fence tells the writer, which calls
//! [`IndexCache::drop_packs`]) and must not write to the store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::backend::Key;
use crate::error::Result;
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::id::PackId;
use crate::store::Store;
use crate::store::chunk_index::ChunkIndex;

/// A chunk index plus the keys of the index objects merged into it.
#[derive(Debug)]
pub struct IndexCache {
    index: Arc<RwLock<ChunkIndex>>,
    /// Index objects already merged into `index`.
    seen: Mutex<HashSet<Key>>,
}

impl IndexCache {
    /// Loads the store's index, leaving out `unusable` packs.
    pub async fn load(
        store: &Store,
        unusable: impl IntoIterator<Item = &PackId>,
    ) -> Result<IndexCache> {
        let (mut index, seen) = store.load_index_objects().await?;
        unusable.into_iter().for_each(|p| index.drop_pack(p));
        index.compact();
        tracing::debug!(
            chunks = index.len(),
            packs = index.packs().len(),
            "loaded chunk index"
        );
        Ok(IndexCache {
            index: Arc::new(RwLock::new(index)),
            seen: Mutex::new(seen.into_iter().collect()),
        })
    }

    /// The index itself, for workers that share it.
    pub fn shared(&self) -> &Arc<RwLock<ChunkIndex>> {
        &self.index
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

    /// Merges index objects written by others since this cache loaded or last refreshed;
    /// returns how many were listed as new.
    pub async fn refresh(&self, store: &Store) -> Result<usize> {
        let listed = store.list(&layout::prefix(layout::INDEX)).await?;
        let fresh: Vec<Key> = {
            let seen = self.seen.lock().expect("seen lock");
            listed
                .into_iter()
                .map(|m| m.key)
                .filter(|k| layout::parse_index_key(k).is_some() && !seen.contains(k))
                .collect()
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

    /// Rebuilds the index from every index object (packs gc deleted may linger otherwise).
    pub async fn reload(&self, store: &Store) -> Result<()> {
        let objects = store.read_all_indexes().await?;
        let mut index = ChunkIndex::new();
        objects.values().for_each(|o| index.add_object(o));
        *self.index.write().expect("index lock") = index;
        *self.seen.lock().expect("seen lock") = objects.into_keys().collect();
        Ok(())
    }
}
