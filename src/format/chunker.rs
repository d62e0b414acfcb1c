//! Content-defined chunking with FastCDC (2020) using the store's [`ChunkerParams`].
//!
//! Owns where chunk boundaries fall, nothing else: no hashing, compression or I/O beyond reading
//! the given source. Boundaries depend only on the bytes and the parameters, never on how the
//! input is split into reads.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

use crate::format::config::ChunkerParams;

/// Cuts byte sources into chunks.
#[derive(Clone, Debug)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    level: u8,
}

impl Chunker {
    /// A chunker for `params`; they must have passed [`ChunkerParams::validate`].
    pub fn new(params: &ChunkerParams) -> Result<Chunker, String> {
        params.validate()?;
        Ok(Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            level: params.normalization,
        })
    }

    /// Largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.max
    }

    fn normalization(&self) -> Normalization {
        match self.level {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }

    /// The chunks of an in-memory buffer, as sub-slices in order. Empty input has no chunks.
    pub fn chunk_slice<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        FastCDC::with_level(data, self.min, self.avg, self.max, self.normalization())
            .map(move |c| &data[c.offset..c.offset + c.length])
    }

    /// The chunks of a reader, each as an owned buffer, reading at most `max_size` ahead.
    pub fn chunk_reader<R: Read>(
        &self,
        reader: R,
    ) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        StreamCDC::with_level(reader, self.min, self.avg, self.max, self.normalization()).map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        })
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
