//! gc's cache: copies of manifests and index objects kept in the store (format-spec 13.7), so
//! that a run reads only the objects that changed since the last one instead of one GET each.
//!
//! A copy is used only when it is provably the object the run's own listing shows: for an index
//! object, its bytes hash to the id in its key (on every backend); for a manifest, the MD5 of its
//! bytes equals the listed etag (S3's etag of an object written by one PUT, and the local
//! backend's for objects up to 1 MiB; a backend whose etags are not content digests never uses
//! manifest copies). Such a copy is byte for byte what a GET would return, so gc decides
//! exactly as if it had read the store.
//! Losing or damaging a shard costs reads, never data: shards are read with warnings, not
//! errors, and rewritten.
//!
//! Owns loading, lookup and saving of shards. Must not decide anything from the objects (that
//! is the rest of gc) and writes nothing but its own shards.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use rayon::prelude::*;

use crate::backend::{BackendExt, Key, ObjectMeta, Payload, PutMode};
use crate::error::Result;
use crate::format::layout;
use crate::format::manifest_cache::{CacheShard, MAX_CACHED_OBJECT, MAX_SHARD_BODY};
use crate::id::IndexId;
use crate::store::{READ_CONCURRENCY, Store};

// A local store's etag is an MD5 for every object a shard may copy.
const _: () = assert!(MAX_CACHED_OBJECT as u64 <= crate::backend::local::MD5_ETAG_MAX);

/// Entries per shard a save aims at: one shard per 512 objects, at most 256 shards.
const ENTRIES_PER_SHARD: usize = 512;

/// Which objects a cache holds copies of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Copies {
    /// Manifests (`gc/cache/manifests/`): a copy counts when its MD5 is the listed etag.
    Manifests,
    /// Index objects (`gc/cache/indexes/`): a copy counts when it hashes to its key's id.
    Indexes,
}

impl Copies {
    fn prefix(self) -> &'static str {
        match self {
            Copies::Manifests => layout::MANIFEST_CACHE,
            Copies::Indexes => layout::INDEX_CACHE,
        }
    }

    /// Whether `bytes` are exactly the object listed as `meta`.
    fn matches(self, meta: &ObjectMeta, bytes: &[u8]) -> bool {
        if bytes.len() as u64 != meta.size {
            return false;
        }
        match self {
            Copies::Manifests => meta.etag.as_deref().is_some_and(|etag| {
                let etag = etag.trim_matches('"');
                etag.len() == 32 && etag.eq_ignore_ascii_case(&hex::encode(Md5::digest(bytes)))
            }),
            Copies::Indexes => {
                layout::parse_index_key(&meta.key).is_some_and(|(_, id)| IndexId::of(bytes) == id)
            }
        }
    }
}

/// The trailing blake3 of an envelope (format-spec 3), checked when a shard is decoded.
type Checksum = [u8; 32];

fn checksum(sealed: &[u8]) -> Checksum {
    let tail = sealed.len().checked_sub(32).and_then(|at| sealed.get(at..));
    tail.and_then(|t| t.try_into().ok()).unwrap_or([0; 32])
}

/// The shard an object key belongs to when `shards` are written: the first byte of the blake3
/// of the key, modulo `shards`. Lookups do not depend on it (any shard's copy may serve).
fn shard_of(key: &Key, shards: usize) -> u8 {
    (blake3::hash(key.as_str().as_bytes()).as_bytes()[0] as usize % shards) as u8
}

/// Copies of one kind of object by key, plus a digest of each shard as loaded.
pub(crate) struct ObjectCache {
    what: Copies,
    copies: HashMap<Key, Bytes>,
    /// The listings (size, etag) whose copies the last [`ObjectCache::read`] found to be
    /// exactly the listed object, by key, so that saving under the same listing need not check
    /// them again.
    matched: HashMap<Key, (u64, Option<String>)>,
    /// Each shard's envelope checksum as loaded (`None`: present but unreadable, so rewrite
    /// it). A shard whose new encoding ends with the same checksum has the same bytes.
    loaded: BTreeMap<u8, Option<Checksum>>,
    /// How many copies the shards held as loaded.
    loaded_copies: usize,
    /// Whether any read since loading took an object from the store (so the copies are no
    /// longer only the loaded ones).
    read_from_store: bool,
    /// Objects the last [`ObjectCache::read`] took from a copy.
    pub(crate) hits: usize,
}

impl ObjectCache {
    /// Reads every shard of `what`. A shard that cannot be listed, read or decoded is skipped
    /// with a warning (and rewritten by the next save).
    pub(crate) async fn load(store: &Store, what: Copies) -> ObjectCache {
        let mut cache = ObjectCache {
            what,
            copies: HashMap::new(),
            matched: HashMap::new(),
            loaded: BTreeMap::new(),
            loaded_copies: 0,
            read_from_store: false,
            hits: 0,
        };
        let listed = match store.list(&layout::prefix(what.prefix())).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, ?what, "gc cache not listed; reading every object");
                return cache;
            }
        };
        let shards = listed
            .into_iter()
            .filter_map(|m| layout::parse_cache_key(what.prefix(), &m.key).map(|s| (s, m.key)));
        let backend = store.backend();
        let read: Vec<(u8, Key, Result<Bytes>)> =
            futures::stream::iter(shards.map(|(s, k)| async move {
                let got = backend.get_bytes(&k, MAX_SHARD_BODY + 64).await;
                (s, k, got.map_err(Into::into))
            }))
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        for (shard, key, got) in read {
            let decoded = got.and_then(|b| {
                let s = CacheShard::decode(&b).map_err(|e| crate::Error::corrupt(&key, e))?;
                Ok((checksum(&b), s))
            });
            match decoded {
                Ok((hash, s)) => {
                    cache.loaded.insert(shard, Some(hash));
                    cache.loaded_copies += s.entries.len();
                    let copies = s.entries.into_iter().map(|(k, b)| (k, Bytes::from(b)));
                    cache.copies.extend(copies);
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "gc cache shard ignored");
                    cache.loaded.insert(shard, None);
                }
            }
        }
        cache
    }

    /// The copy of the object listed as `meta`, if it is exactly that object.
    fn hit(&self, meta: &ObjectMeta) -> Option<Bytes> {
        let b = self.copies.get(&meta.key)?;
        self.what.matches(meta, b).then(|| b.clone())
    }

    /// The bytes of each listed object (at most `max_len` each), from copies where they match
    /// and from the store otherwise, in order; remembers what it read. The caller checks and
    /// decodes them as it would any object read from the store.
    pub(crate) async fn read(
        &mut self,
        store: &Store,
        listed: &[ObjectMeta],
        max_len: u64,
    ) -> Result<Vec<Bytes>> {
        // Owned items keep the futures `Send` for any caller (no higher-ranked borrow).
        let todo: Vec<(Key, Option<Bytes>)> = listed
            .par_iter()
            .map(|m| (m.key.clone(), self.hit(m)))
            .collect();
        self.matched = listed
            .iter()
            .zip(&todo)
            .filter(|(_, (_, c))| c.is_some())
            .map(|(m, _)| (m.key.clone(), (m.size, m.etag.clone())))
            .collect();
        self.hits = self.matched.len();
        self.read_from_store |= self.hits < listed.len();
        let backend = store.backend();
        let bytes: Vec<Bytes> = futures::stream::iter(todo.into_iter().map(|(k, c)| async move {
            match c {
                Some(b) => Ok::<_, crate::Error>(b),
                None => Ok(backend.get_bytes(&k, max_len).await?),
            }
        }))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
        for (m, b) in listed.iter().zip(&bytes) {
            self.copies.insert(m.key.clone(), b.clone());
        }
        Ok(bytes)
    }

    /// Writes the shards whose content changed: copies of the `listed` objects that are exactly
    /// those objects and small enough. Failures are logged, never returned.
    pub(crate) async fn save(&self, store: &Store, listed: &[ObjectMeta]) {
        if self.unchanged(listed) {
            return;
        }
        let copy = |m: &ObjectMeta| match self.matched_now(m) {
            true => self.copies.get(&m.key).cloned(),
            false => self.hit(m),
        };
        let mut copies: Vec<(&Key, Bytes)> = listed
            .iter()
            .filter_map(|m| Some((&m.key, copy(m)?)))
            .filter(|(_, b)| b.len() <= MAX_CACHED_OBJECT)
            .collect();
        copies.sort_by(|a, b| a.0.cmp(b.0));
        let count = copies.len().div_ceil(ENTRIES_PER_SHARD).clamp(1, 256);
        let mut shards: BTreeMap<u8, (usize, CacheShard)> = BTreeMap::new();
        for (key, b) in copies {
            let (bytes, shard) = shards.entry(shard_of(key, count)).or_default();
            let grown = *bytes + b.len() + key.as_str().len() + 6;
            if (grown as u64) < MAX_SHARD_BODY {
                *bytes = grown;
                shard.entries.push((key.clone(), b.to_vec()));
            }
        }
        let mut ids: Vec<u8> = self.loaded.keys().copied().collect();
        ids.extend(shards.keys());
        ids.sort_unstable();
        ids.dedup();
        let writes = ids.into_iter().filter_map(|id| {
            let new = shards.get(&id).map(|(_, s)| Bytes::from(s.encode()));
            let same = match (&new, self.loaded.get(&id)) {
                (Some(b), Some(Some(h))) => checksum(b) == *h,
                (None, None) => true,
                _ => false,
            };
            (!same).then_some((id, new))
        });
        let backend = store.backend();
        let prefix = self.what.prefix();
        let results: Vec<(Key, Result<(), crate::backend::BackendError>)> =
            futures::stream::iter(writes.map(|(id, new)| {
                let key = layout::cache_key(prefix, id);
                async move {
                    let r = match new {
                        Some(b) => {
                            let payload = Payload::from_bytes(b);
                            backend.put(&key, payload, PutMode::Overwrite).await
                        }
                        None => backend.delete(&key).await,
                    };
                    (key, r)
                }
            }))
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        for (key, r) in results {
            if let Err(e) = r {
                tracing::warn!(%key, error = %e, "gc cache shard not written");
            }
        }
    }
}

impl ObjectCache {
    /// Whether the shards as loaded already hold exactly the copies a save of `listed` would
    /// write: every shard was readable, no read took an object from the store, the last read
    /// found every listed object among the copies (so among the loaded ones), and there are as
    /// many listed objects as loaded copies (so the same keys, with the same bytes). Saving
    /// would then rewrite nothing.
    fn unchanged(&self, listed: &[ObjectMeta]) -> bool {
        let all_matched = listed.iter().all(|m| self.matched_now(m));
        let readable = self.loaded.values().all(Option::is_some);
        readable && !self.read_from_store && all_matched && listed.len() == self.loaded_copies
    }

    /// Whether the last read matched `m`'s copy under the listing `m` (same size and etag).
    fn matched_now(&self, m: &ObjectMeta) -> bool {
        (self.matched.get(&m.key)).is_some_and(|(size, etag)| *size == m.size && *etag == m.etag)
    }

    /// Lists the objects again, reads those not copied yet and saves: after a run that wrote
    /// objects (bases, index objects), so that the next run finds them copied. Failures are
    /// logged, never returned.
    pub(crate) async fn refresh(&mut self, store: &Store, prefix: &str, max_len: u64) {
        let wanted = |m: &ObjectMeta| match self.what {
            Copies::Manifests => layout::parse_manifest_key(&m.key).is_some(),
            Copies::Indexes => layout::parse_index_key(&m.key).is_some(),
        };
        let listed: Vec<ObjectMeta> = match super::scan::list_kind(store, prefix).await {
            Ok(l) => l.into_iter().filter(|m| wanted(m)).collect(),
            Err(e) => return tracing::warn!(error = %e, "gc cache not refreshed"),
        };
        if let Err(e) = self.read(store, &listed, max_len).await {
            return tracing::warn!(error = %e, "gc cache not refreshed");
        }
        self.save(store, &listed).await;
    }
}

/// The two caches one gc run uses.
pub(crate) struct Caches {
    pub(crate) manifests: ObjectCache,
    pub(crate) indexes: ObjectCache,
}

impl Caches {
    /// Loads both caches.
    pub(crate) async fn load(store: &Store) -> Caches {
        let (manifests, indexes) = futures::join!(
            ObjectCache::load(store, Copies::Manifests),
            ObjectCache::load(store, Copies::Indexes)
        );
        Caches { manifests, indexes }
    }

    /// Refreshes the manifest copies if `bases` were written, the index copies if `indexes`
    /// were (see [`ObjectCache::refresh`]).
    pub(crate) async fn refresh(&mut self, store: &Store, (bases, indexes): (bool, bool)) {
        if bases {
            let max = crate::format::manifest::MAX_MANIFEST_BODY + 64;
            self.manifests.refresh(store, layout::MANIFESTS, max).await;
        }
        if indexes {
            let max = crate::format::index::MAX_INDEX_BODY + 64;
            self.indexes.refresh(store, layout::INDEX, max).await;
        }
    }
}
