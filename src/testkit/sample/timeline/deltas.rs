//! The delta side of a sample timeline: small L0 deltas, the WAL-like chain, and the compaction
//! of L0 deltas into an L1.
//!
//! Owns nothing of its own: these are methods of [`SampleTimeline`] split out of `timeline.rs`
//! for size; they touch only the timeline's delta state (`l0`, `wal`) and its directory.

use std::fs;
use std::io;
use std::ops::Range;

use super::{
    COMPACT_AT, Changes, KEEP_VERSIONS, L0Delta, SMALL_FILE, SampleTimeline, WalChain, align8,
};
use crate::id::Lsn;
use crate::testkit::sample::layer::{self, LayerName, Relation};
use crate::testkit::sample::page::PAGE_SIZE;

impl SampleTimeline {
    /// Writes `n` small delta layers of distinct relations (not the WAL chain's) over `lsns`.
    pub(super) fn add_l0_deltas(
        &mut self,
        n: usize,
        lsns: Range<Lsn>,
        ch: &mut Changes,
    ) -> io::Result<()> {
        let rels: Vec<Relation> = (self.hot.iter().skip(1).map(|h| h.rel.clone()))
            .chain(self.cold.iter().cloned())
            .collect();
        for i in self.rng.distinct(rels.len(), n) {
            let range = if self.checkpoint == 0 {
                self.sub_range(&lsns)
            } else {
                lsns.clone()
            };
            self.add_l0_delta(&rels[i], range, ch)?;
        }
        Ok(())
    }

    /// A random range strictly inside `lsns`, for the deltas that led up to checkpoint 0.
    pub(super) fn sub_range(&mut self, lsns: &Range<Lsn>) -> Range<Lsn> {
        let span = lsns.end.0 - lsns.start.0;
        let start = align8(lsns.start.0 + 8 + self.rng.below(span / 2));
        let end = align8(start + 8 + self.rng.below(span / 4));
        Lsn(start)..Lsn(end)
    }

    /// One small delta layer of `rel` over `lsns`.
    pub(super) fn add_l0_delta(
        &mut self,
        rel: &Relation,
        lsns: Range<Lsn>,
        ch: &mut Changes,
    ) -> io::Result<()> {
        let size = self.rng.log_uniform(SMALL_FILE.start, SMALL_FILE.end) as usize;
        let mut bytes = layer::delta_summary(self.owner(), &rel.keys(), lsns.start);
        let records = size.saturating_sub(PAGE_SIZE).max(256);
        let xid = self.next_xid;
        layer::append_records(&mut self.rng, &mut bytes, rel, lsns.clone(), (records, xid));
        let keys = rel.keys();
        let name = LayerName::Delta {
            keys: keys.clone(),
            lsns: lsns.clone(),
        };
        self.write_layer(name.to_string(), &bytes, ch)?;
        let (name, checkpoint) = (name.to_string(), self.checkpoint);
        self.l0.push(L0Delta {
            name,
            keys,
            lsns,
            checkpoint,
        });
        Ok(())
    }

    /// Appends records over `lsns` to the WAL chain and writes it as a new version; drops old
    /// versions; restarts the chain once it is an eighth of the budget.
    pub(super) fn grow_wal(&mut self, lsns: Range<Lsn>, ch: &mut Changes) -> io::Result<()> {
        self.append_wal(lsns.clone());
        let name = LayerName::Delta {
            keys: self.wal.rel.keys(),
            lsns: self.wal.lsn_start..lsns.end,
        };
        let bytes = std::mem::take(&mut self.wal.bytes);
        self.write_layer(name.to_string(), &bytes, ch)?;
        self.wal.bytes = bytes;
        self.wal.versions.push_back(name.to_string());
        let drop = self.wal.versions.len().saturating_sub(KEEP_VERSIONS);
        let dropped: Vec<String> = self.wal.versions.drain(..drop).collect();
        for old in &dropped {
            self.remove_layer(old, ch)?;
        }
        if self.wal.bytes.len() as u64 > self.budget / 8 {
            let fresh = WalChain::new(self.wal.rel.clone(), lsns.end);
            let finished = std::mem::replace(&mut self.wal, fresh);
            for old in finished.versions.iter().rev().skip(1) {
                self.remove_layer(old, ch)?;
            }
        }
        Ok(())
    }

    /// Appends records over `lsns` to the chain's bytes, after a summary if it has none yet.
    pub(super) fn append_wal(&mut self, lsns: Range<Lsn>) {
        if self.wal.bytes.is_empty() {
            let (keys, start) = (self.wal.rel.keys(), self.wal.lsn_start);
            self.wal.bytes = layer::delta_summary(self.owner(), &keys, start);
        }
        let grow = self.rng.range(self.budget / 128..self.budget / 32) as usize;
        let (rel, xid) = (&self.wal.rel, self.next_xid);
        let out = &mut self.wal.bytes;
        layer::append_records(&mut self.rng, out, rel, lsns, (grow, xid));
    }

    /// Merges the L0 deltas of earlier checkpoints into one L1 delta once there are enough.
    pub(super) fn compact(&mut self, ch: &mut Changes) -> io::Result<()> {
        let current = self.checkpoint;
        let (old, young): (Vec<L0Delta>, Vec<L0Delta>) =
            self.l0.drain(..).partition(|d| d.checkpoint < current);
        self.l0 = young;
        if old.len() < COMPACT_AT {
            self.l0.extend(old);
            return Ok(());
        }
        let keys = old.iter().map(|d| d.keys.start).min().unwrap_or_default()
            ..old.iter().map(|d| d.keys.end).max().unwrap_or_default();
        let lsns = old.iter().map(|d| d.lsns.start).min().unwrap_or(Lsn(0))
            ..old.iter().map(|d| d.lsns.end).max().unwrap_or(Lsn(0));
        let mut bytes = layer::delta_summary(self.owner(), &keys, lsns.start);
        for d in &old {
            let file = fs::read(self.dir.join(&d.name))?;
            bytes.extend_from_slice(layer::delta_records(&file).unwrap_or_default());
        }
        self.write_layer(LayerName::Delta { keys, lsns }.to_string(), &bytes, ch)?;
        old.iter().try_for_each(|d| self.remove_layer(&d.name, ch))
    }
}
