//! gc: retention, manifest compaction and pack reclamation, safe while writers write and never
//! blocking them (format-spec section 13 states the protocol as rules).
//!
//! # Phases of one run
//! 0. **Seal**: a run stops before claiming when gc's seal says that nothing was committed since
//!    a run with the same options left nothing to do (`seal`, format-spec 13.8); otherwise it
//!    writes a tentative seal right after its claim and confirms it only if it finds nothing to
//!    do, or if, having done its work, a scan after it finds nothing more (`seal::conclude`).
//! 1. **Claim**: update the gc state (`gc/state`, conditional on its etag) to a new generation.
//!    Every later update is conditional on the etag of the previous one, so a second gc that
//!    claims in between makes this one stop at its next update; condemned packs carry over.
//! 2. **Scan**: list manifests, then index objects, then packs; read every manifest and index
//!    object. Any failed listing or read aborts the run before anything is deleted. Every chunk
//!    a kept manifest references must resolve, through an index object or the own table of a
//!    listed pack no index names; otherwise the run fails (verify-level errors exist) unless
//!    `allow_missing` is set (`missing`).
//! 3. **Compact**: retention picks the checkpoints to keep; kept manifests after a dropped one
//!    are replaced in place by bases (`If-Match`), then the dropped manifests are deleted.
//! 4. **Mark and repack**: live chunks are those of the remaining manifests; packs with nothing
//!    live die, packs below the live-fraction threshold have their live blobs copied into new
//!    packs (packs, then their index object).
//! 5. **Condemn**: the gc state lists the dying and repacked packs. Writers that read the state
//!    from here on stop referencing them. A run with nothing to condemn stops here.
//! 6. **Intents**: list and read every writer's intent. A writer that read the state before the
//!    condemnation wrote its intent before that read, so it is seen here (or its manifest is
//!    seen by the next step). Nothing waits: safety is this ordering, not a window.
//! 7. **Re-mark**: scan again; condemned packs named by an intent, or holding a live chunk found
//!    in no other usable pack (from index objects, or the pack's own table when no index names
//!    it), are rescued; the rest are *doomed*.
//! 8. **Delete**: the state records the doomed packs as deleted (phase Deleting); index objects
//!    naming them are rewritten without them (new objects first), then the packs are deleted;
//!    the state returns to Idle.
//!
//! Intents whose manifest the re-mark listed are deleted at the end.
//!
//! A run killed anywhere leaves a store readers accept (nothing live is deleted before step 8,
//! and step 8 deletes only what re-marking proved dead); the next run carries the condemned set
//! over and finishes the work.
//!
//! Owns the orchestration and the report. Retention, compaction, reclamation and the gc state's
//! update live in the submodules; the writer's side of the fence is `write::fence`.

mod cache;
pub(crate) mod compact;
pub(crate) mod domains;
pub mod intents;
pub(crate) mod missing;
mod plan;
pub(crate) mod reclaim;
pub mod repair;
pub mod report;
pub mod retention;
mod scan;
pub mod seal;
pub mod state;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Key;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::id::PackId;
use crate::progress::DynProgress;
use crate::store::Store;
use cache::Caches;
pub use reclaim::SMALL_PACK;
pub use report::GcReport;
use report::Laps;
use retention::Retention;
use scan::{Scan, scan};
use state::{GcState, Phase, Versioned};

/// Default live fraction below which a pack is repacked.
pub const DEFAULT_REPACK_THRESHOLD: f64 = 0.75;
/// Largest window accepted (one day).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Default number of kept deltas after which compaction writes a base.
pub const DEFAULT_MAX_CHAIN: usize = 64;

/// How a gc run behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Which checkpoints survive.
    pub retention: Retention,
    /// Packs whose live bytes are below this fraction of their blob bytes are repacked.
    pub repack_threshold: f64,
    /// Kept deltas in a row after which one is replaced by a base.
    pub max_chain: usize,
    /// Recorded in the gc state for liveness tuning only (format-spec 13.6); no run waits for
    /// it and safety does not depend on it. At most [`MAX_WINDOW`].
    pub window: Duration,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Collect even when a kept manifest references chunks found in no index object and no
    /// pack table (otherwise the run fails before deleting anything; see [`missing`]).
    pub allow_missing: bool,
    /// Packs smaller than this are consolidated into packs of the target size
    /// (gc copies their live blobs once there are two or more); 0 turns consolidation off.
    pub small_pack: u64,
    /// Delete every intent before scanning (`casctl gc --clear-intents`). Safe only when no
    /// writer runs: an intent is what protects a running writer's packs.
    pub clear_intents: bool,
    /// Scan even when gc's seal says nothing changed since a run that left nothing to do
    /// (`casctl gc --full`; see [`seal`]).
    pub full: bool,
}

impl GcOptions {
    /// Defaults with the given retention.
    pub fn new(retention: Retention) -> GcOptions {
        GcOptions {
            retention,
            repack_threshold: DEFAULT_REPACK_THRESHOLD,
            max_chain: DEFAULT_MAX_CHAIN,
            window: state::DEFAULT_WINDOW,
            dry_run: false,
            allow_missing: false,
            clear_intents: false,
            full: false,
            small_pack: reclaim::SMALL_PACK,
        }
    }

    /// Refuses settings outside their bounds, naming the one that is wrong.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.repack_threshold) {
            return Err(Error::InvalidInput(format!(
                "repack threshold {} is not between 0 and 1",
                self.repack_threshold
            )));
        }
        if self.max_chain == 0 {
            return Err(Error::InvalidInput("max chain must be at least 1".into()));
        }
        if self.window > MAX_WINDOW {
            return Err(Error::InvalidInput(format!(
                "window {:?} is above the largest accepted, {MAX_WINDOW:?}",
                self.window
            )));
        }
        Ok(())
    }
}

/// Runs gc once. `progress` is told each phase (`scan`, `repack`, `condemn`, `re-mark`,
/// `delete`) and, within repack and delete, the bytes done.
pub async fn run(store: &Store, opts: &GcOptions, progress: DynProgress) -> Result<GcReport> {
    opts.check()?;
    let started = Instant::now();
    let mut laps = Laps::start();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let unchanged = seal::unchanged(store, opts).await?;
    laps.lap("read-seal");
    if let Some(generation) = unchanged {
        report.generation = generation;
        report.unchanged = true;
        return Ok(finished(report, started, &mut laps));
    }
    let (held, tentative) = claim_and_seal(store, opts).await?;
    report.generation = held.state.as_ref().map_or(0, |s| s.generation);
    laps.lap("claim");
    if opts.clear_intents && !opts.dry_run {
        report.intents_cleared = intents::clear_all(store).await?;
    }
    // A run that was deleting when this one took over may still delete its doomed packs, at any
    // time (it may be paused, not dead): they count as gone, are never rescued, and this run
    // deletes them itself (format-spec 13.4, rule 1).
    let doomed_before: BTreeSet<PackId> = match &held.state {
        Some(s) if s.phase == Phase::Deleting => s.condemned.iter().copied().collect(),
        _ => BTreeSet::new(),
    };
    progress.phase("scan");
    let (mut caches, mut first) = scan::load_and_scan(store, &mut laps).await?;
    report.manifests_cached = caches.manifests.hits;
    report.index_objects_cached = caches.indexes.hits;
    first.packs.retain(|p, _| !doomed_before.contains(p));
    let (plan, sections, reclaim) = plan::plan_run(store, &first, opts, &mut report).await?;
    laps.lap("plan");
    if opts.dry_run {
        report.packs_deleted = reclaim.dead.len() + reclaim.repack.len();
        report.bytes_freed = reclaim.bytes_released.saturating_sub(reclaim.bytes_copied)
            + plan.delete.iter().map(|s| s.r.size).sum::<u64>();
        return Ok(finished(report, started, &mut laps));
    }
    caches.manifests.save(store, &first.listed.0).await;
    caches.indexes.save(store, &first.listed.1).await;
    laps.lap("save-caches");
    compact::write_bases(store, &plan).await?;
    progress.phase("repack");
    let owned = domains::owned(plan::remaining(&first, &plan));
    let (new_packs, written) =
        reclaim::repack(store, &reclaim, (&sections, &owned), &progress).await?;
    report.packs_written = new_packs.len();
    report.bytes_written = written;
    laps.lap("bases-and-repack");
    let condemned = to_condemn(&held, &reclaim);
    let condemns = !condemned.is_empty();
    let held = if condemns {
        progress.phase("condemn");
        let held = update(store, &held, Phase::Condemned, condemned.clone(), None).await?;
        let sets = (condemned, doomed_before);
        let run = (&plan, &mut caches, &mut laps);
        reclaim_condemned(store, held, sets, run, &mut report, &progress).await?
    } else {
        settle_without_condemning(store, (&first, &plan, &owned), &mut report).await?;
        laps.lap("settle");
        held
    };
    report.generation = held.state.as_ref().map_or(0, |s| s.generation);
    let rewrote = report.index_objects_written + report.index_objects_deleted > 0;
    let quiet = seal::quiet(&plan, &reclaim, condemns, report.chunks_missing, rewrote);
    report.sealed = seal::conclude(
        store,
        opts,
        tentative,
        quiet,
        (&mut caches, &mut laps),
        &report,
    )
    .await;
    Ok(finished(report, started, &mut laps))
}

/// The packs the run condemns: those a previous run left condemned, then the dead and the
/// repacked ones.
fn to_condemn(held: &Versioned, reclaim: &reclaim::ReclaimPlan) -> BTreeSet<PackId> {
    let carried = held.state.iter().flat_map(|s| s.condemned.iter().copied());
    carried
        .chain(reclaim.dead.iter().chain(&reclaim.repack).copied())
        .collect()
}

/// `report` with the run's wall time and steps, logged.
fn finished(mut report: GcReport, started: Instant, laps: &mut Laps) -> GcReport {
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.steps = laps.take();
    tracing::info!(?report, "gc finished");
    report
}

/// The end of a run that condemns nothing (format-spec 13.4, last paragraph): intents are read
/// and manifests listed before the dropped manifests are deleted; settled intents are cleared;
/// index objects move between domains (nothing is doomed, so no section is dropped).
async fn settle_without_condemning(
    store: &Store,
    (first, plan, owned): (&Scan, &compact::CompactPlan, &domains::Owned),
    report: &mut GcReport,
) -> Result<()> {
    let all = intents::read_all(store).await?;
    // What checkpoints build on only spares dropped manifests: with none, no need to list.
    if !plan.delete.is_empty() {
        let building_on = intents::building_on(store, &all, &plan.listed).await?;
        let dropped = compact::deletable(plan, &building_on);
        delete_manifests(store, &dropped, report).await?;
    }
    report.intents_cleared += intents::clear(store, all.settled(&plan.listed)).await?;
    let nothing = BTreeSet::new();
    let rewrite =
        domains::rewrite_indexes(store, &first.indexes, &first.packs, &nothing, owned).await?;
    count_rewrite(report, rewrite);
    Ok(())
}

/// Deletes `dropped` (from [`compact::deletable`], computed after intents were read); counts
/// them in `report`.
async fn delete_manifests(
    store: &Store,
    dropped: &[&compact::Scanned],
    report: &mut GcReport,
) -> Result<()> {
    let (n, bytes) = compact::delete_dropped(store, dropped).await?;
    report.manifests_deleted = n;
    report.bytes_freed += bytes;
    Ok(())
}

/// Steps 6 to 8 once the condemnation is published: read intents, re-mark, delete the dropped
/// manifests, then the doomed packs.
async fn reclaim_condemned(
    store: &Store,
    held: Versioned,
    (condemned, doomed_before): (BTreeSet<PackId>, BTreeSet<PackId>),
    (plan, caches, laps): (&compact::CompactPlan, &mut Caches, &mut Laps),
    report: &mut GcReport,
    progress: &DynProgress,
) -> Result<Versioned> {
    progress.phase("re-mark");
    let intents = intents::read_all(store).await?;
    laps.lap("read-intents");
    // Listed after the intents were read, as `intents::building_on` requires.
    let second = scan(store, caches, laps).await?;
    let building_on = intents::building_on_scanned(&intents, &plan.listed, &second.manifests);
    // Manifests about to be deleted do not keep chunks live; those a checkpoint builds on do.
    let dropped = compact::deletable(plan, &building_on);
    let going: BTreeSet<&Key> = dropped.iter().map(|s| &s.r.key).collect();
    let kept: Vec<&crate::format::manifest::Manifest> = second
        .manifests
        .iter()
        .filter(|s| !going.contains(&s.r.key))
        .map(|s| &s.manifest)
        .collect();
    let live = reclaim::live_chunks(kept.iter().copied());
    let mut sections = reclaim::sections(second.index_objects());
    let unreadable =
        reclaim::add_unindexed_tables(store, &mut sections, &second.packs, &condemned).await;
    let mut rescued = reclaim::rescued(&sections, &second.packs, &live, &condemned);
    rescued.extend(condemned.intersection(&intents.protected()));
    rescued.extend(unreadable);
    rescued.retain(|p| !doomed_before.contains(p));
    report.packs_rescued = rescued.len();
    let doomed: BTreeSet<PackId> = condemned.difference(&rescued).copied().collect();
    laps.lap("re-mark");
    let held = update(store, &held, Phase::Deleting, doomed.clone(), Some(&doomed)).await?;

    // Dropped manifests first: a run killed later leaves no manifest naming a chunk whose index
    // section or pack is gone.
    delete_manifests(store, &dropped, report).await?;
    let owned = domains::owned(kept.iter().copied());
    let rewrite =
        domains::rewrite_indexes(store, &second.indexes, &second.packs, &doomed, &owned).await?;
    count_rewrite(report, rewrite);
    progress.phase("delete");
    progress.set_total(doomed.iter().filter_map(|p| second.packs.get(p)).sum());
    let keys: Vec<Key> = doomed.iter().map(layout::pack_key).collect();
    crate::backend::delete_batched(store.backend().as_ref(), &keys, |batch| {
        for p in batch.iter().filter_map(layout::parse_pack_key) {
            let size = second.packs.get(&p).copied().unwrap_or(0);
            progress.advance(size);
            report.bytes_freed += size;
            report.packs_deleted += second.packs.contains_key(&p) as usize;
        }
    })
    .await?;
    let held = update(store, &held, Phase::Idle, BTreeSet::new(), None).await?;
    laps.lap("delete");
    let listed: BTreeSet<Key> = second.manifests.iter().map(|s| s.r.key.clone()).collect();
    report.intents_cleared += intents::clear(store, intents.settled(&listed)).await?;
    Ok(held)
}

fn count_rewrite(report: &mut GcReport, rewrite: domains::IndexRewrite) {
    report.index_objects_deleted = rewrite.deleted;
    report.index_objects_written = rewrite.written;
    report.bytes_freed += rewrite.bytes_freed;
}

/// Claims the state (a dry run only reads it) and writes the tentative seal, before any listing:
/// a commit that listing misses deletes the seal (format-spec 13.8).
async fn claim_and_seal(
    store: &Store,
    opts: &GcOptions,
) -> Result<(Versioned, Option<seal::Tentative>)> {
    if opts.dry_run {
        return Ok((state::read(store.backend()).await?, None));
    }
    let held = claim(store, opts.window).await?;
    let generation = held.state.as_ref().map_or(0, |s| s.generation);
    // A run that takes over from one that was condemning or deleting does not seal: that run
    // may be paused, not dead, and write after this one's last listing (format-spec 13.8).
    if held.state.as_ref().is_some_and(|s| s.phase != Phase::Idle) {
        return Ok((held, None));
    }
    Ok((held, seal::begin(store, generation, opts).await))
}

/// Takes the gc state over for this run (one conditional update; condemned packs carry over).
async fn claim(store: &Store, window: Duration) -> Result<Versioned> {
    let prev = state::read(store.backend()).await?;
    let mut next = match &prev.state {
        Some(s) => s.clone(),
        None => GcState::initial(window),
    };
    next.window_ms = window.as_millis() as u64;
    state::update(store.backend(), &prev, next).await
}

/// Moves the held state to `phase` with `condemned`, recording `deleted` in the new generation.
async fn update(
    store: &Store,
    held: &Versioned,
    phase: Phase,
    condemned: BTreeSet<PackId>,
    deleted: Option<&BTreeSet<PackId>>,
) -> Result<Versioned> {
    let mut next = held
        .state
        .clone()
        .ok_or_else(|| Error::InvalidInput("gc state vanished".into()))?;
    next.generation += 1;
    next.phase = phase;
    next.condemned = condemned.into_iter().collect();
    if let Some(d) = deleted {
        next.record_deleted(d.iter().copied().collect());
    }
    state::update(store.backend(), held, next).await
}

/// Creates the gc state with `window` if the store has none (so writers use that window from
/// the start instead of [`state::DEFAULT_WINDOW`]).
pub async fn init_state(store: &Store, window: Duration) -> Result<()> {
    let prev = state::read(store.backend()).await?;
    if prev.state.is_none() {
        state::update(store.backend(), &prev, GcState::initial(window)).await?;
    }
    Ok(())
}
