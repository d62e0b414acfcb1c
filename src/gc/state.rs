//! The store-level gc state object (`gc/state`, envelope kind 6): the fence between gc and
//! writers. It says which packs writers must not newly reference (condemned) and which packs gc
//! deleted in recent generations, and the window within which a writer must commit after reading
//! it.
//!
//! Owns the object's encoding and its conditional read-modify-write. Only gc writes it, always
//! with `PutMode::Update(etag)` (or `Create` when absent), so two gc runs cannot interleave their
//! updates: the loser gets `PreconditionFailed` and stops. Must not decide what to condemn.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, DynBackend, Key, Payload, PutMode};
use crate::error::{DecodeError, Error, Result};
use crate::format::envelope::{self, Kind};
use crate::id::PackId;

/// Key of the gc state object.
pub const GC_STATE_KEY: &str = "gc/state";
/// Largest gc state body accepted.
pub const MAX_GC_STATE_BODY: u64 = 64 << 20;
/// Window a writer assumes when no gc state exists yet, and the least a gc creating the state
/// waits.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Generations of deletions remembered in [`GcState::deleted`].
pub const DELETED_HISTORY: usize = 16;

/// What a gc run is doing, as far as writers are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No pack is condemned.
    Idle,
    /// Packs are condemned; gc waits out the window, then re-marks.
    Condemned,
    /// The condemned packs are being deleted.
    Deleting,
}

/// The gc state object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcState {
    /// Incremented by every update.
    pub generation: u64,
    /// Milliseconds within which a writer must create its index object and manifest after
    /// reading this state; gc waits at least this long between condemning and re-marking.
    pub window_ms: u64,
    pub phase: Phase,
    /// Packs no writer may newly reference (sorted).
    pub condemned: Vec<PackId>,
    /// `(generation, packs)` deleted in that generation, the newest [`DELETED_HISTORY`] ones.
    pub deleted: Vec<(u64, Vec<PackId>)>,
    /// Every pack deleted in a generation above this one is in `deleted`.
    pub history_from: u64,
}

impl GcState {
    /// The state of a store no gc has touched.
    pub fn initial(window: Duration) -> GcState {
        GcState {
            generation: 0,
            window_ms: window.as_millis() as u64,
            phase: Phase::Idle,
            condemned: Vec::new(),
            deleted: Vec::new(),
            history_from: 0,
        }
    }

    /// The writers' window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::GcState, &envelope::encode_msgpack(self))
    }

    /// Parses a gc state object.
    pub fn decode(bytes: &[u8]) -> Result<GcState, DecodeError> {
        let body = envelope::open(Kind::GcState, bytes, MAX_GC_STATE_BODY)?;
        let s: GcState = envelope::decode_msgpack("gc state", body)?;
        if !s.condemned.is_sorted() {
            return Err(DecodeError::new(
                "gc state",
                "condemned packs are not sorted",
            ));
        }
        Ok(s)
    }

    /// Packs a writer must not reference: condemned now, or deleted after generation `since`.
    pub fn unusable_since(&self, since: u64) -> BTreeSet<PackId> {
        let mut out: BTreeSet<PackId> = self.condemned.iter().copied().collect();
        for (g, packs) in &self.deleted {
            if *g > since {
                out.extend(packs.iter().copied());
            }
        }
        out
    }

    /// Records `packs` as deleted in the current generation, trimming the history.
    pub fn record_deleted(&mut self, packs: Vec<PackId>) {
        if packs.is_empty() {
            return;
        }
        self.deleted.push((self.generation, packs));
        while self.deleted.len() > DELETED_HISTORY {
            let (g, _) = self.deleted.remove(0);
            self.history_from = self.history_from.max(g);
        }
    }
}

/// The key of the gc state.
pub fn key() -> Key {
    Key::new(GC_STATE_KEY).expect("valid key")
}

/// The gc state as read, with the etag to update it by (`None` when absent).
#[derive(Clone, Debug)]
pub struct Versioned {
    pub state: Option<GcState>,
    pub etag: Option<String>,
}

/// Reads the gc state. Absent is `state: None`.
pub async fn read(backend: &DynBackend) -> Result<Versioned> {
    let key = key();
    let got = match backend.get(&key).await {
        Err(e) if e.is_not_found() => {
            return Ok(Versioned {
                state: None,
                etag: None,
            });
        }
        other => other?,
    };
    let etag = got.meta.etag.clone();
    let bytes = crate::backend::collect_stream(got.body, MAX_GC_STATE_BODY + 64).await?;
    let state = GcState::decode(&bytes).map_err(|e| Error::corrupt(&key, e))?;
    let etag = match etag {
        Some(e) => Some(e),
        None => backend.head(&key).await?.etag,
    };
    Ok(Versioned {
        state: Some(state),
        etag,
    })
}

/// Replaces the state read as `prev` with `next` (bumping its generation); fails with
/// `PreconditionFailed` (through [`Error::Backend`]) when someone else changed it since.
pub async fn update(
    backend: &DynBackend,
    prev: &Versioned,
    mut next: GcState,
) -> Result<Versioned> {
    let key = key();
    next.generation = prev.state.as_ref().map_or(0, |s| s.generation) + 1;
    let mode = match &prev.etag {
        None if prev.state.is_none() => PutMode::Create,
        None => return Err(Error::InvalidInput("gc state has no etag".into())),
        Some(e) => PutMode::Update(e.clone()),
    };
    let payload = Payload::from_bytes(Bytes::from(next.encode()));
    match backend.put(&key, payload, mode).await {
        Err(BackendError::AlreadyExists { key }) => {
            return Err(BackendError::PreconditionFailed { key }.into());
        }
        other => other?,
    }
    // Read back rather than `head`: if another gc updated right after us, its etag must not be
    // taken for ours.
    let now = read(backend).await?;
    if now.state.as_ref() != Some(&next) {
        return Err(BackendError::PreconditionFailed {
            key: key.to_string(),
        }
        .into());
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_history_is_bounded() {
        let mut s = GcState::initial(Duration::from_millis(250));
        s.condemned = vec![PackId::of(b"a"), PackId::of(b"b")];
        s.condemned.sort();
        for g in 1..=20u64 {
            s.generation = g;
            s.record_deleted(vec![PackId::of(&g.to_le_bytes())]);
        }
        assert_eq!(s.deleted.len(), DELETED_HISTORY);
        assert_eq!(s.history_from, 4);
        assert_eq!(GcState::decode(&s.encode()).unwrap(), s);
        let unusable = s.unusable_since(18);
        assert!(unusable.contains(&PackId::of(&19u64.to_le_bytes())));
        assert!(!unusable.contains(&PackId::of(&18u64.to_le_bytes())));
        assert!(unusable.contains(&PackId::of(b"a")));
        s.condemned.reverse();
        assert!(GcState::decode(&s.encode()).is_err());
    }
}
