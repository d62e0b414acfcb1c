//! The checkpoint itself: [`Writer`] orders the steps of one checkpoint: check the LSN against
//! the timeline, apply the gc state, store the files (again while gc condemns what they would
//! reference), guard the references with an intent, then create the index object and the
//! manifest, and release the intent once the manifest is confirmed.
//!
//! Owns the orchestration, the manifest and the per-timeline state cache. Must not read files
//! (`source`), build packs (`packer`) or judge gc state (`fence`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::{BackendError, BackendExt, Key};
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::manifest::{self, ChunkRef, FileEntry, Manifest, TimelineState};
use crate::id::{ChunkId, Lsn, PackId, TenantId, TimelineId};
use crate::progress::DynProgress;
use crate::store::index_cache::{DomainIndex, Domains, IndexCache};
use crate::store::{GC_RACE_RETRIES, ManifestRef, Store};
use crate::write::bases;
use crate::write::fence::{Fence, Guard, IndexAction, References, Start};
use crate::write::packer::{self, IngestCtx, UploadedPack};
use crate::write::request::{
    CheckpointOptions, CheckpointReport, CheckpointRequest, SourceFile, removed_names,
};
use crate::write::source::{self, Job};
use crate::write::training::TrainingRight;
use crate::write::turns::Turns;

/// Times a checkpoint stores chunks again because gc condemned packs it meant to reference.
const FENCE_RETRIES: usize = 3;

/// A writer: a store plus the chunk indexes it deduplicates against, one per dedup domain (the
/// legacy one, loaded at once, and each tenant's, loaded on its first checkpoint: format-spec
/// section 6). Keep one for many checkpoints so each is loaded once; it learns the packs it
/// writes.
pub struct Writer {
    store: Store,
    index: Domains,
    /// The newest known state of each timeline this writer recorded, to avoid re-reading its
    /// manifests for the next checkpoint.
    states: Mutex<HashMap<(TenantId, TimelineId), TimelineState>>,
    /// The gc generation applied to `index`.
    fence: Fence,
    /// Whether the gc state is known to carry the version of tenant domains (section 11).
    marked: std::sync::atomic::AtomicBool,
    /// Which checkpoints may run at once (one per tenant).
    turns: Turns,
    /// Which checkpoint trains the store's dictionary (one of this writer's at a time), and the
    /// dictionary the writer compresses with once it knows one.
    training: TrainingRight,
}

/// What storing a checkpoint's files produced: the added entries, the packs written and the
/// intent guarding their references.
type Stored = (Vec<FileEntry>, Vec<UploadedPack>, Guard);

impl Writer {
    /// Loads the store's legacy index domain (tenants' domains load on their first checkpoint).
    pub async fn new(store: Store) -> Result<Writer> {
        let fence = Fence::new();
        let unusable = fence.prime(store.backend()).await?;
        let index = Domains::load(&store, &unusable).await?;
        Ok(Writer {
            store,
            index,
            states: Mutex::new(HashMap::new()),
            fence,
            marked: Default::default(),
            turns: Turns::default(),
            training: TrainingRight::default(),
        })
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of chunks known to be stored, over the domains loaded.
    pub fn known_chunks(&self) -> usize {
        self.index.totals().0
    }

    /// Heap bytes the chunk indexes hold for their entries.
    pub fn index_heap_bytes(&self) -> usize {
        self.index.totals().1
    }

    /// Merges index objects written by others, in the domains loaded, since this writer loaded
    /// or last refreshed them.
    pub async fn refresh_index(&self) -> Result<usize> {
        self.index.refresh(&self.store).await
    }

    /// `tenant`'s dedup domain, loaded on first use (leaving out what the gc state says no
    /// checkpoint may reference; the fence drops later changes from every loaded domain).
    async fn tenant_cache(&self, tenant: &TenantId) -> Result<Arc<IndexCache>> {
        if let Some(c) = self.index.loaded(tenant) {
            return Ok(c);
        }
        let unusable = self.fence.unusable_now(self.store.backend()).await?;
        self.index.tenant(&self.store, tenant, &unusable).await
    }

    /// Restores a timeline (at `at`, or its newest checkpoint) into `to`, finding chunks through
    /// this writer's index after merging any index objects written since it was loaded.
    pub async fn restore(
        &self,
        tenant: &TenantId,
        timeline: &TimelineId,
        at: Option<Lsn>,
        to: &Path,
        progress: DynProgress,
    ) -> Result<crate::restore::RestoreReport> {
        let state = self.store.checkpoint_state(tenant, timeline, at).await?;
        let cache = self.tenant_cache(tenant).await?;
        self.refresh_index().await?;
        // Dictionaries are older than the packs whose blobs name them: loaded after the index.
        self.store.load_dictionaries().await?;
        // Only the chunks this state needs, copied under the lock; planning (which hashes files
        // already present) then runs on the blocking pool without holding it.
        let all: Vec<ChunkId> = state
            .files
            .values()
            .flat_map(|f| f.chunks.iter().flat_map(ChunkRef::stored_ids))
            .collect();
        let mut needed = self.index.view(&cache).subset(&all);
        if all.iter().any(|c| !needed.contains(c)) {
            // A listing is not a snapshot: list the domain again before failing (section 6).
            needed = self
                .store
                .load_tenant_index_for(tenant, &all)
                .await?
                .subset(&all);
        }
        let (store, to, p) = (self.store.clone(), to.to_path_buf(), progress.clone());
        let plan = tokio::task::spawn_blocking(move || {
            // The sync loop's download: `to` ends as exactly the checkpoint's state.
            let opts = crate::restore::RestoreOptions { overwrite: true };
            store.plan_restore(&needed, &state, &to, opts, &p)
        })
        .await??;
        self.store.execute_restore(plan, progress).await
    }

    /// Records one checkpoint, reading every file. Fails with `AlreadyExists` if the timeline has
    /// a checkpoint at this LSN and with `InvalidInput` if it has a newer one.
    pub async fn checkpoint(
        &self,
        req: CheckpointRequest,
        progress: DynProgress,
    ) -> Result<CheckpointReport> {
        self.checkpoint_with(req, CheckpointOptions::default(), progress)
            .await
    }

    /// Like [`Writer::checkpoint`], with options (e.g. not reading files the previous checkpoint
    /// recorded under the same name and size: [`CheckpointOptions::immutable_names`]).
    pub async fn checkpoint_with(
        &self,
        req: CheckpointRequest,
        opts: CheckpointOptions,
        progress: DynProgress,
    ) -> Result<CheckpointReport> {
        let lsn = req.metadata.disk_consistent_lsn;
        let _turn = self.turns.take(req.tenant).await;
        let prev = self.previous_state(&req).await?;
        for f in &req.files {
            manifest::validate_name(&f.name)
                .map_err(|e| Error::InvalidInput(format!("file name {:?}: {e}", f.name)))?;
        }
        let mut report = CheckpointReport {
            lsn: lsn.to_string(),
            files: req.files.len(),
            ..Default::default()
        };
        let (added, packs, guard) = self
            .store_fenced(&req, opts, prev.as_ref(), &mut report, progress)
            .await?;
        let removed = removed_names(&req, prev.as_ref());
        report.files_removed = removed.len();
        let prev_lsn = prev.as_ref().map(|p| p.lsn);
        let checked = self.still_newest(&req, prev_lsn).await;
        if let Err(e) = match checked {
            Ok(()) => self.commit_index(&req.tenant, packs, &mut report).await,
            Err(e) => Err(e),
        } {
            guard.release(self.store.backend()).await;
            return Err(e);
        }
        let manifest = Manifest {
            tenant: req.tenant,
            timeline: req.timeline,
            lsn,
            prev_lsn: prev.as_ref().map(|p| p.lsn),
            metadata: req.metadata,
            added,
            removed,
            base: false,
            dropped_from: None,
        };
        // The folded state must be restorable (no clashing names, no absent removals).
        let state = match TimelineState::next_checked(prev, manifest.clone()) {
            Ok(state) => state,
            Err(e) => {
                guard.release(self.store.backend()).await;
                return Err(Error::InvalidInput(format!("checkpoint {lsn}: {e}")));
            }
        };
        let key = self.create_manifest(&manifest, &state, guard).await?;
        report.manifest = key.to_string();
        self.states
            .lock()
            .expect("states lock")
            .insert((req.tenant, req.timeline), state);
        tracing::info!(manifest = %key, added = report.files_added, new_chunks = report.new_chunks, "checkpoint recorded");
        Ok(report)
    }

    /// The timeline's state as of its newest manifest (from the cache when it is current), after
    /// checking that `req` comes after it. A manifest gone between the listing and its read was
    /// folded into a base by gc (format-spec 7.1): the timeline is listed again.
    async fn previous_state(&self, req: &CheckpointRequest) -> Result<Option<TimelineState>> {
        let key = (req.tenant, req.timeline);
        let mut attempt = 0;
        loop {
            let refs = self.store.timeline_manifests(&key.0, &key.1).await?;
            check_order(&refs, req.metadata.disk_consistent_lsn)?;
            let newest = refs.last().map(|r| r.lsn);
            if let Some(cached) = self.states.lock().expect("states lock").get(&key) {
                if Some(cached.lsn) == newest {
                    return Ok(Some(cached.clone()));
                }
            }
            match self.store.read_chain(&refs).await {
                Err(e) if e.is_not_found() && attempt < GC_RACE_RETRIES => attempt += 1,
                other => return Ok(TimelineState::fold(other?)),
            }
        }
    }

    /// Checks, after the intent naming `prev` exists, that `prev` is still the timeline's newest
    /// manifest. gc deletes a manifest only when a newer one exists, and keeps one an intent
    /// names; so either gc's intent read sees ours, or this listing (which comes after it) shows
    /// the newer manifest and the checkpoint fails instead of building on a deleted one
    /// (format-spec 13.3, rule 4).
    async fn still_newest(&self, req: &CheckpointRequest, prev: Option<Lsn>) -> Result<()> {
        let refs = self
            .store
            .timeline_manifests(&req.tenant, &req.timeline)
            .await?;
        let newest = refs.last().map(|r| r.lsn);
        if newest == prev {
            return Ok(());
        }
        let show = |l: Option<Lsn>| l.map_or("none".to_string(), |l| l.to_string());
        Err(Error::Fenced(format!(
            "timeline {}/{}: its newest checkpoint is now {}, not {} which checkpoint {} was \
             computed against (a late create landed or gc folded it); retry",
            req.tenant,
            req.timeline,
            show(newest),
            show(prev),
            req.metadata.disk_consistent_lsn
        )))
    }

    /// Applies the gc state to the indexes before deduplicating against `cache` and the legacy
    /// domain (fence step 1): every loaded domain forgets the packs the state forbids; the two
    /// this checkpoint uses catch up with the index objects gc wrote (the others on their
    /// tenant's next checkpoint).
    async fn apply_gc_state(&self, cache: &IndexCache) -> Result<Start> {
        let (action, start) = self.fence.before_dedup(self.store.backend()).await?;
        match action {
            IndexAction::Keep => {}
            IndexAction::Drop(packs) => {
                self.index.mark_behind(false);
                self.index.drop_packs(&packs);
            }
            IndexAction::Reload(packs) => {
                self.index.mark_behind(true);
                self.index.drop_packs(&packs);
            }
        }
        if self.index.behind(cache) {
            let unusable = self.fence.unusable_now(self.store.backend()).await?;
            self.index.catch_up(&self.store, cache, &unusable).await?;
        }
        Ok(start)
    }

    /// Stores the files, again while gc condemns packs they would reference; returns the
    /// entries, the packs written and a validation (fence step 2).
    async fn store_fenced(
        &self,
        req: &CheckpointRequest,
        opts: CheckpointOptions,
        prev: Option<&TimelineState>,
        report: &mut CheckpointReport,
        progress: DynProgress,
    ) -> Result<Stored> {
        let cache = self.tenant_cache(&req.tenant).await?;
        let view = self.index.view(&cache);
        for attempt in 0..=FENCE_RETRIES {
            let start = self.apply_gc_state(&cache).await?;
            let retry = attempt > 0;
            let files = (&req.files[..], view.clone());
            let (added, packs) = self
                .store_files(files, opts, prev, retry, report, progress.clone())
                .await?;
            let own: HashMap<ChunkId, PackId> = packs
                .iter()
                .flat_map(|p| p.entries.iter().map(|e| (e.chunk, p.id)))
                .collect();
            let refs = added.iter().flat_map(|f| &f.chunks);
            let chunks: Vec<ChunkId> = refs.flat_map(ChunkRef::stored_ids).collect();
            let refs = References {
                tenant: req.tenant,
                timeline: req.timeline,
                lsn: req.metadata.disk_consistent_lsn,
                prev: prev.map(|p| p.lsn),
                chunks: &chunks,
                own: &own,
            };
            let backend = self.store.backend();
            match self.fence.guard(backend, &view, refs, start).await? {
                Ok(guard) => return Ok((added, packs, guard)),
                Err(bad) => {
                    tracing::info!(
                        packs = bad.len(),
                        "gc condemned packs this checkpoint used; storing again"
                    );
                    self.index.drop_packs(&bad);
                }
            }
        }
        Err(Error::Fenced(format!(
            "gc condemned packs under checkpoint {} {FENCE_RETRIES} times",
            req.metadata.disk_consistent_lsn
        )))
    }

    /// Stores the content of every changed file; returns their entries and the packs written.
    async fn store_files(
        &self,
        (files, index): (&[SourceFile], DomainIndex),
        opts: CheckpointOptions,
        prev: Option<&TimelineState>,
        retry: bool,
        report: &mut CheckpointReport,
        progress: DynProgress,
    ) -> Result<(Vec<FileEntry>, Vec<UploadedPack>)> {
        *report = CheckpointReport {
            lsn: std::mem::take(&mut report.lsn),
            files: files.len(),
            ..Default::default()
        };
        // A retry stores every chunk it cannot resolve afresh.
        let known = source::known_files(prev.filter(|_| !retry));
        let priors = bases::priors(files, prev.filter(|_| opts.deltas));
        let jobs: Vec<Job> = files
            .iter()
            .map(|f| {
                let old = prev.and_then(|p| p.files.get(&f.name)).cloned();
                (f.clone(), old, priors.get(&f.name).cloned())
            })
            .collect();
        let (tx, uploader) = packer::start_uploads(self.store.backend().clone());
        let dict = self.training.dictionary(&self.store).await?;
        let training = self.training.clone();
        let ctx = IngestCtx::new(&self.store, index, tx, progress, dict, training);
        let ctx = Arc::new(ctx);
        let outcomes = source::ingest_all(ctx.clone(), jobs, known, opts.immutable_names).await;
        let ctx = Arc::try_unwrap(ctx)
            .map_err(|_| ())
            .expect("workers are done");
        let claim = ctx.take_claim();
        // Finishing the context closes the pack channel, which ends the uploads.
        ctx.finish().report(report);
        let packs = uploader.await?;
        let outcomes = outcomes?;
        let packs = packs?;
        // A dictionary trained here was uploaded before any of the packs: it is durable.
        if let Some(claim) = claim {
            claim.keep();
        }
        let added = outcomes
            .into_iter()
            .filter_map(|o| o.tally(report))
            .collect();
        report.packs_written = packs.len();
        Ok((added, packs))
    }

    /// Creates the index object naming `packs` (already durable) in level 0 of `tenant`'s domain
    /// and teaches the writer's index of that domain.
    async fn commit_index(
        &self,
        tenant: &TenantId,
        packs: Vec<UploadedPack>,
        report: &mut CheckpointReport,
    ) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let sections = packs.into_iter().map(|p| (p.id, p.entries)).collect();
        use std::sync::atomic::Ordering::Relaxed;
        if !self.marked.load(Relaxed) {
            crate::gc::state::mark_version(self.store.backend()).await?;
            self.marked.store(true, Relaxed);
        }
        let domain = layout::IndexDomain::Tenant(*tenant, 0);
        let created = packer::create_index(self.store.backend(), domain, sections).await?;
        report.index_objects_written = 1;
        self.tenant_cache(tenant).await?.add_object(&created.object);
        Ok(())
    }

    /// Creates the manifest; a checkpoint is never overwritten. "Already exists" is success when
    /// the object there is this checkpoint: our exact bytes (a retried create that landed), or a
    /// base gc made of them meanwhile, stating exactly `state` (the fold this manifest gives).
    /// The intent is released when the outcome is known (the key exists, so no create of ours
    /// can land later) and kept otherwise.
    async fn create_manifest(
        &self,
        manifest: &Manifest,
        state: &TimelineState,
        guard: Guard,
    ) -> Result<Key> {
        let backend = self.store.backend();
        let key = layout::manifest_key(&manifest.tenant, &manifest.timeline, manifest.lsn);
        if let Err(e) = manifest.validate() {
            guard.release(backend).await;
            return Err(Error::InvalidInput(e));
        }
        let bytes = Bytes::from(manifest.encode());
        match backend.create_bytes(&key, bytes.clone()).await {
            Ok(()) => {
                guard.release(backend).await;
                Ok(key)
            }
            Err(BackendError::AlreadyExists { .. }) => {
                let existing = backend
                    .get_bytes(&key, manifest::MAX_MANIFEST_BODY + 64)
                    .await;
                guard.release(backend).await;
                if is_this_checkpoint(&existing?, &bytes, state) {
                    Ok(key)
                } else {
                    Err(Error::AlreadyExists(format!("checkpoint {key}")))
                }
            }
            Err(e) => {
                guard.keep(backend).await;
                Err(e.into())
            }
        }
    }
}

/// Whether `existing` (found at our manifest's key) records our checkpoint: our `bytes`, or a
/// base gc wrote over them (format-spec 13.4) whose state is exactly `state`.
fn is_this_checkpoint(existing: &[u8], bytes: &[u8], state: &TimelineState) -> bool {
    if existing == bytes {
        return true;
    }
    match Manifest::decode(existing) {
        Ok(m) if m.base => TimelineState::apply(None, m) == *state,
        _ => false,
    }
}

/// Refuses a checkpoint at or before the timeline's newest one.
fn check_order(refs: &[ManifestRef], lsn: Lsn) -> Result<()> {
    let Some(newest) = refs.last() else {
        return Ok(());
    };
    if newest.lsn == lsn {
        return Err(Error::AlreadyExists(format!("checkpoint {}", newest.key)));
    }
    if newest.lsn > lsn {
        return Err(Error::InvalidInput(format!(
            "checkpoint at {lsn} is older than the newest recorded one at {}",
            newest.lsn
        )));
    }
    Ok(())
}
