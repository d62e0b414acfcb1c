//! Streaming a large file through the first pass: a reader thread reads it in blocks and hashes
//! every byte, while the file's worker cuts each block into chunks in place and stores them.
//!
//! Blocks come from a [`BufferPool`] shared by the checkpoint's workers, so a checkpoint touches
//! a few blocks' worth of fresh memory however many files it reads. Each block keeps room in
//! front of the bytes it was read into; the worker copies there the end of the previous block
//! that was not cut yet (less than one chunk's reach), so no byte is copied twice.
//!
//! Owns the blocks, their pool and the reader thread. Must not decide what happens to a chunk
//! (`packer`) or to a file (`source`).

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::manifest::ChunkRef;
use crate::id::FileHash;
use crate::write::bases::Prior;
use crate::write::packer::IngestCtx;
use crate::write::source::hook;

/// Bytes of a large file read into one block: the chunks hashed and compressed together in one
/// parallel batch.
pub(crate) const BATCH_BYTES: usize = 8 << 20;

/// Blocks of `head + BATCH_BYTES` bytes, given back when dropped and handed out again.
pub(crate) struct BufferPool {
    head: usize,
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool whose blocks leave `head` bytes in front of a batch (a chunker's reach), keeping at
    /// most `keep` idle blocks.
    pub(crate) fn new(head: usize, keep: usize) -> BufferPool {
        BufferPool {
            head,
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer with room for `head` plus a batch, reused when one is idle.
    pub(crate) fn take(&self) -> Pooled<'_> {
        let idle = self.free.lock().expect("pool lock").pop();
        let mut buf = idle.unwrap_or_else(|| huge(Vec::with_capacity(self.head + BATCH_BYTES)));
        buf.clear();
        Pooled { buf, pool: self }
    }
}

/// A buffer of a [`BufferPool`], given back when dropped.
pub(crate) struct Pooled<'a> {
    buf: Vec<u8>,
    pool: &'a BufferPool,
}

impl Deref for Pooled<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().expect("pool lock");
        if free.len() < self.pool.keep && self.buf.capacity() >= self.pool.head + BATCH_BYTES {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Reads `file` (`len` bytes at its open) in blocks on a reader thread, while this thread cuts
/// the blocks into chunks and stores them. Returns the hash of the bytes read, their count and
/// the chunks.
pub(crate) fn chunk_large_file(
    ctx: &IngestCtx,
    pool: &BufferPool,
    (path, prior): (&Path, Option<&Prior>),
    file: impl Read + Send,
    len: u64,
) -> Result<(FileHash, u64, Vec<ChunkRef>)> {
    let (refs, hashed) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // At most one byte past the size at open is read: a growing file is caught, never chased.
        let reader = s.spawn(move || read_blocks(file.take(len + 1), path, pool, tx));
        // Returning drops `rx`, which stops the reader at its next block.
        let refs = chunk_blocks(ctx, pool.head, (path, prior), rx);
        (refs, reader.join())
    });
    let refs = refs?;
    let (hash, read) = hashed.map_err(|_| {
        Error::io(
            "read",
            path,
            std::io::Error::other("the reader thread panicked"),
        )
    })?;
    let stored: u64 = refs.iter().map(|c| c.len as u64).sum();
    debug_assert_eq!(stored, read, "chunks cover exactly the bytes hashed");
    Ok((hash, read, refs))
}

/// Cuts the blocks from `rx` (each with `head` bytes of room in front) into chunks and stores
/// them: the chunks of the file in one piece, whatever the block boundaries.
fn chunk_blocks(
    ctx: &IngestCtx,
    head: usize,
    (path, prior): (&Path, Option<&Prior>),
    rx: Receiver<std::io::Result<Pooled<'_>>>,
) -> Result<Vec<ChunkRef>> {
    let mut refs = Vec::new();
    // Bytes of the file chunked so far: the offset of the next batch's first chunk.
    let mut at = 0u64;
    // The end of the previous block that no final chunk covered yet.
    let mut tail: Vec<u8> = Vec::with_capacity(head);
    let mut store = |window: &[u8], end: bool| -> Result<usize> {
        let chunks = final_chunks(&ctx.chunker, window, end);
        let cut: usize = chunks.iter().map(|c| c.len()).sum();
        refs.extend(ctx.store_batch(&chunks, prior.map(|p| (p, at)))?);
        at += cut as u64;
        Ok(cut)
    };
    while let Ok(block) = rx.recv() {
        let mut block = block.map_err(|e| Error::io("read", path, e))?;
        let start = head.checked_sub(tail.len()).ok_or_else(|| {
            Error::Internal(format!("{} uncut bytes exceed a chunk's reach", tail.len()))
        })?;
        block[start..head].copy_from_slice(&tail);
        let window = &block[start..];
        let cut = store(window, false)?;
        tail.clear();
        tail.extend_from_slice(&window[cut..]);
    }
    store(&tail, true)?;
    Ok(refs)
}

/// The chunks of `window` whose boundaries are final: each whose whole reach (the chunker's
/// maximum size) lies inside the window, or every chunk at the end of the file. The rest waits for
/// more bytes, so the cuts are exactly those of the whole file in one piece, and what is left is
/// shorter than the reach.
fn final_chunks<'a>(chunker: &Chunker, window: &'a [u8], end: bool) -> Vec<&'a [u8]> {
    let reach = chunker.max_size();
    let mut at = 0;
    chunker
        .chunk_slice(window)
        .take_while(|c| {
            let keep = end || at + reach <= window.len();
            at += c.len();
            keep
        })
        .collect()
}

/// Reads `file` in blocks of [`BATCH_BYTES`], each after `pool`'s head room, hashing every byte,
/// and sends them to `tx`; returns the hash and length of what it read. Stops at the end of the
/// file, at an error (sent on), or when the receiver is gone.
fn read_blocks<'p>(
    mut file: impl Read,
    path: &Path,
    pool: &'p BufferPool,
    tx: SyncSender<std::io::Result<Pooled<'p>>>,
) -> (FileHash, u64) {
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    loop {
        let mut block = pool.take();
        block.resize(pool.head, 0);
        let n = match (&mut file).take(BATCH_BYTES as u64).read_to_end(&mut block) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&block[pool.head..]);
        read += n as u64;
        if tx.send(Ok(block)).is_err() || n < BATCH_BYTES {
            break;
        }
        hook::call(path, read);
    }
    (FileHash(*hasher.finalize().as_bytes()), read)
}

/// `v`, whose memory (its whole capacity) the kernel may back with huge pages where it allows:
/// one fault then maps 2 MiB instead of 4 KiB. Only worth it before the memory is first touched.
pub(crate) fn huge(v: Vec<u8>) -> Vec<u8> {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + v.capacity()) / HUGE * HUGE;
        if end > start {
            // SAFETY: advice on pages this vector owns; it changes no byte.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::ChunkerParams;

    #[test]
    fn chunks_cut_window_by_window_are_those_of_the_whole_file() {
        let chunker = Chunker::new(&ChunkerParams::fastcdc(4096, 16384, 65536)).unwrap();
        // Runs of zeros make maximum-size chunks, which end exactly at the reach of a window.
        let mut data = vec![0; 3 << 20];
        fastrand::Rng::with_seed(9).fill(&mut data);
        data[1 << 20..(1 << 20) + 300_000].fill(0);
        let whole: Vec<&[u8]> = chunker.chunk_slice(&data).collect();
        for block in [65_536, 100_003, 1 << 20] {
            let (mut window, mut cuts) = (Vec::new(), Vec::new());
            for piece in data.chunks(block).map(Some).chain([None]) {
                if let Some(p) = piece {
                    window.extend_from_slice(p);
                }
                let chunks = final_chunks(&chunker, &window, piece.is_none());
                let cut: usize = chunks.iter().map(|c| c.len()).sum();
                cuts.extend(chunks.iter().map(|c| c.to_vec()));
                window.drain(..cut);
                // What is left fits the room in front of the next block.
                assert!(window.len() < chunker.max_size(), "block {block}");
            }
            assert!(window.is_empty(), "block {block}: bytes left over");
            assert_eq!(cuts.len(), whole.len(), "block {block}");
            assert!(
                cuts.iter().zip(&whole).all(|(a, b)| a == b),
                "block {block}"
            );
        }
    }

    #[test]
    fn pooled_blocks_are_reused_up_to_the_limit() {
        let pool = BufferPool::new(1000, 1);
        let a = pool.take();
        let ptr = a.as_ptr();
        let b = pool.take();
        assert_ne!(ptr, b.as_ptr());
        drop(a);
        drop(b); // over the limit of one idle block: freed
        let c = pool.take();
        assert_eq!(c.as_ptr(), ptr, "the idle block is handed out again");
        assert!(c.is_empty() && c.capacity() >= 1000 + BATCH_BYTES);
    }
}
