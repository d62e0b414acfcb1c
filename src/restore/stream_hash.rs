//! Hashing a restored file while it is written, so that a complete file need not be read back.
//!
//! Chunks arrive in pack order, not file order: a chunk that lands at the hashing cursor is
//! hashed at once (with every buffered chunk that then follows on), one that lands ahead of it is
//! buffered. Buffers are bounded by one budget for the whole process; a file whose buffering
//! would exceed it stops hashing while written and is read back when complete instead.
//!
//! Owns the in-order hashing state of one file. Must not touch the file itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::id::FileHash;

/// Bytes buffered ahead of their files' hashing cursors, over every restore in the process.
const BUDGET: usize = 64 << 20;
static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// The in-order hash of one file, fed as its chunks are written.
pub(crate) struct StreamHash {
    state: Mutex<State>,
}

struct State {
    /// `None` once the file gave up hashing while written.
    hasher: Option<blake3::Hasher>,
    /// Bytes hashed so far: the offset the next chunk must start at.
    next: u64,
    /// Chunks written ahead of `next`, by offset.
    ahead: BTreeMap<u64, Vec<u8>>,
    ahead_bytes: usize,
}

impl State {
    fn release(&mut self) {
        BUFFERED.fetch_sub(self.ahead_bytes, Ordering::AcqRel);
        self.ahead.clear();
        self.ahead_bytes = 0;
    }

    fn give_up(&mut self) {
        self.release();
        self.hasher = None;
    }
}

impl StreamHash {
    pub(crate) fn new() -> StreamHash {
        StreamHash {
            state: Mutex::new(State {
                hasher: Some(blake3::Hasher::new()),
                next: 0,
                ahead: BTreeMap::new(),
                ahead_bytes: 0,
            }),
        }
    }

    /// Takes the chunk `data` written at `offset`.
    pub(crate) fn feed(&self, offset: u64, data: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        if s.hasher.is_none() {
            return;
        }
        if offset != s.next {
            let reserved = BUFFERED.fetch_add(data.len(), Ordering::AcqRel) + data.len();
            if offset < s.next || reserved > BUDGET || s.ahead.contains_key(&offset) {
                BUFFERED.fetch_sub(data.len(), Ordering::AcqRel);
                s.give_up();
                return;
            }
            s.ahead.insert(offset, data.to_vec());
            s.ahead_bytes += data.len();
            return;
        }
        let hasher = s.hasher.as_mut().expect("checked above");
        hasher.update(data);
        s.next += data.len() as u64;
        while let Some(chunk) = s.ahead.remove(&s.next) {
            hasher.update(&chunk);
            s.next += chunk.len() as u64;
            s.ahead_bytes -= chunk.len();
            BUFFERED.fetch_sub(chunk.len(), Ordering::AcqRel);
        }
    }

    /// The hash of the file's first `size` bytes when they were all hashed in order, or `None`
    /// when the file must be read back.
    pub(crate) fn finish(&self, size: u64) -> Option<FileHash> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let done = s.next == size && s.ahead.is_empty();
        let hash = s
            .hasher
            .as_ref()
            .filter(|_| done)
            .map(|h| FileHash(*h.finalize().as_bytes()));
        s.give_up();
        hash
    }
}

impl Drop for StreamHash {
    fn drop(&mut self) {
        self.state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_any_order_hash_like_the_whole_file() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0, 10_000, 25_000, 60_000, 61_000, 100_000];
        let pieces: Vec<(u64, &[u8])> = cuts
            .windows(2)
            .map(|w| (w[0] as u64, &data[w[0]..w[1]]))
            .collect();
        let want = FileHash(*blake3::hash(&data).as_bytes());
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
            let h = StreamHash::new();
            for i in order {
                h.feed(pieces[i].0, pieces[i].1);
            }
            assert_eq!(h.finish(data.len() as u64), Some(want), "{order:?}");
        }
        let short = StreamHash::new();
        short.feed(0, pieces[0].1);
        assert_eq!(
            short.finish(data.len() as u64),
            None,
            "incomplete: read back"
        );
    }
}
