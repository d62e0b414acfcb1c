//! One sample timeline: its directory, its layer files, and how they change from checkpoint to
//! checkpoint.
//!
//! Owns the files under one `tenants/<tenant>/timelines/<timeline>/` directory and nothing else;
//! reads its ancestor's layers only while it is created as a branch. Draws everything from its
//! own generator, so timelines can be written in parallel and in any order.
//!
//! Per timeline: a few *hot* image layers (most of the bytes) that get a new version at every
//! checkpoint with 2% of their pages updated, the two newest versions kept; *cold* small image
//! layers that never change; small L0 delta layers, merged into one L1 delta once six or more
//! older ones pile up; and a WAL-like delta chain that every checkpoint rewrites with records
//! appended, the two newest versions kept, restarted when it reaches an eighth of the budget.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::CheckpointDelta;
use super::layer::{self, LayerName, Owner, Relation};
use super::page::PAGE_SIZE;
use super::rng::SampleRng;
use crate::format::metadata::{
    METADATA_FILE_NAME, PageserverVersion, TimelineMetadata, encode_pageserver,
};
use crate::id::{Lsn, TenantId, TimelineId};

mod deltas;

/// Where every timeline's WAL starts (Neon's usual initdb LSN, 0/149F0D8).
const INITDB_LSN: Lsn = Lsn(0x0149_F0D8);
/// Share of the byte budget each hot image layer gets at checkpoint 0.
const HOT_SHARES: [f64; 3] = [0.45, 0.2, 0.08];
/// Share of a hot image's pages a checkpoint updates.
const UPDATE_SHARE: f64 = 0.02;
/// Share of the ancestor's pages a branch has changed by its first checkpoint.
const BRANCH_SHARE: f64 = 0.03;
/// Versions of a hot image or of the WAL chain kept on disk.
const KEEP_VERSIONS: usize = 2;
/// Older L0 deltas that trigger a compaction into one L1.
const COMPACT_AT: usize = 6;
/// Size range of small layer files, as in Neon (8 KiB to 200 KiB, log-uniform).
const SMALL_FILE: Range<u64> = 8 << 10..200 << 10;
/// Page count range of cold image layers.
const COLD_PAGES: Range<u64> = 1..16;
/// Postgres microseconds of 2024-01-01.
const EPOCH_US: i64 = 757_382_400_000_000;

/// What a new timeline is: its ids, where it lives, its seed and its byte budget.
pub(crate) struct Plan {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    pub dir: PathBuf,
    pub seed: u64,
    pub budget: u64,
    /// The pageserver format version of the `metadata` file; `None` for layercas's format.
    pub metadata_version: Option<PageserverVersion>,
}

/// A timeline of the sample workdir and the state that drives its next checkpoint.
#[derive(Debug)]
pub struct SampleTimeline {
    tenant: TenantId,
    timeline: TimelineId,
    dir: PathBuf,
    metadata: TimelineMetadata,
    metadata_version: Option<PageserverVersion>,
    layers: BTreeSet<String>,
    rng: SampleRng,
    /// Approximate bytes of the checkpoint-0 layers; scales layer sizes and LSN steps.
    budget: u64,
    checkpoint: u32,
    db: u32,
    next_rel: u32,
    next_xid: u32,
    clock_us: i64,
    hot: Vec<HotImage>,
    cold: Vec<Relation>,
    l0: Vec<L0Delta>,
    wal: WalChain,
    /// Consistent LSNs of the last checkpoints, oldest first: the GC cutoff lags behind them.
    past_lsns: VecDeque<Lsn>,
}

/// An image layer re-imaged at every checkpoint.
#[derive(Debug)]
struct HotImage {
    rel: Relation,
    current: String,
    older: VecDeque<String>,
}

/// A small delta not yet compacted, and the checkpoint that wrote it.
#[derive(Clone, Debug)]
struct L0Delta {
    name: String,
    keys: Range<[u8; layer::KEY_LEN]>,
    lsns: Range<Lsn>,
    checkpoint: u32,
}

/// The growing WAL-like delta: its bytes so far and the names of its versions on disk.
#[derive(Debug)]
struct WalChain {
    rel: Relation,
    lsn_start: Lsn,
    bytes: Vec<u8>,
    versions: VecDeque<String>,
}

/// Layer names written and removed during one checkpoint.
#[derive(Default)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
}

impl SampleTimeline {
    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The timeline.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The timeline directory, holding `metadata` and the layer files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata as of the last checkpoint, as the `metadata` file parses (`file` holds the
    /// file's bytes when it is in the pageserver's format).
    pub fn metadata(&self) -> &TimelineMetadata {
        &self.metadata
    }

    /// Names of the layer files now in [`SampleTimeline::dir`] (`metadata` not included).
    pub fn layers(&self) -> &BTreeSet<String> {
        &self.layers
    }

    /// A timeline with no files yet, its directory created.
    fn empty(plan: Plan) -> io::Result<SampleTimeline> {
        fs::create_dir_all(&plan.dir)?;
        let mut rng = SampleRng::new(plan.seed);
        let wal_rel = Relation {
            db: 0,
            rel: 0,
            blocks: 0,
            first_row_id: 0,
            xmin: 0,
            timestamp_us: 0,
        };
        let mut metadata = TimelineMetadata::at(INITDB_LSN);
        (metadata.initdb_lsn, metadata.latest_gc_cutoff_lsn) = (INITDB_LSN, INITDB_LSN);
        Ok(SampleTimeline {
            tenant: plan.tenant,
            timeline: plan.timeline,
            dir: plan.dir,
            metadata,
            metadata_version: plan.metadata_version,
            layers: BTreeSet::new(),
            budget: plan.budget,
            checkpoint: 0,
            db: 16384 + rng.below(64) as u32,
            next_rel: 16385 + rng.below(4096) as u32,
            next_xid: 700 + rng.below(100_000) as u32,
            clock_us: EPOCH_US + rng.below(300 * 86_400_000_000) as i64,
            hot: Vec::new(),
            cold: Vec::new(),
            l0: Vec::new(),
            wal: WalChain::new(wal_rel, INITDB_LSN),
            past_lsns: VecDeque::new(),
            rng,
        })
    }

    /// Writes checkpoint 0 of a timeline without ancestor.
    pub(crate) fn create_root(plan: Plan) -> io::Result<(SampleTimeline, CheckpointDelta)> {
        let mut t = SampleTimeline::empty(plan)?;
        let lsn = Lsn(align8(INITDB_LSN.0 + t.budget + t.rng.below(t.budget)));
        let mut ch = Changes::default();
        for share in HOT_SHARES {
            t.add_hot_image(share, INITDB_LSN..lsn, &mut ch)?;
        }
        t.first_checkpoint(INITDB_LSN..lsn, (10..15, 3..6), ch)
    }

    /// Writes checkpoint 0 of a branch of `parent` at the parent's last consistent LSN: its hot
    /// images are the parent's with a few pages changed, at the same offsets.
    pub(crate) fn create_branch(
        plan: Plan,
        parent: &SampleTimeline,
    ) -> io::Result<(SampleTimeline, CheckpointDelta)> {
        let mut t = SampleTimeline::empty(plan)?;
        let ancestor_lsn = parent.metadata.disk_consistent_lsn;
        (t.db, t.next_rel, t.cold) = (parent.db, parent.next_rel, parent.cold.clone());
        (t.next_xid, t.clock_us) = (parent.next_xid + 50, parent.clock_us + 60_000_000);
        t.metadata.ancestor_timeline = Some(parent.timeline);
        t.metadata.ancestor_lsn = ancestor_lsn;
        t.metadata.latest_gc_cutoff_lsn = ancestor_lsn;
        let lsn = Lsn(align8(
            ancestor_lsn.0 + t.rng.range(t.budget / 16..t.budget / 4),
        ));
        let mut ch = Changes::default();
        for hot in &parent.hot {
            let bytes = fs::read(parent.dir.join(&hot.current))?;
            t.add_image_version(hot.rel.clone(), bytes, (lsn, BRANCH_SHARE), &mut ch)?;
        }
        t.first_checkpoint(ancestor_lsn..lsn, (5..9, 2..4), ch)
    }

    /// The rest of checkpoint 0 over `lsns`, after the hot images: a number of cold images and
    /// of L0 deltas drawn from `counts`, the WAL chain started on the first hot image's relation.
    fn first_checkpoint(
        mut self,
        lsns: Range<Lsn>,
        counts: (Range<u64>, Range<u64>),
        mut ch: Changes,
    ) -> io::Result<(SampleTimeline, CheckpointDelta)> {
        let (start, lsn) = (lsns.start, lsns.end);
        for _ in 0..self.rng.range(counts.0) {
            let at = Lsn(align8(self.rng.range(start.0 + 8..lsn.0)));
            self.add_cold_image(start..at, &mut ch)?;
        }
        self.wal = WalChain::new(self.hot[0].rel.clone(), start);
        let n = self.rng.range(counts.1) as usize;
        self.add_l0_deltas(n, start..lsn, &mut ch)?;
        self.grow_wal(start..lsn, &mut ch)?;
        let delta = self.finish_checkpoint(lsn, ch)?;
        Ok((self, delta))
    }

    /// Advances the timeline by one checkpoint: new hot image versions, a longer WAL chain, new
    /// small layers, maybe a compaction, new metadata.
    pub(crate) fn step(&mut self) -> io::Result<CheckpointDelta> {
        self.checkpoint += 1;
        self.next_xid += self.rng.range(500..5000) as u32;
        self.clock_us += self.rng.range(600_000_000..21_600_000_000) as i64;
        let prev = self.metadata.disk_consistent_lsn;
        let lsn = Lsn(align8(
            prev.0 + self.rng.range(self.budget / 8..self.budget / 2),
        ));
        let mut ch = Changes::default();
        for i in 0..self.hot.len() {
            self.reimage(i, lsn, &mut ch)?;
        }
        self.grow_wal(prev..lsn, &mut ch)?;
        for _ in 0..self.rng.range(0..3) {
            self.add_cold_image(prev..lsn, &mut ch)?;
        }
        let n = self.rng.range(1..5) as usize;
        self.add_l0_deltas(n, prev..lsn, &mut ch)?;
        self.compact(&mut ch)?;
        self.finish_checkpoint(lsn, ch)
    }

    /// A new relation of `blocks` pages, its rows starting now.
    fn new_relation(&mut self, blocks: u32) -> Relation {
        self.next_rel += 1 + self.rng.below(3) as u32;
        Relation {
            db: self.db,
            rel: self.next_rel,
            blocks,
            first_row_id: 1 + self.rng.below(1 << 24),
            xmin: self.next_xid,
            timestamp_us: self.clock_us,
        }
    }

    /// A hot image layer of about `share` of the budget, pages written over `lsns`.
    fn add_hot_image(&mut self, share: f64, lsns: Range<Lsn>, ch: &mut Changes) -> io::Result<()> {
        let jitter = 0.8 + 0.4 * self.rng.unit();
        let pages = (self.budget as f64 * share * jitter / PAGE_SIZE as f64) as u32;
        let (rel, name) = self.add_image_of_new_relation(pages.max(4), lsns, ch)?;
        self.hot.push(HotImage::new(rel, name));
        Ok(())
    }

    /// A small image layer of a new relation at `lsns.end`, pages written over `lsns`.
    fn add_cold_image(&mut self, lsns: Range<Lsn>, ch: &mut Changes) -> io::Result<()> {
        let pages = self.rng.log_uniform(COLD_PAGES.start, COLD_PAGES.end) as u32;
        let (rel, _) = self.add_image_of_new_relation(pages, lsns, ch)?;
        self.cold.push(rel);
        Ok(())
    }

    /// An image layer of a new relation of `pages` pages at `lsns.end`, pages written over
    /// `lsns`; returns the relation and the layer's name.
    fn add_image_of_new_relation(
        &mut self,
        pages: u32,
        lsns: Range<Lsn>,
        ch: &mut Changes,
    ) -> io::Result<(Relation, String)> {
        let rel = self.new_relation(pages);
        let owner = self.owner();
        let bytes = layer::image_layer(&mut self.rng, owner, &rel, lsns.clone());
        let name = LayerName::Image {
            keys: rel.keys(),
            lsn: lsns.end,
        }
        .to_string();
        self.write_layer(name.clone(), &bytes, ch)?;
        Ok((rel, name))
    }

    /// Writes the next version of hot image `i` at `lsn` and drops versions beyond the kept ones.
    fn reimage(&mut self, i: usize, lsn: Lsn, ch: &mut Changes) -> io::Result<()> {
        let bytes = fs::read(self.dir.join(&self.hot[i].current))?;
        let name = self.image_version_name(&self.hot[i].rel, lsn);
        self.write_image_version(bytes, &name, (lsn, UPDATE_SHARE), ch)?;
        let hot = &mut self.hot[i];
        hot.older
            .push_back(std::mem::replace(&mut hot.current, name));
        let drop = hot.older.len().saturating_sub(KEEP_VERSIONS - 1);
        let dropped: Vec<String> = hot.older.drain(..drop).collect();
        dropped
            .iter()
            .try_for_each(|old| self.remove_layer(old, ch))
    }

    /// Adds `bytes` (another timeline's image of `rel`) as a hot image of this one at `lsn`,
    /// with `share` of its pages updated.
    fn add_image_version(
        &mut self,
        rel: Relation,
        bytes: Vec<u8>,
        (lsn, share): (Lsn, f64),
        ch: &mut Changes,
    ) -> io::Result<()> {
        let name = self.image_version_name(&rel, lsn);
        self.write_image_version(bytes, &name, (lsn, share), ch)?;
        self.hot.push(HotImage::new(rel, name));
        Ok(())
    }

    fn image_version_name(&self, rel: &Relation, lsn: Lsn) -> String {
        let keys = rel.keys();
        LayerName::Image { keys, lsn }.to_string()
    }

    /// Restamps `bytes` for this timeline at `lsn`, updates `share` of its pages, writes it.
    fn write_image_version(
        &mut self,
        mut bytes: Vec<u8>,
        name: &str,
        (lsn, share): (Lsn, f64),
        ch: &mut Changes,
    ) -> io::Result<()> {
        let xid = self.next_xid;
        layer::next_image_version(&mut self.rng, &mut bytes, self.timeline, lsn, (share, xid));
        self.write_layer(name.to_string(), &bytes, ch)
    }

    /// Rewrites the metadata for a checkpoint at `lsn` and reports the checkpoint.
    fn finish_checkpoint(&mut self, lsn: Lsn, ch: Changes) -> io::Result<CheckpointDelta> {
        if self.checkpoint > 0 {
            self.past_lsns.push_back(self.metadata.disk_consistent_lsn);
        }
        if self.past_lsns.len() > KEEP_VERSIONS {
            let cutoff = self.past_lsns.pop_front().unwrap_or(Lsn(0));
            let md = &mut self.metadata;
            md.latest_gc_cutoff_lsn = md.latest_gc_cutoff_lsn.max(cutoff);
        }
        self.metadata.disk_consistent_lsn = lsn;
        let last_record = align8(self.rng.range(24..200));
        self.metadata.prev_record_lsn = Some(Lsn(lsn.0 - last_record));
        let bytes = match self.metadata_version {
            Some(version) => encode_pageserver(&self.metadata, version),
            None => self.metadata.layercas_file_bytes(),
        };
        write_atomic(&self.dir, METADATA_FILE_NAME, &bytes)?;
        self.metadata.file = self.metadata_version.map(|_| bytes);
        Ok(CheckpointDelta {
            tenant: self.tenant,
            timeline: self.timeline,
            lsn,
            added: ch.added,
            removed: ch.removed,
            metadata: self.metadata.clone(),
        })
    }

    fn owner(&self) -> Owner {
        Owner {
            tenant: self.tenant,
            timeline: self.timeline,
        }
    }

    /// Writes a new layer file; refuses a name that exists (layers are immutable).
    fn write_layer(&mut self, name: String, bytes: &[u8], ch: &mut Changes) -> io::Result<()> {
        if self.layers.contains(&name) {
            let msg = format!(
                "sample layer {name} in {} written twice",
                self.dir.display()
            );
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, msg));
        }
        write_atomic(&self.dir, &name, bytes)?;
        self.layers.insert(name.clone());
        ch.added.push(name);
        Ok(())
    }

    fn remove_layer(&mut self, name: &str, ch: &mut Changes) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))?;
        self.layers.remove(name);
        ch.removed.push(name.to_string());
        Ok(())
    }
}

impl HotImage {
    fn new(rel: Relation, current: String) -> HotImage {
        HotImage {
            rel,
            current,
            older: VecDeque::new(),
        }
    }
}

impl WalChain {
    /// An empty chain of `rel` starting at `lsn_start`; its summary is written on first growth.
    fn new(rel: Relation, lsn_start: Lsn) -> WalChain {
        WalChain {
            rel,
            lsn_start,
            bytes: Vec::new(),
            versions: VecDeque::new(),
        }
    }
}

/// Writes `dir/name` whole: to `name.___temp` (the suffix the pageserver uses), then renamed.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!("{name}.___temp"));
    fs::write(&temp, bytes)?;
    fs::rename(&temp, dir.join(name))
}

fn align8(v: u64) -> u64 {
    v & !7
}
