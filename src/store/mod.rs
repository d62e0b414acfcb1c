//! `Store`: an opened store — its backend and configuration — and the reads every operation
//! shares: listing and reading manifests, folding a timeline, loading the chunk index.
//!
//! Owns store-level reading rules: every object read is bounded in size before it is buffered,
//! checked against its key (content-addressed objects are re-hashed) and decoded totally. Writing
//! lives in `write`, reassembly in `restore`, checking in `verify`.
//!
//! Submodules: `indexes` (reading index objects, building the chunk index), [`chunk_index`]
//! (the in-memory index), `index_cache` (a writer's index and its refresh), `gc_state`
//! (reading the gc state).
//!
//! gc may fold manifests into a base and then delete them, and merge index objects and then
//! delete the originals, while a reader works: a reader that finds a listed manifest or index
//! object gone lists again and starts over (a few times), and a timeline is read newest first,
//! stopping at its newest base.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{BackendError, BackendExt, DynBackend, Key, ObjectMeta, Prefix};
use crate::error::{DecodeError, Error, Result};
use crate::format::chunker::Chunker;
use crate::format::config::StoreConfig;
use crate::format::layout;
use crate::format::manifest::{MAX_MANIFEST_BODY, Manifest, TimelineState};
use crate::id::{Lsn, TenantId, TimelineId};

#[cfg(test)]
mod chain_tests;
pub mod chunk_index;
mod chunks;
mod dicts;
pub(crate) mod gc_state;
pub(crate) mod index_cache;
mod indexes;
mod packs;

/// How many small objects (index, manifests) are fetched at once.
pub const READ_CONCURRENCY: usize = 16;
/// Times a read that lost a race with gc (a listed object was deleted) lists again.
pub const GC_RACE_RETRIES: usize = 5;

/// An opened store.
#[derive(Debug, Clone)]
pub struct Store {
    backend: DynBackend,
    config: StoreConfig,
}

/// One manifest as listed: where it is and what its key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRef {
    /// The manifest's key.
    pub key: Key,
    /// Tenant, parsed from the key.
    pub tenant: TenantId,
    /// Timeline, parsed from the key.
    pub timeline: TimelineId,
    /// Checkpoint LSN, parsed from the key.
    pub lsn: Lsn,
    /// Object size, to bound the read.
    pub size: u64,
}

impl Store {
    /// Opens an existing store; fails with `NotFound` when it has no config.
    pub async fn open(backend: DynBackend) -> Result<Store> {
        let key = layout::config_key();
        let bytes = match backend.get_bytes(&key, 1 << 16).await {
            Err(e) if e.is_not_found() => {
                return Err(Error::NotFound(format!(
                    "store config ({key}): is this a layercas store?"
                )));
            }
            other => other?,
        };
        let config = StoreConfig::decode(&bytes).map_err(|e| Error::corrupt(&key, e))?;
        Ok(Store { backend, config })
    }

    /// Opens the store, creating its config from `proposed` if it has none. When another writer
    /// created it first, that config wins.
    pub async fn open_or_create(backend: DynBackend, proposed: StoreConfig) -> Result<Store> {
        proposed.validate().map_err(Error::InvalidInput)?;
        let key = layout::config_key();
        match backend
            .create_bytes(&key, Bytes::from(proposed.encode()))
            .await
        {
            Ok(()) => tracing::info!(store_id = hex::encode(proposed.store_id), "created store"),
            Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Store::open(backend).await
    }

    /// The backend.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// The configuration every writer uses.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// A chunker with the store's parameters.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(&self.config.chunker).expect("config was validated when opened")
    }

    /// Lists `prefix` completely.
    pub async fn list(&self, prefix: &Prefix) -> Result<Vec<ObjectMeta>> {
        Ok(self.backend.list_all(prefix).await?)
    }

    /// The objects under `prefix` whose key continues with a lower-case hex digit, in key order,
    /// as 16 listings (one per digit) run concurrently. A listing is a chain of pages of 1,000
    /// keys, each waiting for the last, so a large prefix whose keys continue with hex ids
    /// (manifests, packs, index objects) is listed in about a sixteenth of the time.
    pub async fn list_hex(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let parts: Vec<Vec<ObjectMeta>> =
            futures::stream::iter("0123456789abcdef".chars().map(|digit| async move {
                let p = Prefix::new(format!("{prefix}{digit}"))?;
                self.list(&p).await
            }))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(parts.concat())
    }

    /// Manifests under `prefix` (see `layout`), sorted by tenant, timeline and LSN.
    pub async fn list_manifests(&self, prefix: &Prefix) -> Result<Vec<ManifestRef>> {
        Ok(self.list_manifests_from(&self.list(prefix).await?))
    }

    /// Every manifest of the store, listed 16 ways at once ([`Store::list_hex`]), sorted by
    /// tenant, timeline and LSN.
    pub async fn list_all_manifests(&self) -> Result<Vec<ManifestRef>> {
        Ok(self.list_manifests_from(&self.list_hex(layout::MANIFESTS).await?))
    }

    /// The manifests among listed objects, sorted by tenant, timeline and LSN. Keys under the
    /// manifest prefix that are not manifest keys are skipped with a warning.
    pub fn list_manifests_from(&self, listed: &[ObjectMeta]) -> Vec<ManifestRef> {
        let mut out: Vec<ManifestRef> = listed
            .iter()
            .filter(|m| m.key.as_str().starts_with(layout::MANIFESTS))
            .filter_map(|m| match layout::parse_manifest_key(&m.key) {
                Some((tenant, timeline, lsn)) => Some(ManifestRef {
                    key: m.key.clone(),
                    tenant,
                    timeline,
                    lsn,
                    size: m.size,
                }),
                None => {
                    tracing::warn!(key = %m.key, "not a manifest key; ignored");
                    None
                }
            })
            .collect();
        out.sort_by_key(|m| (m.tenant, m.timeline, m.lsn));
        out
    }

    /// Reads and checks one manifest: it decodes and its content matches its key.
    pub async fn read_manifest(&self, r: &ManifestRef) -> Result<Manifest> {
        let bytes = self.read_manifest_bytes(r).await?;
        Self::decode_manifest(r, &bytes)
    }

    /// The bytes of one manifest object, unchecked (see [`Store::decode_manifest`]).
    pub async fn read_manifest_bytes(&self, r: &ManifestRef) -> Result<Bytes> {
        Ok(self
            .backend
            .get_bytes(&r.key, MAX_MANIFEST_BODY + 64)
            .await?)
    }

    /// Decodes a manifest's bytes and checks that its content matches its key.
    pub fn decode_manifest(r: &ManifestRef, bytes: &[u8]) -> Result<Manifest> {
        let m = Manifest::decode(bytes).map_err(|e| Error::corrupt(&r.key, e))?;
        if (m.tenant, m.timeline, m.lsn) != (r.tenant, r.timeline, r.lsn) {
            let e = DecodeError::new(
                "manifest",
                format!(
                    "content is for {}/{} at {}, not what its key says",
                    m.tenant, m.timeline, m.lsn
                ),
            );
            return Err(Error::corrupt(&r.key, e));
        }
        Ok(m)
    }

    /// Reads many manifests concurrently, keeping their order.
    pub async fn read_manifests(&self, refs: &[ManifestRef]) -> Result<Vec<Manifest>> {
        // Owned items keep the futures `Send` for any caller (no higher-ranked borrow).
        futures::stream::iter(
            refs.to_vec()
                .into_iter()
                .map(|r| async move { self.read_manifest(&r).await }),
        )
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
    }

    /// The manifests of one timeline, ascending by LSN.
    pub async fn timeline_manifests(
        &self,
        tenant: &TenantId,
        timeline: &TimelineId,
    ) -> Result<Vec<ManifestRef>> {
        self.list_manifests(&layout::timeline_prefix(tenant, timeline))
            .await
    }

    /// A timeline's state at `at` (its newest checkpoint at or before that LSN), or at its newest
    /// checkpoint. `None` when it has no checkpoint there. Manifests a newer base says gc dropped
    /// (format-spec 7.1) are ignored once a gap shows them: a gc run stopped while deleting them
    /// leaves a superseded checkpoint whose predecessor is gone, which is no corruption.
    pub async fn timeline_state(
        &self,
        tenant: &TenantId,
        timeline: &TimelineId,
        at: Option<Lsn>,
    ) -> Result<Option<TimelineState>> {
        let mut attempt = 0;
        let mut superseded: Vec<std::ops::Range<Lsn>> = Vec::new();
        loop {
            let listed = self.timeline_manifests(tenant, timeline).await?;
            let refs: Vec<ManifestRef> = listed
                .iter()
                .filter(|r| at.is_none_or(|at| r.lsn <= at))
                .filter(|r| !superseded.iter().any(|d| d.contains(&r.lsn)))
                .cloned()
                .collect();
            let gap = match self.read_chain(&refs).await {
                Err(e) if e.is_not_found() => e,
                other => {
                    return other.and_then(|m| {
                        TimelineState::fold_checked(m)
                            .map_err(|e| Error::corrupt(format!("timeline {tenant}/{timeline}"), e))
                    });
                }
            };
            let Some(newest) = refs.last().map(|r| r.lsn) else {
                return Err(gap);
            };
            if let Some(dropped) = self.superseding(&listed, newest).await? {
                superseded.push(dropped);
            } else if attempt < GC_RACE_RETRIES {
                attempt += 1;
            } else {
                return Err(gap);
            }
        }
    }

    /// The range `[dropped_from, lsn)` of the first base in `listed` (one timeline, ascending)
    /// newer than `lsn` that says gc dropped the checkpoint at `lsn`, if any.
    async fn superseding(
        &self,
        listed: &[ManifestRef],
        lsn: Lsn,
    ) -> Result<Option<std::ops::Range<Lsn>>> {
        for r in listed.iter().filter(|r| r.lsn > lsn) {
            match self.read_manifest(r).await {
                Ok(m) if m.drops(lsn) => {
                    return Ok(m.dropped_from.map(|from| from..m.lsn));
                }
                Ok(_) => {}
                // Deleted since the listing: the caller lists again.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The manifests of one timeline (`refs`, ascending) needed for the state at the last one:
    /// the newest, then each one its predecessor names (`prev_lsn`), down to a base or a first
    /// manifest. Listed manifests off that chain (a killed writer's create that landed late) are
    /// ignored; a predecessor that is not listed is an error naming its LSN. Ascending on return.
    pub async fn read_chain(&self, refs: &[ManifestRef]) -> Result<Vec<Manifest>> {
        let mut out: Vec<Manifest> = Vec::new();
        let mut expected: Option<Lsn> = refs.last().map(|r| r.lsn);
        for r in refs.iter().rev() {
            match expected {
                None => break,
                Some(l) if r.lsn > l => continue,
                Some(l) if r.lsn < l => break,
                Some(_) => {}
            }
            let m = self.read_manifest(r).await?;
            expected = if m.base { None } else { m.prev_lsn };
            out.push(m);
        }
        if let (Some(missing), Some(after)) = (expected, out.last()) {
            return Err(Error::NotFound(format!(
                "manifest at {missing} of timeline {}/{}, the predecessor of the one at {}",
                after.tenant, after.timeline, after.lsn
            )));
        }
        out.reverse();
        Ok(out)
    }

    /// Like [`Store::timeline_state`], but a missing checkpoint is a `NotFound` error.
    pub async fn checkpoint_state(
        &self,
        tenant: &TenantId,
        timeline: &TimelineId,
        at: Option<Lsn>,
    ) -> Result<TimelineState> {
        self.timeline_state(tenant, timeline, at)
            .await?
            .ok_or_else(|| {
                let when = at.map(|l| format!(" at or before {l}")).unwrap_or_default();
                Error::NotFound(format!("checkpoint of timeline {tenant}/{timeline}{when}"))
            })
    }
}
