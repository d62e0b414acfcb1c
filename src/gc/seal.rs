//! gc's seal (format-spec 13.8): how a run over a store where nothing changed since a run that
//! left nothing to do stops after two reads instead of listing the whole store.
//!
//! A run writes a tentative seal (its claimed generation, a digest of its options) before its
//! first listing and confirms it, conditional on the tentative object's etag, only when it found
//! nothing to do and left nothing for later, or when it did work and a scan after its last
//! write ([`conclude`]) finds nothing more; the confirmed seal carries the generation of the
//! state the run wrote last. Writers delete the seal after every commit, so a
//! commit whose manifest that run's listing missed either deleted the tentative seal before the
//! confirmation (which then fails) or deletes the confirmed one later. A later run that finds a
//! confirmed seal of the state's current generation, made with its own options, stops: there is
//! nothing a full run would do. The seal only ever makes a run do less, never delete anything,
//! so safety does not depend on it; a lost deletion (a writer killed right after its create)
//! only delays gc until the next commit, a `--full` run, or [`MAX_AGE`].
//!
//! Owns the seal's writes, its reading, the decision to stop, and the end of a run: the decision
//! to seal (with the scan a run makes after its work to take it) and gc's caches kept current.
//! Must not decide what a run does otherwise (that is `gc::run`).

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::{BackendError, Payload, PutMode};
use crate::error::{Error, Result};
use crate::format::gc_seal::{GcSeal, MAX_GC_SEAL_BODY};
use crate::format::layout;
use crate::store::Store;

use super::cache::Caches;
use super::report::Laps;
use super::scan::scan;
use super::state::{self, Phase};
use super::{GcOptions, GcReport, compact::CompactPlan, domains, plan, reclaim::ReclaimPlan};

/// A seal older than this (by the store's clock against ours; liveness only) is not trusted to
/// stop a run, so work a lost deletion hid is found within a day.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What `opts` hash to: runs with different options may decide differently, so a seal counts
/// only for the options it was made with.
pub fn options_digest(opts: &GcOptions) -> String {
    let mut tenants: Vec<_> = opts.retention.tenants.iter().collect();
    tenants.sort_by_key(|(t, _)| **t);
    let text = format!(
        "retention {:?} {:?}; repack {}; max chain {}; small pack {}; window {}",
        opts.retention.default,
        tenants,
        opts.repack_threshold.to_bits(),
        opts.max_chain,
        opts.small_pack,
        opts.window.as_millis(),
    );
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The generation of the state when a confirmed seal made with `opts` covers it: the run may
/// stop, there is nothing to do. `None` when a full run is needed.
pub(crate) async fn unchanged(store: &Store, opts: &GcOptions) -> Result<Option<u64>> {
    if opts.full || opts.clear_intents {
        return Ok(None);
    }
    let (held, seal) = futures::join!(state::read(store.backend()), read(store));
    let Some(s) = held?.state else {
        return Ok(None);
    };
    let Some((seal, written)) = seal? else {
        return Ok(None);
    };
    let young = SystemTime::now()
        .duration_since(written)
        .map_or(true, |age| age < MAX_AGE);
    let covers = seal.confirmed
        && young
        && seal.generation == s.generation
        && s.phase == Phase::Idle
        && s.condemned.is_empty()
        && seal.options == options_digest(opts);
    Ok(covers.then_some(s.generation))
}

/// The seal and when it was written; `None` when there is none or it cannot be decoded (that
/// costs a full run, never data).
async fn read(store: &Store) -> Result<Option<(GcSeal, SystemTime)>> {
    let key = layout::gc_seal_key();
    let got = match store.backend().get(&key).await {
        Err(e) if e.is_not_found() => return Ok(None),
        other => other?,
    };
    let written = got.meta.last_modified;
    let decoded = match crate::backend::collect_stream(got.body, MAX_GC_SEAL_BODY + 64).await {
        Err(e @ BackendError::TooLarge { .. }) => Err(e.to_string()),
        bytes => GcSeal::decode(&bytes?).map_err(|e| e.to_string()),
    };
    match decoded {
        Ok(seal) => Ok(Some((seal, written))),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "ignoring an unreadable gc seal");
            Ok(None)
        }
    }
}

/// Whether a run with `plan` and `reclaim` does nothing and leaves nothing for a later run
/// (format-spec 13.8, rule 2): it condemns nothing, writes no base, deletes no manifest, finds
/// no missing chunk, rewrites no index object and defers nothing.
pub(crate) fn quiet(
    plan: &CompactPlan,
    reclaim: &ReclaimPlan,
    condemns: bool,
    chunks_missing: usize,
    rewrites_indexes: bool,
) -> bool {
    !condemns
        && plan.bases.is_empty()
        && plan.delete.is_empty()
        && !reclaim.deferred
        && chunks_missing == 0
        && !rewrites_indexes
}

/// Whether a run that did work may be worth sealing after it scans again: it left nothing it
/// knows of for later (no young or spared pack, no rescued pack, no missing chunk).
pub(crate) fn worth_rescanning(report: &GcReport) -> bool {
    !report.left_for_later && report.packs_rescued == 0 && report.chunks_missing == 0
}

/// A tentative seal this run wrote, and the etag its confirmation is conditional on.
pub(crate) struct Tentative {
    seal: GcSeal,
    etag: String,
}

/// Writes the tentative seal of the run that claimed `generation`; call before the first
/// listing. `None` (with a warning) when it could not be written: the run then does not seal.
pub(crate) async fn begin(store: &Store, generation: u64, opts: &GcOptions) -> Option<Tentative> {
    let seal = GcSeal {
        generation,
        options: options_digest(opts),
        confirmed: false,
    };
    let key = layout::gc_seal_key();
    let backend = store.backend();
    let payload = Payload::from_bytes(Bytes::from(seal.encode()));
    let written = match backend.put(&key, payload, PutMode::Overwrite).await {
        Ok(()) => backend.head(&key).await,
        Err(e) => Err(e),
    };
    match written.map(|m| m.etag) {
        Ok(Some(etag)) => Some(Tentative { seal, etag }),
        // Deleted by a writer already: this run cannot seal.
        Err(e) if e.is_not_found() => None,
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not write the tentative gc seal; this run will not seal");
            None
        }
    }
}

/// Confirms `tentative` for the state of `generation` (the one this run last wrote) unless a
/// writer deleted it (or another run replaced it) since; returns whether the seal now stands.
pub(crate) async fn confirm(store: &Store, tentative: Tentative, generation: u64) -> bool {
    let seal = GcSeal {
        confirmed: true,
        generation,
        ..tentative.seal
    };
    let payload = Payload::from_bytes(Bytes::from(seal.encode()));
    let mode = PutMode::Update(tentative.etag);
    match store
        .backend()
        .put(&layout::gc_seal_key(), payload, mode)
        .await
    {
        Ok(()) => true,
        Err(BackendError::PreconditionFailed { .. }) => false,
        Err(e) if e.is_not_found() => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not confirm the gc seal; the next run scans");
            false
        }
    }
}

/// Whether the tentative seal is still the object this run wrote.
async fn still_there(store: &Store, tentative: &Tentative) -> bool {
    let head = store.backend().head(&layout::gc_seal_key()).await;
    head.is_ok_and(|m| m.etag.as_deref() == Some(tentative.etag.as_str()))
}

/// The end of a run that wrote `tentative`: confirms the seal when a new run would find nothing
/// to do (format-spec 13.8, rule 2) and keeps gc's caches current (13.7). A `quiet` run (it
/// changed nothing and left nothing for later) seals at once; a run that did work, and left
/// nothing it knows of for later, scans again first and seals only if a plan from that scan is
/// quiet too, so that the next run with nothing committed since stops at the seal.
pub(crate) async fn conclude(
    store: &Store,
    opts: &GcOptions,
    tentative: Option<Tentative>,
    quiet: bool,
    (caches, laps): (&mut Caches, &mut Laps),
    report: &GcReport,
) -> bool {
    let generation = report.generation;
    let sealed = match tentative {
        Some(t) if quiet => confirm(store, t, generation).await,
        // Unless a writer has deleted the tentative seal already (then the rescan is wasted).
        Some(t) if worth_rescanning(report) && still_there(store, &t).await => {
            nothing_left(store, opts, caches, laps).await && confirm(store, t, generation).await
        }
        _ => {
            // What this run wrote would otherwise be read by the next one.
            let wrote = (report.manifests_folded, report.index_objects_written);
            caches.refresh(store, (wrote.0 > 0, wrote.1 > 0)).await;
            laps.lap("refresh-caches");
            return false;
        }
    };
    laps.lap("seal");
    sealed
}

/// Whether a new run would find nothing to do and leave nothing for later, from a scan made
/// after this run's last write (which also saves gc's caches). A failed scan or plan says no.
async fn nothing_left(
    store: &Store,
    opts: &GcOptions,
    caches: &mut Caches,
    laps: &mut Laps,
) -> bool {
    let planned = async {
        let last = scan(store, caches, laps).await?;
        caches.manifests.save(store, &last.listed.0).await;
        caches.indexes.save(store, &last.listed.1).await;
        let mut would = GcReport::default();
        let (plan, _, reclaim) = plan::plan_run(store, &last, opts, &mut would).await?;
        let owned = domains::owned(plan::remaining(&last, &plan));
        let rewrites = domains::rewrite_needed(&last.indexes, &last.packs, &owned);
        let condemns = !reclaim.dead.is_empty() || !reclaim.repack.is_empty();
        let missing = would.chunks_missing;
        Ok::<_, Error>(quiet(&plan, &reclaim, condemns, missing, rewrites))
    };
    let quiet = planned.await.unwrap_or_else(|e| {
        // Missing chunks right after this run's deletions would be a bug: say so loudly.
        tracing::error!(error = %e, "gc's scan after its work failed; the store stays unsealed");
        false
    });
    laps.lap("plan-again");
    quiet
}
