//! Layer files of the sample workdir: Neon-style keys and file names, and the bytes of image and
//! delta layers.
//!
//! Owns layer naming and the sample layer format below. Does no I/O and keeps no state; what a
//! timeline holds is the business of `timeline`.
//!
//! # Format
//! Integers big-endian (as in Neon's on-disk B-tree); a key is 18 bytes
//! `0x00 || spcnode u32 = 1663 || dbnode u32 || relnode u32 || forknum u8 = 0 || blkno u32`.
//! - Image layer: block 0 is the summary `0x5A60 u16 || version u16 = 1 || tenant 16 ||
//!   timeline 16 || key_start 18 || key_end 18 || lsn u64 || pages u32`, zero-padded to 8 KiB;
//!   blocks `1..=pages` are the relation's pages in key order; then the index, `key 18 ||
//!   offset u64` per page, zero-padded to whole 8 KiB blocks. A new version of the same key range
//!   changes block 0 and the rewritten pages, nothing else.
//! - Delta layer: block 0 is the summary `0x5A61 u16 || version u16 = 1 || tenant 16 ||
//!   timeline 16 || key_start 18 || key_end 18 || lsn_start u64`, zero-padded to 8 KiB; then
//!   records `lsn u64 || key 18 || will_init u8 || kind u8 || len u32 || payload`, kind 1 a heap
//!   tuple, kind 2 a full-page image. The end LSN is only in the file name, so a delta that grows
//!   keeps its earlier bytes as a prefix.

use std::fmt;
use std::ops::Range;

use super::page::{self, MAX_TUPLE, PAGE_SIZE, PageContext};
use super::rng::SampleRng;
use crate::id::{Lsn, TenantId, TimelineId};

// `duplicates` pairs these constants with page.rs's by shape alone: different fixed numbers.
/// Length of a Neon key in bytes.
pub const KEY_LEN: usize = 18;
/// Magic numbers of the two summaries.
const IMAGE_MAGIC: u16 = 0x5A60;
const DELTA_MAGIC: u16 = 0x5A61;
const FORMAT_VERSION: u16 = 1;
/// Summary field offsets.
const SUM_TIMELINE: usize = 20;
const SUM_LSN: usize = 72;
const SUM_PAGES: usize = 80;
/// Size of a delta record's header.
const RECORD_HEADER: usize = 32;
/// Row ids reserved per block, so pages of a relation never share ids.
const ROWS_PER_BLOCK: u64 = 128;

/// A layer file name as Neon writes it: key range, then one LSN (image) or an LSN range (delta),
/// all upper-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerName {
    /// `<key_start>-<key_end>__<lsn>`.
    Image {
        /// The key range the image covers.
        keys: Range<[u8; KEY_LEN]>,
        /// The LSN the image was taken at.
        lsn: Lsn,
    },
    /// `<key_start>-<key_end>__<lsn_start>-<lsn_end>`.
    Delta {
        /// The key range the deltas cover.
        keys: Range<[u8; KEY_LEN]>,
        /// The LSN range of the deltas.
        lsns: Range<Lsn>,
    },
}

impl LayerName {
    /// Parses a layer file name; `None` for anything else (such as `metadata` or a temp file).
    pub fn parse(name: &str) -> Option<LayerName> {
        let (keys, lsns) = name.split_once("__")?;
        let (start, end) = keys.split_once('-')?;
        let keys = parse_key(start)?..parse_key(end)?;
        match lsns.split_once('-') {
            None => Some(LayerName::Image {
                keys,
                lsn: Lsn::from_key_component(lsns)?,
            }),
            Some((a, b)) => Some(LayerName::Delta {
                keys,
                lsns: Lsn::from_key_component(a)?..Lsn::from_key_component(b)?,
            }),
        }
    }
}

fn parse_key(s: &str) -> Option<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(s, &mut key).ok()?;
    Some(key)
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |k: &Range<[u8; KEY_LEN]>| {
            format!(
                "{}-{}",
                hex::encode_upper(k.start),
                hex::encode_upper(k.end)
            )
        };
        match self {
            LayerName::Image { keys: k, lsn } => write!(f, "{}__{:016X}", keys(k), lsn.0),
            LayerName::Delta { keys: k, lsns } => {
                write!(f, "{}__{:016X}-{:016X}", keys(k), lsns.start.0, lsns.end.0)
            }
        }
    }
}

/// The timeline a layer belongs to, recorded in its summary.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pub tenant: TenantId,
    pub timeline: TimelineId,
}

/// A table's main fork: its key range and what its rows start from.
#[derive(Clone, Debug)]
pub(crate) struct Relation {
    pub db: u32,
    pub rel: u32,
    pub blocks: u32,
    pub first_row_id: u64,
    pub xmin: u32,
    pub timestamp_us: i64,
}

impl Relation {
    /// The key of `block`.
    pub fn key(&self, block: u32) -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        key[1..5].copy_from_slice(&1663u32.to_be_bytes());
        key[5..9].copy_from_slice(&self.db.to_be_bytes());
        key[9..13].copy_from_slice(&self.rel.to_be_bytes());
        key[14..18].copy_from_slice(&block.to_be_bytes());
        key
    }

    /// Keys of all blocks, end exclusive.
    pub fn keys(&self) -> Range<[u8; KEY_LEN]> {
        self.key(0)..self.key(self.blocks)
    }

    /// What page `block` holds when last written at `lsn`.
    fn page_context(&self, block: u32, lsn: Lsn) -> PageContext {
        PageContext {
            lsn,
            block,
            first_row_id: self.first_row_id + u64::from(block) * ROWS_PER_BLOCK,
            xmin: self.xmin.wrapping_add(block * 20),
            timestamp_us: self.timestamp_us + i64::from(block) * 200_000_000,
        }
    }
}

/// An image layer of `rel` at `lsns.end` whose pages were last written at LSNs spread over
/// `lsns` in block order.
pub(crate) fn image_layer(
    rng: &mut SampleRng,
    owner: Owner,
    rel: &Relation,
    lsns: Range<Lsn>,
) -> Vec<u8> {
    let pages = rel.blocks as usize;
    let mut out = Vec::with_capacity((pages + 2) * PAGE_SIZE + pages * (KEY_LEN + 8));
    out.extend_from_slice(&summary(IMAGE_MAGIC, owner, &rel.keys(), lsns.end));
    out[SUM_PAGES..SUM_PAGES + 4].copy_from_slice(&rel.blocks.to_be_bytes());
    let span = lsns.end.0 - lsns.start.0;
    for block in 0..rel.blocks {
        let lsn = lsns.start.0 + span * u64::from(block) / u64::from(rel.blocks.max(1));
        let ctx = rel.page_context(block, Lsn(lsn & !7));
        out.extend_from_slice(&page::postgres_page(rng, &ctx));
    }
    for block in 0..rel.blocks {
        out.extend_from_slice(&rel.key(block));
        out.extend_from_slice(&((u64::from(block) + 1) * PAGE_SIZE as u64).to_be_bytes());
    }
    out.resize(out.len().next_multiple_of(PAGE_SIZE), 0);
    out
}

/// The pages of an image layer's bytes, `None` if they are not a (whole) sample image layer.
pub fn image_layer_pages(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < PAGE_SIZE || bytes[..2] != IMAGE_MAGIC.to_be_bytes() {
        return None;
    }
    let pages = u32::from_be_bytes(bytes[SUM_PAGES..SUM_PAGES + 4].try_into().unwrap());
    bytes.get(PAGE_SIZE..(pages as usize + 1) * PAGE_SIZE)
}

/// Makes `bytes` (an image layer) the next version: owned by `timeline`, at `lsn`, with about
/// `fraction` of its pages (at least one) updated by transaction `xid`. Returns the number of
/// pages updated, 0 if `bytes` is not an image layer.
pub(crate) fn next_image_version(
    rng: &mut SampleRng,
    bytes: &mut [u8],
    timeline: TimelineId,
    lsn: Lsn,
    (fraction, xid): (f64, u32),
) -> usize {
    let Some(pages) = image_layer_pages(bytes).map(|p| p.len() / PAGE_SIZE) else {
        return 0;
    };
    bytes[SUM_TIMELINE..SUM_TIMELINE + 16].copy_from_slice(timeline.as_bytes());
    bytes[SUM_LSN..SUM_LSN + 8].copy_from_slice(&lsn.0.to_be_bytes());
    let chosen = rng.distinct(pages, ((pages as f64 * fraction).round() as usize).max(1));
    for &p in &chosen {
        let at = (p + 1) * PAGE_SIZE;
        let page: &mut [u8; PAGE_SIZE] = (&mut bytes[at..at + PAGE_SIZE]).try_into().unwrap();
        page::update_rows(rng, page, lsn, xid);
    }
    chosen.len()
}

/// The summary block of a delta layer starting at `lsn_start`.
pub(crate) fn delta_summary(owner: Owner, keys: &Range<[u8; KEY_LEN]>, lsn_start: Lsn) -> Vec<u8> {
    summary(DELTA_MAGIC, owner, keys, lsn_start)
}

/// The records of a delta layer's bytes (everything after the summary), `None` if they are not a
/// sample delta layer.
pub(crate) fn delta_records(bytes: &[u8]) -> Option<&[u8]> {
    (bytes.len() >= PAGE_SIZE && bytes[..2] == DELTA_MAGIC.to_be_bytes())
        .then(|| &bytes[PAGE_SIZE..])
}

/// A summary block: magic, version, owner, key range, one LSN; zero-padded to 8 KiB.
fn summary(magic: u16, owner: Owner, keys: &Range<[u8; KEY_LEN]>, lsn: Lsn) -> Vec<u8> {
    let mut block = Vec::with_capacity(PAGE_SIZE);
    block.extend_from_slice(&magic.to_be_bytes());
    block.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    block.extend_from_slice(owner.tenant.as_bytes());
    block.extend_from_slice(owner.timeline.as_bytes());
    block.extend_from_slice(&keys.start);
    block.extend_from_slice(&keys.end);
    block.extend_from_slice(&lsn.0.to_be_bytes());
    block.resize(PAGE_SIZE, 0);
    block
}

/// Appends WAL-like records for `rel` to `out` until it has grown by at least `bytes`: row
/// inserts and updates by transactions from `xid` on, one full-page image in about thirty, at
/// LSNs rising through `lsns`.
pub(crate) fn append_records(
    rng: &mut SampleRng,
    out: &mut Vec<u8>,
    rel: &Relation,
    lsns: Range<Lsn>,
    (bytes, xid): (usize, u32),
) {
    let target = out.len() + bytes;
    let step = (lsns.end.0 - lsns.start.0) / (bytes as u64 / 100 + 1);
    let mut lsn = lsns.start.0;
    let mut tuple = [0u8; MAX_TUPLE];
    while out.len() < target {
        let block = rng.below(u64::from(rel.blocks.max(1))) as u32;
        let mut ctx = rel.page_context(block, Lsn(lsn & !7));
        ctx.xmin = xid.wrapping_add((lsn.saturating_sub(lsns.start.0) / 512) as u32);
        if rng.chance(0.03) {
            push_record(
                out,
                &ctx,
                &rel.key(block),
                2,
                &page::postgres_page(rng, &ctx),
            );
        } else {
            let item = rng.range(1..60) as u16;
            let len = page::heap_tuple(rng, &ctx, item, &mut tuple);
            push_record(out, &ctx, &rel.key(block), 1, &tuple[..len]);
        }
        lsn = (lsn + step.max(8))
            .min(lsns.end.0.saturating_sub(8))
            .max(lsns.start.0);
    }
}

/// One record: header then payload.
fn push_record(
    out: &mut Vec<u8>,
    ctx: &PageContext,
    key: &[u8; KEY_LEN],
    kind: u8,
    payload: &[u8],
) {
    out.reserve(RECORD_HEADER + payload.len());
    out.extend_from_slice(&ctx.lsn.0.to_be_bytes());
    out.extend_from_slice(key);
    out.push(u8::from(kind == 2));
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names print as Neon writes them and parse back; other names do not parse.
    #[test]
    fn layer_names_round_trip() {
        let rel = Relation {
            db: 16384,
            rel: 16385,
            blocks: 10,
            first_row_id: 1,
            xmin: 700,
            timestamp_us: 0,
        };
        let image = LayerName::Image {
            keys: rel.keys(),
            lsn: Lsn(0x16B374D848),
        };
        let text = image.to_string();
        let expected = "000000067F00004000000040010000000000-\
                        000000067F0000400000004001000000000A__00000016B374D848";
        assert_eq!(text, expected);
        assert_eq!(LayerName::parse(&text), Some(image));
        let delta = LayerName::Delta {
            keys: rel.keys(),
            lsns: Lsn(0x10)..Lsn(0x20),
        };
        assert_eq!(LayerName::parse(&delta.to_string()), Some(delta));
        for bad in ["metadata", "x__1", "00-00__0000000000000010", "a.___temp"] {
            assert_eq!(LayerName::parse(bad), None, "{bad}");
        }
    }
}
