//! gc: retention, manifest compaction and pack reclamation, safe while writers write and never
//! blocking them (format-spec section 13 states the protocol as rules).
//!
//! # Phases of one run
//! 1. **Claim**: update the gc state (`gc/state`, conditional on its etag) to a new generation.
//!    Every later update is conditional on the etag of the previous one, so a second gc that
//!    claims in between makes this one stop at its next update; condemned packs carry over.
//! 2. **Scan**: list manifests, then index objects, then packs; read every manifest and index
//!    object. Any failed listing or read aborts the run before anything is deleted.
//! 3. **Compact**: retention picks the checkpoints to keep; kept manifests after a dropped one
//!    are replaced in place by bases (`If-Match`), then the dropped manifests are deleted.
//! 4. **Mark and repack**: live chunks are those of the remaining manifests; packs with nothing
//!    live die, packs below the live-fraction threshold have their live blobs copied into new
//!    packs (packs, then their index object).
//! 5. **Condemn**: the gc state lists the dying and repacked packs. Writers stop referencing
//!    them from here on.
//! 6. **Wait** at least the window, on this process's monotonic clock: every writer that
//!    validated before the condemnation has created its manifest or given up by then.
//! 7. **Re-mark**: scan again; condemned packs holding a live chunk found in no other usable
//!    pack are rescued; the rest are *doomed*.
//! 8. **Delete**: the state records the doomed packs as deleted (phase Deleting); index objects
//!    naming them are rewritten without them (new objects first), then the packs are deleted;
//!    the state returns to Idle.
//!
//! A run killed anywhere leaves a store readers accept (nothing live is deleted before step 8,
//! and step 8 deletes only what re-marking proved dead); the next run carries the condemned set
//! over and finishes the work.
//!
//! Owns the orchestration and the report. Retention, compaction, reclamation and the gc state's
//! update live in the submodules; the writer's side of the fence is `write::fence`.

pub mod compact;
pub mod reclaim;
pub mod retention;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::backend::{Key, ObjectMeta};
use crate::error::{Error, Result};
use crate::format::index::IndexObject;
use crate::format::layout;
use crate::id::PackId;
use crate::progress::DynProgress;
use crate::store::Store;
use compact::Scanned;
use retention::{Retention, TimelineCheckpoints};
use state::{GcState, Phase, Versioned};

/// Default live fraction below which a pack is repacked.
pub const DEFAULT_REPACK_THRESHOLD: f64 = 0.75;
/// Default number of kept deltas after which compaction writes a base.
pub const DEFAULT_MAX_CHAIN: usize = 64;

/// How a gc run behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    pub retention: Retention,
    /// Packs whose live bytes are below this fraction of their blob bytes are repacked.
    pub repack_threshold: f64,
    /// Kept deltas in a row after which one is replaced by a base.
    pub max_chain: usize,
    /// The writers' window (written into the gc state); gc waits at least this long between
    /// condemning and re-marking.
    pub window: Duration,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
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
        }
    }
}

/// What a gc run did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub generation: u64,
    /// Kept manifests replaced by a base.
    pub manifests_folded: usize,
    pub manifests_deleted: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    /// Condemned packs found live again at re-mark.
    pub packs_rescued: usize,
    pub packs_written: usize,
    pub index_objects_deleted: usize,
    pub index_objects_written: usize,
    pub bytes_freed: u64,
    pub bytes_written: u64,
    pub duration_ms: u64,
}

/// A complete scan of the store.
struct Scan {
    manifests: Vec<Scanned>,
    indexes: BTreeMap<Key, (u64, IndexObject)>,
    packs: HashMap<PackId, u64>,
}

impl Scan {
    fn index_objects(&self) -> BTreeMap<Key, IndexObject> {
        self.indexes
            .iter()
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect()
    }
}

/// Lists manifests, then index objects, then packs (so that every chunk a listed manifest names
/// is in a listed index object whose packs are listed), and reads the first two kinds.
async fn scan(store: &Store) -> Result<Scan> {
    let listed = store.list(&layout::prefix(layout::MANIFESTS)).await?;
    let refs = store.list_manifests_from(&listed);
    let etags: HashMap<&Key, Option<String>> =
        listed.iter().map(|m| (&m.key, m.etag.clone())).collect();
    let read = store.read_manifests(&refs).await?;
    let manifests = refs
        .iter()
        .zip(read)
        .map(|(r, m)| Scanned {
            etag: etags.get(&r.key).cloned().flatten(),
            r: r.clone(),
            manifest: m,
        })
        .collect();
    let index_meta: HashMap<Key, u64> = store
        .list(&layout::prefix(layout::INDEX))
        .await?
        .into_iter()
        .filter(|m| layout::parse_index_key(&m.key).is_some())
        .map(|m| (m.key, m.size))
        .collect();
    let mut indexes = BTreeMap::new();
    for (k, size) in index_meta {
        let obj = store.read_index(&k).await?;
        indexes.insert(k, (size, obj));
    }
    let packs = store
        .list(&layout::prefix(layout::PACKS))
        .await?
        .iter()
        .filter_map(|m: &ObjectMeta| layout::parse_pack_key(&m.key).map(|id| (id, m.size)))
        .collect();
    Ok(Scan {
        manifests,
        indexes,
        packs,
    })
}

/// Runs gc once.
pub async fn run(store: &Store, opts: &GcOptions, progress: DynProgress) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let backend = store.backend();
    let (mut held, wait) = if opts.dry_run {
        (state::read(backend).await?, opts.window)
    } else {
        claim(store, opts.window).await?
    };
    report.generation = held.state.as_ref().map_or(0, |s| s.generation);

    let first = scan(store).await?;
    let plan = compaction_plan(&first, opts);
    report.manifests_folded = plan.bases.len();
    report.manifests_deleted = plan.delete.len();
    let dropped: BTreeSet<&Key> = plan.delete.iter().map(|s| &s.r.key).collect();
    let replaced: HashMap<&Key, &crate::format::manifest::Manifest> =
        plan.bases.iter().map(|(s, b)| (&s.r.key, b)).collect();
    let remaining = first
        .manifests
        .iter()
        .filter(|s| !dropped.contains(&s.r.key))
        .map(|s| *replaced.get(&s.r.key).unwrap_or(&&s.manifest));
    let live = reclaim::live_chunks(remaining);
    let sections = reclaim::sections(&first.index_objects());
    let reclaim = reclaim::plan(&sections, &first.packs, &live, opts.repack_threshold);
    report.packs_repacked = reclaim.repack.len();
    if opts.dry_run {
        report.packs_deleted = reclaim.dead.len() + reclaim.repack.len();
        report.bytes_freed = reclaim.bytes_released - reclaim.bytes_copied
            + plan.delete.iter().map(|s| s.r.size).sum::<u64>();
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    report.bytes_freed += compact::apply(store, &plan).await?;

    let (new_packs, written) = reclaim::repack(store, &reclaim, &sections, &progress).await?;
    report.packs_written = new_packs.len();
    report.bytes_written = written;
    let held_state = held.state.clone().expect("claimed");
    let mut condemned: BTreeSet<PackId> = held_state.condemned.iter().copied().collect();
    condemned.extend(reclaim.dead.iter().chain(&reclaim.repack));
    held = update(store, &held, Phase::Condemned, condemned.clone(), None).await?;
    tokio::time::sleep(wait).await;

    let second = scan(store).await?;
    let live = reclaim::live_chunks(second.manifests.iter().map(|s| &s.manifest));
    let sections = reclaim::sections(&second.index_objects());
    let rescued = reclaim::rescued(&sections, &second.packs, &live, &condemned);
    report.packs_rescued = rescued.len();
    let doomed: BTreeSet<PackId> = condemned.difference(&rescued).copied().collect();
    held = update(store, &held, Phase::Deleting, doomed.clone(), Some(&doomed)).await?;

    let rewrite = reclaim::rewrite_indexes(store, &second.indexes, &second.packs, &doomed).await?;
    report.index_objects_deleted = rewrite.deleted;
    report.index_objects_written = rewrite.written;
    report.bytes_freed += rewrite.bytes_freed;
    for p in &doomed {
        backend.delete(&layout::pack_key(p)).await?;
        report.bytes_freed += second.packs.get(p).copied().unwrap_or(0);
        report.packs_deleted += second.packs.contains_key(p) as usize;
    }
    held = update(store, &held, Phase::Idle, BTreeSet::new(), None).await?;
    report.generation = held.state.as_ref().map_or(0, |s| s.generation);
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(?report, "gc finished");
    Ok(report)
}

fn compaction_plan(scan: &Scan, opts: &GcOptions) -> compact::CompactPlan {
    let mut timelines: BTreeMap<_, TimelineCheckpoints> = BTreeMap::new();
    for s in &scan.manifests {
        let t = timelines
            .entry((s.r.tenant, s.r.timeline))
            .or_insert_with(|| TimelineCheckpoints {
                lsns: Vec::new(),
                newest: s.manifest.metadata.clone(),
            });
        t.lsns.push(s.r.lsn);
        t.newest = s.manifest.metadata.clone();
    }
    let kept = retention::kept(&opts.retention, &timelines);
    compact::plan(&scan.manifests, &kept, opts.max_chain)
}

/// Takes the gc state over for this run; returns it and how long to wait after condemning (the
/// longest window any writer may be using).
async fn claim(store: &Store, window: Duration) -> Result<(Versioned, Duration)> {
    let prev = state::read(store.backend()).await?;
    let (next, wait) = match &prev.state {
        Some(s) => (s.clone(), window.max(s.window())),
        None => (GcState::initial(window), window.max(state::DEFAULT_WINDOW)),
    };
    let mut next = next;
    next.window_ms = window.as_millis() as u64;
    Ok((state::update(store.backend(), &prev, next).await?, wait))
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
