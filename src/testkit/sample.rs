//! A deterministic, realistic sample pageserver workdir, for the demo, tests and benchmarks.
//!
//! Owns everything it writes under the root it is given (`tenants/<tenant>/timelines/<timeline>/`
//! with a `metadata` file and layer files): creates it at checkpoint 0, then changes it one
//! checkpoint at a time. Must not touch anything outside that root, and knows nothing of the
//! store: callers back the workdir up and measure.
//!
//! # Rules
//! - Deterministic: the same [`SampleSpec`] gives byte-identical files and identical
//!   [`CheckpointDelta`]s at every checkpoint, whatever the thread count.
//! - Files are written whole under a temporary name (`<name>.___temp`) and renamed into place;
//!   layer files are never modified, only added and removed. The `metadata` file is replaced at
//!   every checkpoint.
//! - After an error the workdir is in an unknown state: discard it.
//! - The `metadata` files are in the pageserver's own format by default ([`SampleMetadata`]), so
//!   the demo, tests and benchmarks read them as a pageserver's; [`SampleWorkdir::create_with`]
//!   writes layercas's format instead.
//!
//! # Shape (modelled on Neon's staging fleet, scaled to `bytes_per_timeline`)
//! - Pages are Postgres 8 KiB heap pages that zstd compresses about 3x ([`postgres_page`]).
//! - About 17-23 layers per timeline at checkpoint 0: three *hot* image layers holding about 75%
//!   of the budget (the largest about 45%), ten to fourteen small image layers (24-136 KiB),
//!   three to five small delta layers (8-200 KiB) and a WAL-like delta (branches have fewer
//!   small layers). Most files are small, a few are large.
//! - Timeline 1 of each tenant with two or more is a branch of timeline 0 at its checkpoint-0
//!   LSN: its hot image layers are the parent's, 3% of the pages changed, at the same offsets.
//! - Each checkpoint: the LSN advances; every hot image layer gets a new version under a new name
//!   with 2% of its pages updated in place (the two newest versions stay); the WAL-like delta is
//!   rewritten under a new name as its previous bytes plus new records; one to four new small
//!   deltas and up to two new small images appear; now and then six or more small deltas are
//!   compacted into one (their records concatenated) and removed.
//!
//! The layer file format and names are described in `sample/layer.rs`.

mod layer;
mod page;
mod rng;
mod timeline;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use layer::{KEY_LEN, LayerName, image_layer_pages};
pub use page::{PAGE_SIZE, PageContext, postgres_page, update_rows};
pub use rng::SampleRng;
pub use timeline::SampleTimeline;

use crate::format::metadata::{PageserverVersion, TimelineMetadata};
use crate::id::{Lsn, TenantId, TimelineId};
use timeline::Plan;

/// Smallest accepted `bytes_per_timeline`.
pub const MIN_BYTES_PER_TIMELINE: u64 = 256 << 10;
/// Largest accepted `bytes_per_timeline` (a sample, not a fleet).
pub const MAX_BYTES_PER_TIMELINE: u64 = 64 << 30;
/// Largest accepted number of timelines in all.
pub const MAX_TIMELINES: usize = 10_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleSpec {
    /// Everything is derived from it.
    pub seed: u64,
    /// Number of tenants.
    pub tenants: usize,
    /// Timelines per tenant; with two or more, timeline 1 is a branch of timeline 0.
    pub timelines_per_tenant: usize,
    /// Average size of one timeline's checkpoint-0 layers; each timeline gets 0.5x to 1.5x of it.
    pub bytes_per_timeline: u64,
}

impl SampleSpec {
    /// A few MiB in all: two tenants of two timelines (one a branch), 1.5 MiB each. For tests.
    pub fn small() -> SampleSpec {
        SampleSpec {
            seed: 0x5EED,
            tenants: 2,
            timelines_per_tenant: 2,
            bytes_per_timeline: 1536 << 10,
        }
    }

    /// About 80 MiB: three tenants of three timelines, 8 MiB each. For the demo.
    pub fn demo() -> SampleSpec {
        SampleSpec {
            seed: 0x5EED,
            tenants: 3,
            timelines_per_tenant: 3,
            bytes_per_timeline: 8 << 20,
        }
    }

    /// Rejects counts and sizes outside the supported ranges.
    fn validate(&self) -> io::Result<()> {
        let count = self.tenants.checked_mul(self.timelines_per_tenant);
        let sizes = MIN_BYTES_PER_TIMELINE..=MAX_BYTES_PER_TIMELINE;
        if !matches!(count, Some(1..=MAX_TIMELINES)) || !sizes.contains(&self.bytes_per_timeline) {
            let msg = format!(
                "sample spec {self:?}: need 1 to {MAX_TIMELINES} timelines in all and \
                 {MIN_BYTES_PER_TIMELINE} to {MAX_BYTES_PER_TIMELINE} bytes per timeline"
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        Ok(())
    }
}

/// The format of the `metadata` files a sample writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SampleMetadata {
    /// The pageserver's own 512-byte file ([`crate::format::metadata::encode_pageserver`]):
    /// format version 4 (pg_version 16) for the first timeline of each tenant and version 1 for
    /// the others (branches among them), so both layouts are exercised.
    #[default]
    Pageserver,
    /// layercas's own envelope, for stores that do not come from a pageserver.
    Layercas,
}

impl SampleMetadata {
    /// The pageserver version timeline `index` (within its tenant) is written in; `None` for
    /// layercas's format.
    fn version(self, index: usize) -> Option<PageserverVersion> {
        match (self, index) {
            (SampleMetadata::Layercas, _) => None,
            (SampleMetadata::Pageserver, 0) => Some(PageserverVersion::V4 { pg_version: 16 }),
            (SampleMetadata::Pageserver, _) => Some(PageserverVersion::V1),
        }
    }
}

/// What one checkpoint did to one timeline. Names are file names in the timeline directory;
/// the `metadata` file is rewritten at every checkpoint and is not listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointDelta {
    /// The tenant checkpointed.
    pub tenant: TenantId,
    /// The timeline checkpointed.
    pub timeline: TimelineId,
    /// The checkpoint's LSN (`metadata.disk_consistent_lsn`).
    pub lsn: Lsn,
    /// Layer files written, in write order.
    pub added: Vec<String>,
    /// Layer files deleted (superseded versions, compacted deltas).
    pub removed: Vec<String>,
    /// The new content of the `metadata` file (as [`crate::format::metadata::MetadataFormat`]
    /// parses it: `file` holds the bytes of a pageserver-format file).
    pub metadata: TimelineMetadata,
}

/// A sample workdir on disk and the state that drives its next checkpoint.
#[derive(Debug)]
pub struct SampleWorkdir {
    root: PathBuf,
    checkpoint: u32,
    /// Tenant by tenant, timelines in creation order.
    timelines: Vec<SampleTimeline>,
}

/// A timeline to create: the plan, and the index of its parent when it is a branch.
struct Planned {
    plan: Plan,
    parent: Option<usize>,
}

type Created = (SampleTimeline, CheckpointDelta);

impl SampleWorkdir {
    /// Writes checkpoint 0 of every timeline under `root` (which may exist but must not hold a
    /// non-empty `tenants` directory), `metadata` files in the pageserver's format. Returns the
    /// workdir and checkpoint 0's deltas, one per timeline with every layer in `added`.
    pub fn create(
        root: &Path,
        spec: &SampleSpec,
    ) -> io::Result<(SampleWorkdir, Vec<CheckpointDelta>)> {
        SampleWorkdir::create_with(root, spec, SampleMetadata::default())
    }

    /// [`SampleWorkdir::create`] with `metadata` files in the given format (the layer files are
    /// the same whatever it is).
    pub fn create_with(
        root: &Path,
        spec: &SampleSpec,
        metadata: SampleMetadata,
    ) -> io::Result<(SampleWorkdir, Vec<CheckpointDelta>)> {
        spec.validate()?;
        refuse_existing(&root.join("tenants"))?;
        let planned = plan_timelines(root, spec, metadata);
        let mut slots: Vec<Option<Created>> = planned.iter().map(|_| None).collect();
        let (branches, roots): (Vec<_>, Vec<_>) = planned
            .into_iter()
            .enumerate()
            .partition(|(_, p)| p.parent.is_some());
        let made: Vec<(usize, Created)> = roots
            .into_par_iter()
            .map(|(i, p)| Ok((i, SampleTimeline::create_root(p.plan)?)))
            .collect::<io::Result<_>>()?;
        fill(&mut slots, made);
        let made = create_branches(&slots, branches)?;
        fill(&mut slots, made);
        let (timelines, deltas) = slots.into_iter().flatten().unzip();
        let workdir = SampleWorkdir {
            root: root.to_path_buf(),
            checkpoint: 0,
            timelines,
        };
        Ok((workdir, deltas))
    }

    /// Advances every timeline by one checkpoint, in place; one delta per timeline, in the
    /// order of [`SampleWorkdir::timelines`].
    pub fn step(&mut self) -> io::Result<Vec<CheckpointDelta>> {
        let deltas = self.timelines.par_iter_mut().map(|t| t.step()).collect();
        self.checkpoint += 1;
        deltas
    }

    /// The timelines, tenant by tenant.
    pub fn timelines(&self) -> &[SampleTimeline] {
        &self.timelines
    }

    /// The directory holding `tenants/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The number of the last checkpoint written (0 after `create`).
    pub fn checkpoint(&self) -> u32 {
        self.checkpoint
    }
}

/// Ids, directories, seeds and budgets of every timeline, drawn from the spec's seed.
fn plan_timelines(root: &Path, spec: &SampleSpec, metadata: SampleMetadata) -> Vec<Planned> {
    let mut rng = SampleRng::new(spec.seed);
    let mut planned = Vec::with_capacity(spec.tenants * spec.timelines_per_tenant);
    for _ in 0..spec.tenants {
        let tenant = TenantId(random_id(&mut rng));
        let first = planned.len();
        for j in 0..spec.timelines_per_tenant {
            let timeline = TimelineId(random_id(&mut rng));
            let dir = root.join(format!("tenants/{tenant}/timelines/{timeline}"));
            let budget = (spec.bytes_per_timeline as f64 * (0.5 + rng.unit())) as u64;
            let plan = Plan {
                tenant,
                timeline,
                dir,
                seed: rng.next_u64(),
                budget: budget.max(MIN_BYTES_PER_TIMELINE),
                metadata_version: metadata.version(j),
            };
            let parent = (j == 1).then_some(first);
            planned.push(Planned { plan, parent });
        }
    }
    planned
}

/// Creates the branches, in parallel, from their parents in `slots`.
fn create_branches(
    slots: &[Option<Created>],
    branches: Vec<(usize, Planned)>,
) -> io::Result<Vec<(usize, Created)>> {
    branches
        .into_par_iter()
        .map(|(i, p)| {
            let parent = p.parent.and_then(|j| slots[j].as_ref());
            let parent = parent.ok_or_else(|| io::Error::other("sample branch without parent"))?;
            Ok((i, SampleTimeline::create_branch(p.plan, &parent.0)?))
        })
        .collect()
}

fn fill(slots: &mut [Option<Created>], made: Vec<(usize, Created)>) {
    for (i, created) in made {
        slots[i] = Some(created);
    }
}

fn random_id(rng: &mut SampleRng) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill(&mut id);
    id
}

/// Fails if `dir` exists and is not empty: a sample is never mixed into other files.
fn refuse_existing(dir: &Path) -> io::Result<()> {
    match fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not empty", dir.display()),
        )),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
