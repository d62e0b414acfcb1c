//! Content-defined chunking with FastCDC (2020) using the store's [`ChunkerParams`].
//!
//! Owns where chunk boundaries fall, nothing else: no hashing, compression or I/O beyond reading
//! the given source. Boundaries depend only on the bytes and the parameters, never on how the
//! input is split into reads.
//!
//! In-memory buffers (every write path) are cut by [`Cutter`], this module's own scan over the
//! `fastcdc` crate's gear tables and masks: the crate's cut points exactly (tests compare the two
//! over many parameters and lengths), in about 0.7 of the crate's time. Readers go through the
//! crate's `StreamCDC`.

use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::{self as cdc, Normalization, StreamCDC};

use crate::format::config::ChunkerParams;

/// Cuts byte sources into chunks.
#[derive(Clone, Debug)]
pub struct Chunker {
    /// The sizes, masks and tables of in-memory cuts; readers use its sizes too.
    cutter: Cutter,
    level: u8,
}

impl Chunker {
    /// A chunker for `params`; they must have passed [`ChunkerParams::validate`].
    pub fn new(params: &ChunkerParams) -> Result<Chunker, String> {
        params.validate()?;
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        let level = normalization(params.normalization);
        Ok(Chunker {
            cutter: Cutter::new(min, avg, max, level),
            level: params.normalization,
        })
    }

    /// Largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.cutter.max
    }

    /// The chunks of an in-memory buffer, as sub-slices in order. Empty input has no chunks.
    pub fn chunk_slice<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (cutter, mut rest) = (self.cutter, data);
        std::iter::from_fn(move || {
            let (chunk, tail) = rest.split_at_checked(cutter.cut(rest))?;
            rest = tail;
            (!chunk.is_empty()).then_some(chunk)
        })
    }

    /// The chunks of a reader, each as an owned buffer, reading at most `max_size` ahead.
    pub fn chunk_reader<R: Read>(
        &self,
        reader: R,
    ) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        let (c, level) = (&self.cutter, normalization(self.level));
        StreamCDC::with_level(reader, c.min, c.avg, c.max, level).map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        })
    }
}

fn normalization(level: u8) -> Normalization {
    match level {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    }
}

/// FastCDC 2020's cut (`fastcdc::v2020::cut_gear`, seed 0), with the same gear tables, masks and
/// cut points, scanned four bytes per step with the hash's dependency chain shortened: the
/// crate's loop waits on three dependent operations per two bytes, this one on two per four.
#[derive(Clone, Copy, Debug)]
struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    /// The strict mask before the average size, the relaxed one after it.
    masks: (u64, u64),
    /// The gear table and its copy shifted left by one.
    tables: &'static ([u64; 256], [u64; 256]),
}

impl Cutter {
    fn new(min: usize, avg: usize, max: usize, level: Normalization) -> Cutter {
        static TABLES: std::sync::OnceLock<([u64; 256], [u64; 256])> = std::sync::OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            let (gear, gear_ls) = cdc::get_gear_with_seed(0);
            let table = |t: &[u64]| t.try_into().expect("a gear table has 256 entries");
            (table(&gear), table(&gear_ls))
        });
        Cutter {
            min,
            avg,
            max,
            masks: cdc::select_masks(avg, level),
            tables,
        }
    }

    /// The length of the chunk `src` starts with (all of it when it is shorter than the minimum
    /// size, so 0 for an empty `src`).
    fn cut(&self, src: &[u8]) -> usize {
        let len = src.len();
        if len <= self.min {
            return len;
        }
        let (center, end) = match len {
            _ if len > self.max => (self.avg, self.max),
            _ if len < self.avg => (len, len),
            _ => (self.avg, len),
        };
        // Positions are tested in pairs from the minimum size (an odd last byte never is).
        let (start, center, end) = (self.min / 2 * 2, center / 2 * 2, end / 2 * 2);
        let mut hash = 0;
        self.scan(src, start..center, &mut hash, self.masks.0)
            .or_else(|| self.scan(src, center.max(start)..end, &mut hash, self.masks.1))
            .unwrap_or(len.min(self.max))
    }

    /// The first cut in `range` of `src` (even bounds) under `mask`, carrying the rolling
    /// `hash` on when there is none.
    #[inline(always)]
    fn scan(&self, src: &[u8], range: Range<usize>, hash: &mut u64, mask: u64) -> Option<usize> {
        let (g, gl) = self.tables;
        let (m, m_ls) = (mask, mask << 1);
        let (mut h, mut at) = (*hash, range.start);
        let bytes = src.get(range)?;
        let quads = bytes.chunks_exact(4);
        let pairs = quads.remainder();
        for q in quads {
            let (a, b) = (gl[q[0] as usize], g[q[1] as usize]);
            let (c, d) = (gl[q[2] as usize], g[q[3] as usize]);
            let h1 = (h << 2).wrapping_add(a.wrapping_add(b));
            let cuts = [
                (h << 2).wrapping_add(a) & m_ls,
                h1 & m,
                (h1 << 2).wrapping_add(c) & m_ls,
            ];
            // The next hash from `h` alone (two operations deep); `black_box` keeps the compiler
            // from folding it back onto `h1`.
            let step =
                std::hint::black_box((a.wrapping_add(b) << 2).wrapping_add(c.wrapping_add(d)));
            h = (h << 4).wrapping_add(step);
            if let Some(i) = cuts.iter().position(|v| *v == 0) {
                return Some(at + i);
            }
            if h & m == 0 {
                return Some(at + 3);
            }
            at += 4;
        }
        for p in pairs.chunks_exact(2) {
            let a = gl[p[0] as usize];
            if (h << 2).wrapping_add(a) & m_ls == 0 {
                return Some(at);
            }
            h = (h << 2).wrapping_add(a.wrapping_add(g[p[1] as usize]));
            if h & m == 0 {
                return Some(at + 1);
            }
            at += 2;
        }
        *hash = h;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn slice_and_stream_agree_whatever_the_read_size() {
        let chunker = Chunker::new(&ChunkerParams::fastcdc(4096, 16384, 65536)).unwrap();
        let data = noise(1 << 20, 42);
        let from_slice: Vec<&[u8]> = chunker.chunk_slice(&data).collect();
        assert!(
            from_slice.len() > 20,
            "expected many chunks, got {}",
            from_slice.len()
        );
        assert_eq!(from_slice.concat(), data);
        // A reader that returns odd-sized pieces must give the same boundaries.
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1 = self.1 % 7919 + 1;
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let streamed: Vec<Vec<u8>> = chunker
            .chunk_reader(Dribble(&data, 0))
            .map(|c| c.unwrap())
            .collect();
        let streamed: Vec<&[u8]> = streamed.iter().map(|c| &c[..]).collect();
        assert_eq!(streamed, from_slice);
    }

    /// The cutter's boundaries are the crate's, for every normalization level, sizes from the
    /// smallest allowed to the largest (even ones: the crate asserts that), lengths around them, and data
    /// that cuts often, rarely (zeros: every chunk the maximum) or in between.
    #[test]
    fn cuts_are_the_fastcdc_crates() {
        let sizes = [
            (64, 256, 1024),
            (2048, 8192, 8192),
            (8192, 8192, 8192),
            (4096, 16384, 65536),
            (16 << 10, 32 << 10, 128 << 10),
            (1 << 20, 4 << 20, 16 << 20),
        ];
        let mut low = noise(3 << 20, 5);
        low.iter_mut().for_each(|b| *b &= 3);
        let sources = [noise(3 << 20, 9), vec![0; 3 << 20], low];
        let mut compared = 0;
        for (min, avg, max) in sizes {
            for level in 0..=3 {
                let params = ChunkerParams {
                    normalization: level,
                    ..ChunkerParams::fastcdc(min, avg, max)
                };
                let chunker = Chunker::new(&params).unwrap();
                let (min, avg, max) = (min as usize, avg as usize, max as usize);
                let lens = [0, 1, 2, 3, min - 1, min, min + 1, avg - 1, avg, avg + 1];
                let lens = lens.into_iter().chain([max - 1, max, max + 1, 3 * max + 7]);
                for (data, len) in sources
                    .iter()
                    .flat_map(|d| lens.clone().map(move |l| (d, l)))
                {
                    let data = &data[..len.min(data.len())];
                    let ours: Vec<usize> = chunker.chunk_slice(data).map(<[u8]>::len).collect();
                    let theirs: Vec<usize> =
                        cdc::FastCDC::with_level(data, min, avg, max, normalization(level))
                            .map(|c| c.length)
                            .collect();
                    assert_eq!(ours, theirs, "{min}/{avg}/{max} level {level}, {len} bytes");
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 6 * 4 * 3 * 14);
    }

    #[test]
    fn boundaries_are_pinned() {
        // Golden lengths: if these move, every existing store loses its dedup. Never update them
        // without a new chunker algorithm name.
        let chunker = Chunker::new(&ChunkerParams::default_params()).unwrap();
        let data = noise(300_000, 7);
        let lens: Vec<usize> = chunker.chunk_slice(&data).map(|c| c.len()).collect();
        assert_eq!(lens, GOLDEN_LENS, "chunk boundaries changed");
        assert_eq!(chunker.chunk_slice(&[]).count(), 0);
        assert_eq!(
            chunker
                .chunk_slice(&[1, 2, 3])
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            vec![3]
        );
    }

    const GOLDEN_LENS: &[usize] = &[
        23485, 31050, 19094, 36604, 46648, 20282, 41341, 33033, 39049, 9414,
    ];
}
