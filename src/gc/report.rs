//! What a gc run reports: its counts, and how long each of its steps took.
//!
//! Owns the report's shape (printed by `casctl gc --json`) and the lap timer behind
//! [`GcReport::steps`]. Must not decide anything.

use serde::Serialize;
use tokio::time::Instant;

/// What a gc run did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Nothing was changed; the counts are what a real run would do.
    pub dry_run: bool,
    /// The gc-state generation this run claimed.
    pub generation: u64,
    /// The run stopped after reading the state and gc's seal: nothing changed since a run that
    /// left nothing to do (format-spec 13.8). Every count is then zero.
    pub unchanged: bool,
    /// This run left nothing for a later one (it left nothing to do, or a scan after its work
    /// found nothing more) and sealed the store, so the next run may stop early.
    pub sealed: bool,
    /// Work this run left for a later one: dead packs spared because they are young or named by
    /// an intent, or small packs not consolidated because some of them are young.
    pub left_for_later: bool,
    /// Kept manifests replaced by a base.
    pub manifests_folded: usize,
    /// Manifests of dropped checkpoints removed.
    pub manifests_deleted: usize,
    /// Packs removed because nothing live was left in them.
    pub packs_deleted: usize,
    /// Packs whose live blobs were copied out so that they could be removed.
    pub packs_repacked: usize,
    /// Condemned packs found live again at re-mark.
    pub packs_rescued: usize,
    /// New packs holding the repacked blobs.
    pub packs_written: usize,
    /// Index objects removed (merged or naming only deleted packs).
    pub index_objects_deleted: usize,
    /// Index objects written in their place.
    pub index_objects_written: usize,
    /// Intents deleted because the manifest they guarded exists (or, with `clear_intents`,
    /// every intent).
    pub intents_cleared: usize,
    /// Manifests the first scan took from gc's cache instead of reading them.
    pub manifests_cached: usize,
    /// Index objects the first scan took from gc's cache instead of reading them.
    pub index_objects_cached: usize,
    /// Chunks of kept manifests found nowhere (non-zero only with `allow_missing`).
    pub chunks_missing: usize,
    /// Bytes of the objects deleted.
    pub bytes_freed: u64,
    /// Bytes of the objects written (bases, repacked packs, index objects).
    pub bytes_written: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Wall time of each step, in the order run (`claim`, `load-caches-and-list-manifests`, ...): where
    /// a slow run spends its time.
    pub steps: Vec<Step>,
}

/// One step of a run and its wall time.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// What the step did (`claim`, `list-manifests`, ...).
    pub step: &'static str,
    /// Its wall time in milliseconds.
    pub ms: u64,
}

/// Times consecutive steps of a run: each [`Laps::lap`] records the time since the previous.
pub(crate) struct Laps {
    last: Instant,
    done: Vec<Step>,
}

impl Laps {
    pub(crate) fn start() -> Laps {
        Laps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends the step called `name`.
    pub(crate) fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let ms = (now - self.last).as_millis() as u64;
        self.done.push(Step { step: name, ms });
        self.last = now;
    }

    /// The steps timed so far.
    pub(crate) fn take(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.done)
    }
}
