//! Deltas a store could hold: each new chunk compressed with whole stored chunks of the previous
//! version of its file as a raw-content dictionary (its *bases*, named by chunk id), so that a
//! reader needs those chunks first. Unlike `delta` in the parent (a byte range of the previous
//! version, which no store can name), this is what a format with base references would store.
//!
//! Two ways to bound what a reader must fetch: `Chain` lets a base itself be a delta (a chunk
//! may need a chain of earlier chunks), `Depth1` replaces a base that is a delta by that delta's
//! own bases, so every base is stored whole (one extra fetch at most, versions drift from their
//! base over checkpoints). A chunk with a base is always stored as a delta (raw if that is not
//! smaller); 32 bytes per base id are counted, as an index entry would carry them.

use std::collections::HashMap;
use std::time::Instant;

use layercas::id::ChunkId;
use zstd::zstd_safe::CParameter;

use crate::Outcome;

/// How bases are chosen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A base may itself be a delta.
    Chain,
    /// Every base is stored whole.
    Depth1,
}

/// Stored bytes and CPU time with at most `max_bases` bases per chunk, bounded by `bound`.
/// `covers[i]` lists the previous version's chunks overlapping new chunk `i`, in file order.
pub fn stored_delta(
    new: &[Vec<u8>],
    ids: &[ChunkId],
    covers: &[Vec<ChunkId>],
    max_bases: usize,
    bound: Bound,
    level: i32,
) -> Outcome {
    let raw_of: HashMap<ChunkId, usize> = ids.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let raw = |c: &ChunkId| raw_of.get(c).map(|&i| new[i].as_slice());
    let mut bases_of: HashMap<ChunkId, Vec<ChunkId>> = HashMap::new();
    let mut depth: HashMap<ChunkId, usize> = HashMap::new();
    let mut plain = zstd::bulk::Compressor::new(level).unwrap();
    let mut with = zstd::zstd_safe::CCtx::create();
    with.set_parameter(CParameter::CompressionLevel(level))
        .unwrap();
    let t = Instant::now();
    let mut frames = Vec::with_capacity(new.len());
    let mut stored = 0u64;
    for (i, chunk) in new.iter().enumerate() {
        let bases = choose(&covers[i], &bases_of, max_bases, bound, |c| {
            raw(c).is_some()
        });
        if bases.is_empty() {
            let own = plain.compress(chunk).unwrap();
            stored += own.len().min(chunk.len()) as u64;
            frames.push(Some(own).filter(|o| o.len() < chunk.len()));
            continue;
        }
        // The bases as a prefix (raw content, used for this frame only). A writer with a base
        // compresses only this way, storing the chunk raw if that is not smaller.
        let dict = bases
            .iter()
            .map(|b| raw(b).unwrap())
            .collect::<Vec<_>>()
            .concat();
        let mut d = Vec::with_capacity(zstd::zstd_safe::compress_bound(chunk.len()));
        with.ref_prefix(outlives(&dict)).unwrap();
        with.compress2(&mut d, chunk).unwrap();
        stored += (d.len().min(chunk.len()) + 32 * bases.len()) as u64;
        let deepest = bases.iter().map(|b| depth.get(b).copied().unwrap_or(0));
        depth.insert(ids[i], 1 + deepest.max().unwrap_or(0));
        bases_of.insert(ids[i], bases);
        frames.push(Some(d).filter(|d| d.len() < chunk.len()));
    }
    let compress_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut dc = zstd::zstd_safe::DCtx::create();
    for ((frame, chunk), id) in frames.iter().zip(new).zip(ids) {
        let Some(frame) = frame else { continue };
        let dict: Vec<u8> = bases_of
            .get(id)
            .map(|bs| {
                bs.iter()
                    .map(|b| raw(b).unwrap())
                    .collect::<Vec<_>>()
                    .concat()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(chunk.len());
        dc.ref_prefix(outlives(&dict)).unwrap();
        dc.decompress(&mut out, frame).unwrap();
        assert!(out == *chunk);
    }
    let deltas = bases_of.len();
    let deepest = depth.values().max().copied().unwrap_or(0);
    let mean = depth.values().sum::<usize>() as f64 / deltas.max(1) as f64;
    let how = match bound {
        Bound::Chain => "chained",
        Bound::Depth1 => "depth 1",
    };
    Outcome {
        name: format!("{max_bases} stored base(s), {how}, level {level}"),
        stored,
        compress_s,
        decompress_s: t.elapsed().as_secs_f64(),
        extra: format!(
            "{deltas} of {} chunks as deltas, depth mean {mean:.1} max {deepest}",
            new.len()
        ),
    }
}

/// `bytes` as if they lived as long as the zstd context. Sound here: zstd forgets a prefix at
/// the end of the one frame it was referenced for, and each frame ends before `bytes` drops.
fn outlives(bytes: &[u8]) -> &'static [u8] {
    // SAFETY: see above; the context never reads the prefix after the frame it was set for.
    unsafe { std::mem::transmute::<&[u8], &'static [u8]>(bytes) }
}

/// The bases of a chunk overlapping `covers`: up to `max` of them, each replaced by its own
/// bases under [`Bound::Depth1`], keeping only chunks whose bytes are known.
fn choose(
    covers: &[ChunkId],
    bases_of: &HashMap<ChunkId, Vec<ChunkId>>,
    max: usize,
    bound: Bound,
    known: impl Fn(&ChunkId) -> bool,
) -> Vec<ChunkId> {
    let mut out = Vec::new();
    for c in covers {
        let whole = match (bound, bases_of.get(c)) {
            (Bound::Depth1, Some(bs)) => bs.clone(),
            _ => vec![*c],
        };
        for b in whole {
            if out.len() < max && known(&b) && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// Each new chunk compressed with its reference (the bytes around it in the previous version of
/// its file) as a raw-content dictionary where it has one, else on its own: what a store that
/// stores chunks as deltas against the checkpoint before would hold (a restore would then need
/// the reference's chunks too: chains that gc would have to bound).
pub fn range_delta(chunks: &[Vec<u8>], refs: &[Option<Vec<u8>>], level: i32) -> Outcome {
    let t = Instant::now();
    let (mut plain, mut with) = (
        zstd::bulk::Compressor::new(level).unwrap(),
        zstd::bulk::Compressor::new(level).unwrap(),
    );
    let out: Vec<Vec<u8>> = chunks
        .iter()
        .zip(refs)
        .map(|(ch, r)| match r {
            Some(r) => {
                with.set_dictionary(level, r).unwrap();
                with.compress(ch).unwrap()
            }
            None => plain.compress(ch).unwrap(),
        })
        .collect();
    let compress_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (mut plain, mut with) = (
        zstd::bulk::Decompressor::new().unwrap(),
        zstd::bulk::Decompressor::new().unwrap(),
    );
    for ((z, ch), r) in out.iter().zip(chunks).zip(refs) {
        let back = match r {
            Some(r) => {
                with.set_dictionary(r).unwrap();
                with.decompress(z, ch.len()).unwrap()
            }
            None => plain.decompress(z, ch.len()).unwrap(),
        };
        assert!(back == *ch);
    }
    let with_ref = refs.iter().filter(|r| r.is_some()).count();
    Outcome {
        name: format!("delta vs previous, level {level}"),
        stored: out
            .iter()
            .zip(chunks)
            .map(|(z, c)| z.len().min(c.len()) as u64)
            .sum(),
        compress_s,
        decompress_s: t.elapsed().as_secs_f64(),
        extra: format!(
            "{with_ref} of {} chunks had a previous version",
            chunks.len()
        ),
    }
}
