//! The writer's side of the gc fence (format-spec section 13.3); gc's side is `gc`. A [`Fence`]
//! lives in each `Writer` and keeps its chunk index in step with the gc state; each checkpoint
//! calls it twice:
//! 1. [`Fence::before_dedup`]: reads the gc state and says what the shared chunk index must
//!    forget (condemned packs, packs deleted since the generation it last applied, or everything
//!    by a reload), so the writer deduplicates only against packs gc keeps. The generation read
//!    is this checkpoint's own [`Start`]: concurrent checkpoints never share it.
//! 2. [`Fence::guard`]: after the checkpoint's packs are uploaded, writes an intent naming
//!    every pack its manifest will reference, *then* reads the gc state and checks that none of
//!    those packs is condemned there or deleted since the checkpoint's start, and that each
//!    still exists (a `head` per pack: this, not the deletion history, is what makes an index
//!    that learned of a pack too late, or an "already exists" answer, safe to act on). On success the intent stays until
//!    the manifest create is confirmed ([`Guard::release`]); gc never deletes a pack an intent
//!    names. On failure the writer stores those chunks again.
//!
//! Safety does not depend on time: no clock is read and no check expires (section 13.5 gives
//! the argument). Owns these checks and the intent object's lifetime; must not write anything
//! else to the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{BackendError, BackendExt, DynBackend, Key};
use crate::error::Result;
use crate::format::gc_state::GcState;
use crate::format::intent::Intent;
use crate::format::layout;
use crate::id::{ChunkId, Lsn, PackId, TenantId, TimelineId};
use crate::store::gc_state as state;
use crate::store::index_cache::DomainIndex;

/// Times a guard waits for gc to rescue this checkpoint's own condemned packs before giving up
/// and storing them again, and the first wait (doubling up to 32x).
const OWN_WAITS: u32 = 12;
const OWN_WAIT_BASE: std::time::Duration = std::time::Duration::from_millis(50);

/// Pack existence checks in flight during one guard.
const HEAD_CONCURRENCY: usize = 16;

/// What the writer must do after reading the gc state.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexAction {
    /// Nothing changed since the last look.
    Keep,
    /// Drop these packs from the chunk index.
    Drop(BTreeSet<PackId>),
    /// Generations were missed: reload the chunk index from the store, then drop these.
    Reload(BTreeSet<PackId>),
}

/// The gc generation a writer last applied to its shared chunk index.
#[derive(Debug, Default)]
pub struct Fence {
    seen: Mutex<Option<u64>>,
}

/// The gc generation one checkpoint started deduplicating under (`None`: no gc state yet).
#[derive(Clone, Copy, Debug)]
pub struct Start(Option<u64>);

/// What one checkpoint's manifest will reference, for [`Fence::guard`].
pub struct References<'a> {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    pub lsn: Lsn,
    /// The manifest the commit's delta builds on.
    pub prev: Option<Lsn>,
    /// Every chunk the manifest adds.
    pub chunks: &'a [ChunkId],
    /// This checkpoint's own packs, by chunk.
    pub own: &'a HashMap<ChunkId, PackId>,
}

/// An intent that protects a checkpoint's packs until its manifest is created.
#[derive(Debug)]
#[must_use = "release the guard once the manifest create is confirmed or was never sent"]
pub struct Guard {
    key: Key,
}

impl Guard {
    /// Deletes the intent, and gc's seal with it (one request where the store batches deletes;
    /// format-spec 13.8): call once the manifest exists, or when no manifest create was sent.
    /// A failure only leaves a stale intent (space, never data; gc clears it later) or a seal
    /// that delays gc (until the next commit, `--full` or the seal's age limit).
    pub async fn release(self, backend: &DynBackend) {
        let keys = [self.key.clone(), layout::gc_seal_key()];
        if let Err(e) = backend.delete_many(&keys).await {
            tracing::warn!(intent = %self.key, error = %e, "could not delete intent and gc seal");
        }
    }

    /// Keeps the intent: a manifest create with an unknown outcome may still land. gc's seal
    /// is deleted all the same (format-spec 13.8).
    pub async fn keep(self, backend: &DynBackend) {
        tracing::warn!(intent = %self.key, "manifest create outcome unknown; intent kept");
        if let Err(e) = backend.delete(&layout::gc_seal_key()).await {
            tracing::warn!(error = %e, "could not delete the gc seal");
        }
    }
}

impl Fence {
    /// A fence that has seen nothing yet.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Reads the gc state before a writer loads its index; returns the packs to drop from it
    /// once loaded. Later calls to [`Fence::before_dedup`] report only what changed since.
    pub async fn prime(&self, backend: &DynBackend) -> Result<BTreeSet<PackId>> {
        let gc = state::read(backend).await?.state;
        *self.seen.lock().expect("fence lock") = gc.as_ref().map(|g| g.generation);
        Ok(gc.map(|g| g.unusable_since(0)).unwrap_or_default())
    }

    /// Packs no checkpoint may reference under the gc state as read now, for a domain loaded
    /// after [`Fence::prime`] (the fence's own generation is left as it is).
    pub async fn unusable_now(&self, backend: &DynBackend) -> Result<BTreeSet<PackId>> {
        let gc = state::read(backend).await?.state;
        Ok(gc.map(|g| g.unusable_since(0)).unwrap_or_default())
    }

    /// Reads the gc state; says what the shared index must forget and returns this
    /// checkpoint's start generation.
    pub async fn before_dedup(&self, backend: &DynBackend) -> Result<(IndexAction, Start)> {
        let Some(gc) = state::read(backend).await?.state else {
            return Ok((IndexAction::Keep, Start(None)));
        };
        let mut seen = self.seen.lock().expect("fence lock");
        let action = match *seen {
            Some(g) if g == gc.generation => IndexAction::Keep,
            Some(g) if gc.lists_deletions_since(g) => IndexAction::Drop(gc.unusable_since(g)),
            None if gc.lists_deletions_since(0) => IndexAction::Drop(gc.unusable_since(0)),
            // Deletions this writer cannot enumerate: rebuild the index from the store.
            _ => IndexAction::Reload(gc.unusable_since(gc.history_from)),
        };
        *seen = Some(gc.generation);
        Ok((action, Start(Some(gc.generation))))
    }

    /// Writes the intent for `refs`, then reads the gc state and checks every referenced pack
    /// (section 13.3, rules 3 and 4). `Err(packs)` names packs to drop before storing again
    /// (possibly none, when a chunk no longer resolves or deletions cannot be enumerated).
    pub async fn guard(
        &self,
        backend: &DynBackend,
        index: &DomainIndex,
        refs: References<'_>,
        start: Start,
    ) -> Result<std::result::Result<Guard, BTreeSet<PackId>>> {
        let Some(packs) = resolve(index, refs.own, refs.chunks) else {
            return Ok(Err(BTreeSet::new()));
        };
        let intent =
            Intent::new(refs.tenant, refs.timeline, refs.lsn, packs.clone()).building_on(refs.prev);
        let guard = Guard {
            key: layout::intent_key(&crate::id::unique_bytes()),
        };
        // The key is this attempt's own: "already exists" is a retried create that landed.
        match backend
            .create_bytes(&guard.key, Bytes::from(intent.encode()))
            .await
        {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let own: BTreeSet<PackId> = refs.own.values().copied().collect();
        let mut waits = 0;
        loop {
            let bad = match check(backend, &packs, start).await {
                Ok(bad) => bad,
                Err(e) => {
                    guard.release(backend).await;
                    return Err(e);
                }
            };
            let Some(bad) = bad else { return Ok(Ok(guard)) };
            // Liveness only: this checkpoint's own packs, condemned by a gc that ran before the
            // intent existed, are rescued by the next re-mark (the intent now names them), so
            // waiting for that beats storing them again. Safety comes from re-checking.
            let only_own = !bad.suspect && bad.missing.is_empty() && bad.condemned.is_subset(&own);
            if only_own && waits < OWN_WAITS {
                waits += 1;
                tokio::time::sleep(OWN_WAIT_BASE * (1 << waits.min(5))).await;
                continue;
            }
            guard.release(backend).await;
            let mut all = bad.condemned;
            all.extend(bad.missing);
            return Ok(Err(all));
        }
    }
}

/// Why a guard's check failed.
struct Bad {
    /// Packs the state lists as condemned or deleted (all stored packs when it cannot tell).
    condemned: BTreeSet<PackId>,
    /// Packs a `head` did not find.
    missing: Vec<PackId>,
    /// The state no longer lists every deletion since the checkpoint started.
    suspect: bool,
}

/// Reads the gc state, then checks every pack of the intent (rules 13.3.4); `None` when all are
/// usable.
async fn check(backend: &DynBackend, packs: &[PackId], start: Start) -> Result<Option<Bad>> {
    let gc = state::read(backend).await?.state;
    let condemned: BTreeSet<PackId> = match unusable(gc.as_ref(), start) {
        Ok(unusable) => packs
            .iter()
            .filter(|p| unusable.contains(p))
            .copied()
            .collect(),
        Err(suspect) => {
            return Ok(Some(Bad {
                condemned: suspect,
                missing: Vec::new(),
                suspect: true,
            }));
        }
    };
    let missing = missing(backend, packs).await?;
    let bad = Bad {
        condemned,
        missing,
        suspect: false,
    };
    Ok((!bad.condemned.is_empty() || !bad.missing.is_empty()).then_some(bad))
}

/// The packs of `packs` that do not exist now. Asked after the validation read: a pack present
/// then and not condemned in that state can only be deleted after a later condemnation, which
/// the intent written before the read protects against (format-spec 13.5).
async fn missing(backend: &DynBackend, packs: &[PackId]) -> Result<Vec<PackId>> {
    // Owned items keep the future `Send` for any caller (no higher-ranked borrow).
    let heads = futures::stream::iter(packs.to_vec().into_iter().map(|p| {
        let backend = backend.clone();
        async move {
            match backend.head(&layout::pack_key(&p)).await {
                Ok(_) => Ok(None),
                Err(e) if e.is_not_found() => Ok(Some(p)),
                Err(e) => Err(crate::Error::from(e)),
            }
        }
    }))
    .buffer_unordered(HEAD_CONCURRENCY);
    let found: Vec<Option<PackId>> = heads.try_collect().await?;
    Ok(found.into_iter().flatten().collect())
}

/// The pack of every chunk (own packs first), or `None` when a chunk resolves nowhere (its pack
/// was dropped from the index since the chunk was reused).
fn resolve(
    index: &DomainIndex,
    own: &HashMap<ChunkId, PackId>,
    chunks: &[ChunkId],
) -> Option<Vec<PackId>> {
    let mut packs = BTreeSet::new();
    for c in chunks {
        packs.insert(
            own.get(c)
                .copied()
                .or_else(|| index.get(c).map(|l| l.pack))?,
        );
    }
    Some(packs.into_iter().collect())
}

/// Packs a checkpoint that started at `start` must not reference under `gc`, or `Err` with the
/// packs to drop when the state no longer lists every deletion since `start`.
fn unusable(
    gc: Option<&GcState>,
    start: Start,
) -> std::result::Result<BTreeSet<PackId>, BTreeSet<PackId>> {
    let Some(gc) = gc else {
        return Ok(BTreeSet::new());
    };
    let since = start.0.unwrap_or(0);
    if gc.lists_deletions_since(since) {
        // Every listed deletion, not only those since `start`: a delete gc sent may land long
        // after the state recorded it, and an index object naming the pack may surface late.
        Ok(gc.unusable_since(0))
    } else {
        Err(gc.unusable_since(0))
    }
}
