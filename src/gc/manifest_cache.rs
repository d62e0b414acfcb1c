//! gc's manifest cache: copies of manifest objects kept in the store (format-spec 13.7), so that
//! a run reads only the manifests that changed since the last one instead of one GET each.
//!
//! A copy is used only when the MD5 of its bytes equals the etag the run's own listing reports
//! for its key (S3's etag of an object written by one PUT). Such a copy is byte for byte what a
//! GET would return at the listing's moment, so gc decides exactly as if it had read the store;
//! a backend whose etags are not content digests (the local one) never uses the cache. Losing or
//! damaging a shard costs reads, never data: it is read with warnings, not errors, and rewritten.
//!
//! Owns loading, lookup and saving of shards. Must not decide anything from a manifest (that is
//! the rest of gc) and writes nothing but its own shards.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use crate::backend::{BackendExt, Key, Payload, PutMode};
use crate::error::Result;
use crate::format::layout;
use crate::format::manifest::Manifest;
use crate::format::manifest_cache::{CacheShard, MAX_CACHED_MANIFEST, MAX_SHARD_BODY};
use crate::store::{ManifestRef, READ_CONCURRENCY, Store};

use super::compact::Scanned;

/// Copies of manifest objects by key, plus a digest of each shard as loaded.
#[derive(Default)]
pub(crate) struct ManifestCache {
    copies: HashMap<Key, Bytes>,
    /// blake3 of each shard's bytes as loaded (`None`: present but unreadable, so rewrite it).
    loaded: BTreeMap<u8, Option<blake3::Hash>>,
    /// Manifests the last [`ManifestCache::read`] took from a copy.
    pub(crate) hits: usize,
}

/// Entries per shard a save aims at: one shard per 512 manifests, at most 256 shards.
const ENTRIES_PER_SHARD: usize = 512;

/// The shard a manifest key belongs to when `shards` are written: the first byte of the blake3
/// of the key, modulo `shards`. Lookups do not depend on it (any shard's copy may serve).
fn shard_of(key: &Key, shards: usize) -> u8 {
    (blake3::hash(key.as_str().as_bytes()).as_bytes()[0] as usize % shards) as u8
}

/// Whether `bytes` are the object a listing reported with `etag` and `size`.
fn matches(bytes: &[u8], size: u64, etag: Option<&str>) -> bool {
    let Some(etag) = etag else { return false };
    let etag = etag.trim_matches('"');
    bytes.len() as u64 == size
        && etag.len() == 32
        && etag.eq_ignore_ascii_case(&hex::encode(Md5::digest(bytes)))
}

impl ManifestCache {
    /// Reads every shard. A shard that cannot be listed, read or decoded is skipped with a
    /// warning (and rewritten by the next save).
    pub(crate) async fn load(store: &Store) -> ManifestCache {
        let mut cache = ManifestCache::default();
        let listed = match store.list(&layout::prefix(layout::MANIFEST_CACHE)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "manifest cache not listed; reading every manifest");
                return cache;
            }
        };
        let shards = listed
            .into_iter()
            .filter_map(|m| layout::parse_manifest_cache_key(&m.key).map(|s| (s, m.key)));
        let read: Vec<(u8, Key, Result<Bytes>)> = futures::stream::iter(shards.map(|(s, k)| {
            let backend = store.backend();
            async move {
                let got = backend.get_bytes(&k, MAX_SHARD_BODY + 64).await;
                (s, k, got.map_err(Into::into))
            }
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
        for (shard, key, got) in read {
            let decoded = got.and_then(|b| {
                let hash = blake3::hash(&b);
                let s = CacheShard::decode(&b).map_err(|e| crate::Error::corrupt(&key, e))?;
                Ok((hash, s))
            });
            match decoded {
                Ok((hash, s)) => {
                    cache.loaded.insert(shard, Some(hash));
                    let copies = s.entries.into_iter().map(|(k, b)| (k, Bytes::from(b)));
                    cache.copies.extend(copies);
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "manifest cache shard ignored");
                    cache.loaded.insert(shard, None);
                }
            }
        }
        cache
    }

    /// The copy of `r` if it is exactly the object listed with `etag`.
    fn hit(&self, r: &ManifestRef, etag: Option<&str>) -> Option<Bytes> {
        let b = self.copies.get(&r.key)?;
        matches(b, r.size, etag).then(|| b.clone())
    }

    /// Reads `refs` (listed with the etags in `etags`), from copies where they match and from
    /// the store otherwise, keeping their order; remembers what it read.
    pub(crate) async fn read(
        &mut self,
        store: &Store,
        refs: &[ManifestRef],
        etags: &HashMap<&Key, Option<String>>,
    ) -> Result<Vec<Manifest>> {
        let etag = |r: &ManifestRef| etags.get(&r.key).cloned().flatten();
        // Owned items keep the futures `Send` for any caller (no higher-ranked borrow).
        let todo: Vec<(ManifestRef, Option<Bytes>)> = refs
            .iter()
            .map(|r| (r.clone(), self.hit(r, etag(r).as_deref())))
            .collect();
        self.hits = todo.iter().filter(|(_, c)| c.is_some()).count();
        let bytes: Vec<Bytes> = futures::stream::iter(todo.into_iter().map(|(r, c)| async move {
            match c {
                Some(b) => Ok(b),
                None => store.read_manifest_bytes(&r).await,
            }
        }))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
        let mut out = Vec::with_capacity(refs.len());
        for (r, b) in refs.iter().zip(bytes) {
            out.push(Store::decode_manifest(r, &b)?);
            self.copies.insert(r.key.clone(), b);
        }
        Ok(out)
    }

    /// Writes the shards whose content changed: copies of the listed manifests that match their
    /// listed etag and are small enough. Failures are logged, never returned.
    pub(crate) async fn save(&self, store: &Store, listed: &[Scanned]) {
        let mut shards: BTreeMap<u8, (usize, CacheShard)> = BTreeMap::new();
        let mut copies: Vec<(&Key, Bytes)> = listed
            .iter()
            .filter_map(|s| Some((&s.r.key, self.hit(&s.r, s.etag.as_deref())?)))
            .collect();
        copies.sort_by(|a, b| a.0.cmp(b.0));
        let count = copies.len().div_ceil(ENTRIES_PER_SHARD).clamp(1, 256);
        for (key, b) in copies {
            let (bytes, shard) = shards.entry(shard_of(key, count)).or_default();
            let grown = *bytes + b.len() + key.as_str().len() + 6;
            if b.len() <= MAX_CACHED_MANIFEST && (grown as u64) < MAX_SHARD_BODY {
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
                (Some(b), Some(Some(h))) => blake3::hash(b) == *h,
                (None, None) => true,
                _ => false,
            };
            (!same).then_some((id, new))
        });
        let backend = store.backend();
        let results: Vec<(Key, Result<(), crate::backend::BackendError>)> =
            futures::stream::iter(writes.map(|(id, new)| {
                let key = layout::manifest_cache_key(id);
                async move {
                    let r = match new {
                        Some(b) => {
                            backend
                                .put(&key, Payload::from_bytes(b), PutMode::Overwrite)
                                .await
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
                tracing::warn!(%key, error = %e, "manifest cache shard not written");
            }
        }
    }
}
