//! The gc state object (`gc/state`, envelope kind 6): its fields and encoding. It says which
//! packs writers must not newly reference (condemned), which packs gc deleted in recent
//! generations, and the window after which gc treats an unindexed pack as dead.
//!
//! Owns the object's encoding and the pure rules over its fields. Must not read or write the
//! store: the conditional read-modify-write is `gc::state`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};
use crate::id::PackId;

/// Largest gc state body accepted.
pub const MAX_GC_STATE_BODY: u64 = 64 << 20;
/// Window a writer assumes when no gc state exists yet, and the least a gc creating the state
/// waits.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The envelope version this code writes: 2 marks a store whose index objects may live in
/// tenant domains (format-spec sections 6 and 11), which binaries knowing only version 1 must
/// refuse instead of misreading; 3 marks a store whose writers delete gc's seal after every
/// commit (format-spec 13.8), which writers that do not must not write to. Versions 1 and 2
/// (same body) are still read.
pub const GC_STATE_VERSION: u8 = 3;
/// The versions this code reads.
pub const GC_STATE_VERSIONS: [u8; 3] = [1, 2, GC_STATE_VERSION];

/// Generations of deletions remembered in [`GcState::deleted`].
pub const DELETED_HISTORY: usize = 16;

/// What a gc run is doing, as far as writers are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No pack is condemned.
    Idle,
    /// Packs are condemned; gc reads every intent, then scans again (format-spec 13.4).
    Condemned,
    /// The condemned packs are being deleted.
    Deleting,
}

/// The gc state object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcState {
    /// Incremented by every update.
    pub generation: u64,
    /// How old (in milliseconds) a pack no index object names must be before gc treats it as
    /// dead. Liveness only: no safety rule depends on it (format-spec 13.6).
    pub window_ms: u64,
    /// Where the run that wrote this state was (idle, condemning, deleting).
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

    /// The object's bytes, at [`GC_STATE_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        let body = envelope::encode_msgpack(self);
        envelope::seal_version(Kind::GcState, GC_STATE_VERSION, &body)
    }

    /// Parses a gc state object of any version in [`GC_STATE_VERSIONS`].
    pub fn decode(bytes: &[u8]) -> Result<GcState, DecodeError> {
        Ok(GcState::decode_versioned(bytes)?.1)
    }

    /// Like [`GcState::decode`], also returning the envelope version found.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(u8, GcState), DecodeError> {
        let (version, body) =
            envelope::open_versions(Kind::GcState, &GC_STATE_VERSIONS, bytes, MAX_GC_STATE_BODY)?;
        let s: GcState = envelope::decode_msgpack("gc state", body)?;
        let bad = |reason: String| Err(DecodeError::new("gc state", reason));
        if !s.condemned.is_sorted() {
            return bad("condemned packs are not sorted".into());
        }
        if !s.deleted.iter().map(|(g, _)| g).is_sorted() {
            return bad("deleted generations are not in ascending order".into());
        }
        if let Some((g, _)) = s.deleted.iter().find(|(g, _)| *g > s.generation) {
            return bad(format!(
                "packs deleted in generation {g}, after the state's generation {}",
                s.generation
            ));
        }
        Ok((version, s))
    }

    /// Packs a writer must not reference: condemned now, or deleted in generation `since` or
    /// later (a writer that read generation `since` may have read it before those deletions
    /// were recorded in it, so that generation counts too).
    pub fn unusable_since(&self, since: u64) -> BTreeSet<PackId> {
        let mut out: BTreeSet<PackId> = self.condemned.iter().copied().collect();
        for (g, packs) in &self.deleted {
            if *g >= since {
                out.extend(packs.iter().copied());
            }
        }
        out
    }

    /// Whether [`GcState::deleted`] still lists every deletion in generation `since` or later
    /// (deletions are recorded from generation 1 on; trimmed ones are at or below
    /// `history_from`).
    pub fn lists_deletions_since(&self, since: u64) -> bool {
        self.history_from == 0 || since > self.history_from
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
        assert_eq!(
            GcState::decode_versioned(&s.encode()).unwrap(),
            (3, s.clone())
        );
        let body = envelope::encode_msgpack(&s);
        let v1 = envelope::seal_version(Kind::GcState, 1, &body);
        assert_eq!(GcState::decode_versioned(&v1).unwrap(), (1, s.clone()));
        let v2 = envelope::seal_version(Kind::GcState, 2, &body);
        assert_eq!(GcState::decode_versioned(&v2).unwrap(), (2, s.clone()));
        let v4 = envelope::seal_version(Kind::GcState, 4, &body);
        assert!(GcState::decode(&v4).is_err());
        let unusable = s.unusable_since(18);
        assert!(unusable.contains(&PackId::of(&19u64.to_le_bytes())));
        assert!(unusable.contains(&PackId::of(&18u64.to_le_bytes())));
        assert!(!unusable.contains(&PackId::of(&17u64.to_le_bytes())));
        assert!(s.lists_deletions_since(5) && !s.lists_deletions_since(4));
        assert!(unusable.contains(&PackId::of(b"a")));
        let mut late = s.clone();
        late.deleted.last_mut().unwrap().0 = 21;
        let e = GcState::decode(&late.encode()).unwrap_err();
        assert!(e.reason.contains("after the state's generation"), "{e}");
        let mut unordered = s.clone();
        unordered.deleted.swap(0, 1);
        let e = GcState::decode(&unordered.encode()).unwrap_err();
        assert!(e.reason.contains("ascending"), "{e}");
        s.condemned.reverse();
        assert!(GcState::decode(&s.encode()).is_err());
    }
}
