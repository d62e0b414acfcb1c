//! The writer's side of the gc fence (format-spec section 13); gc's side is `gc` (it updates the
//! gc state through `gc::state`). A [`Fence`] lives in each `Writer`; the writer calls it at
//! three points of a checkpoint:
//! 1. [`Fence::before_dedup`]: reads the gc state; drops condemned and recently deleted packs
//!    from the writer's chunk index (or asks for a full reload when it missed generations), so
//!    the writer deduplicates only against packs gc will keep.
//! 2. [`Fence::validate`]: after its packs are uploaded and before its index object and
//!    manifest are created, reads the gc state again and checks that every chunk the manifest
//!    adds lies in a pack that is neither condemned nor deleted. Failing that, the writer stores
//!    those chunks again (in packs whose bytes differ from every condemned one).
//! 3. [`Validation::check`]: right before each of the two creates, refuses when the validation
//!    is older than the window the state gives, on this process's monotonic clock.
//!
//! Owns only these checks; must not write to the store. Time is `tokio::time::Instant`: the
//! monotonic clock (`std::time::Instant`) in production, a virtual one in paused-time tests.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::format::gc_state::{DEFAULT_WINDOW, GcState};
use crate::id::{ChunkId, PackId};
use crate::store::chunk_index::ChunkIndex;
use crate::store::gc_state as state;

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

/// The gc generation a writer last applied.
#[derive(Debug, Default)]
pub struct Fence {
    seen: Mutex<Option<u64>>,
}

/// A successful validation: when it was taken and how long it stays good.
#[derive(Clone, Copy, Debug)]
pub struct Validation {
    at: Instant,
    window: Duration,
}

impl Validation {
    /// Fails with [`Error::Fenced`] when the validation is older than the window.
    pub fn check(&self, what: &str) -> Result<()> {
        let age = self.at.elapsed();
        if age >= self.window {
            return Err(Error::Fenced(format!(
                "{what}: gc validation is {age:?} old, beyond the {:?} window",
                self.window
            )));
        }
        Ok(())
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

    /// Reads the gc state and says what the writer's index must forget.
    pub async fn before_dedup(&self, backend: &DynBackend) -> Result<IndexAction> {
        let Some(gc) = state::read(backend).await?.state else {
            return Ok(IndexAction::Keep);
        };
        let mut seen = self.seen.lock().expect("fence lock");
        let action = match *seen {
            Some(g) if g == gc.generation => IndexAction::Keep,
            // Primed on an empty store: every deletion since is in the history.
            None if gc.history_from == 0 => IndexAction::Drop(gc.unusable_since(0)),
            Some(g) if g >= gc.history_from => IndexAction::Drop(gc.unusable_since(g)),
            // A writer that loaded its index before any gc generation it knows of may hold
            // packs deleted long ago: reload.
            _ => IndexAction::Reload(gc.unusable_since(gc.history_from)),
        };
        *seen = Some(gc.generation);
        Ok(action)
    }

    /// Checks that every chunk in `chunks` can be referenced: it is in one of `own` packs (this
    /// checkpoint's uploads) or resolves through `index`, and that pack is not unusable. Returns
    /// the validation, or `Err(packs)` naming the unusable packs to drop before storing again.
    pub async fn validate(
        &self,
        backend: &DynBackend,
        index: &std::sync::RwLock<ChunkIndex>,
        own: &HashMap<ChunkId, PackId>,
        chunks: &[ChunkId],
    ) -> Result<std::result::Result<Validation, BTreeSet<PackId>>> {
        // Taken before the read: the window counts from no later than what was seen.
        let at = Instant::now();
        let gc = state::read(backend).await?.state;
        let window = gc.as_ref().map_or(DEFAULT_WINDOW, GcState::window);
        let since = self.seen.lock().expect("fence lock").unwrap_or(0);
        let unusable = match &gc {
            None => BTreeSet::new(),
            // Deletions this writer cannot enumerate: everything not its own is suspect.
            Some(g) if since < g.history_from => return Ok(Err(g.unusable_since(0))),
            Some(g) => g.unusable_since(since),
        };
        let index = index.read().expect("index lock");
        let mut bad = BTreeSet::new();
        let mut unknown = false;
        for c in chunks {
            match own.get(c).copied().or_else(|| index.get(c).map(|l| l.pack)) {
                Some(p) if !unusable.contains(&p) => {}
                Some(p) => {
                    bad.insert(p);
                }
                // Reused from the previous checkpoint's files, but its pack was dropped.
                None => unknown = true,
            }
        }
        if bad.is_empty() && !unknown {
            Ok(Ok(Validation { at, window }))
        } else {
            Ok(Err(bad))
        }
    }
}
