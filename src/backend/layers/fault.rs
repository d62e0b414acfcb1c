//! Fault-injection wrapper for tests: makes a real backend fail transiently, deterministically or
//! at a seeded random ratio, and optionally corrupts downloads (cut short, or one bit flipped).
//!
//! Owns the fault schedule. Must not be used outside tests and drills, and must not decide
//! anything about retrying: it only fails, and the layers above must cope.
//!
//! # Rules
//! - An injected failure happens *before* the call reaches the inner backend, so it never has a
//!   side effect; it is `Transient` and its message contains "injected fault".
//! - Deterministic: the first [`FaultConfig::fail_first`] attempts of each distinct
//!   (operation, key) fail, every later one goes through (a listing's key is its prefix).
//! - Random: each call fails with probability [`FaultConfig::fail_ratio`], drawn from a generator
//!   seeded with [`FaultConfig::seed`] (the same calls in the same order fail the same way). A
//!   failing listing fails after 0 to 3 items, so retries of listings that already yielded items
//!   get exercised.
//! - Corruption of `get` bodies and `get_range` results is silent: a truncated download just ends
//!   early, a flipped bit is just wrong. It exists to test the checks above the backend.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::{self, BoxStream};

use crate::backend::wrap::Op;
use crate::backend::{
    Backend, BackendError, ByteStream, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode,
};

/// Which faults to inject.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Attempts of each distinct (operation, key) that fail before one is let through.
    pub fail_first: u32,
    /// Probability (0.0..=1.0) that any other call fails.
    pub fail_ratio: f64,
    /// Seed of the random generator behind every random choice.
    pub seed: u64,
    /// Probability that a download is cut short at a random byte.
    pub truncate_ratio: f64,
    /// Probability that a download has one random bit flipped.
    pub bitflip_ratio: f64,
    /// The operations faults apply to.
    pub ops: Vec<Op>,
    /// Every call on a key (or listing prefix) starting with this fails, permanently (not
    /// transient): a part of the store that is broken until [`FaultBackend::repair`].
    pub broken_prefix: Option<String>,
}

impl FaultConfig {
    /// No faults at all (a starting point for the builders below).
    pub fn none() -> FaultConfig {
        FaultConfig {
            fail_first: 0,
            fail_ratio: 0.0,
            seed: 0,
            truncate_ratio: 0.0,
            bitflip_ratio: 0.0,
            ops: Op::ALL.to_vec(),
            broken_prefix: None,
        }
    }

    /// Fail the first `n` attempts of each (operation, key).
    pub fn fail_first(n: u32) -> FaultConfig {
        FaultConfig {
            fail_first: n,
            ..FaultConfig::none()
        }
    }

    /// Fail a `ratio` of calls at random, reproducibly for a given `seed`.
    pub fn random(ratio: f64, seed: u64) -> FaultConfig {
        FaultConfig {
            fail_ratio: ratio,
            seed,
            ..FaultConfig::none()
        }
    }
}

/// A backend that fails on purpose.
#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    config: FaultConfig,
    attempts: Mutex<HashMap<(Op, String), u32>>,
    rng: Mutex<fastrand::Rng>,
    injected: AtomicU64,
    repaired: AtomicBool,
}

impl FaultBackend {
    /// Wraps `inner`, injecting the faults `config` describes.
    pub fn new(inner: Arc<dyn Backend>, config: FaultConfig) -> FaultBackend {
        FaultBackend {
            inner,
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            attempts: Mutex::default(),
            injected: AtomicU64::new(0),
            repaired: AtomicBool::new(false),
        }
    }

    /// The broken part ([`FaultConfig::broken_prefix`]) works from now on.
    pub fn repair(&self) {
        self.repaired.store(true, Ordering::Release);
    }

    /// Failures injected so far (not counting corrupted downloads).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn chance(&self, ratio: f64) -> bool {
        ratio > 0.0 && self.rng.lock().expect("fault rng").f64() < ratio
    }

    /// The failure to inject into this call of `op` on `key`, if any.
    fn fault(&self, op: Op, key: &str) -> Option<BackendError> {
        if !self.config.ops.contains(&op) {
            return None;
        }
        let broken = self.config.broken_prefix.as_deref();
        if broken.is_some_and(|p| key.starts_with(p)) && !self.repaired.load(Ordering::Acquire) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Some(BackendError::other(
                op.name(),
                key,
                "injected permanent fault",
            ));
        }
        let attempt = {
            let mut attempts = self.attempts.lock().expect("fault attempts");
            let n = attempts.entry((op, key.to_string())).or_insert(0);
            *n += 1;
            *n
        };
        let why = if attempt <= self.config.fail_first {
            format!(
                "injected fault: attempt {attempt} of the first {}",
                self.config.fail_first
            )
        } else if self.chance(self.config.fail_ratio) {
            "injected fault: random".to_string()
        } else {
            return None;
        };
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(BackendError::transient(op.name(), key, why))
    }

    fn check(&self, op: Op, key: &Key) -> Result<(), BackendError> {
        self.fault(op, key.as_str()).map_or(Ok(()), Err)
    }

    /// Where to corrupt a download of `len` bytes: (truncate at, flip bit at), as byte offsets.
    fn corruption(&self, len: u64) -> (Option<u64>, Option<(u64, u8)>) {
        if len == 0
            || (!self.config.ops.contains(&Op::Get) && !self.config.ops.contains(&Op::GetRange))
        {
            return (None, None);
        }
        let truncate = self.chance(self.config.truncate_ratio);
        let flip = self.chance(self.config.bitflip_ratio);
        let mut rng = self.rng.lock().expect("fault rng");
        (
            truncate.then(|| rng.u64(0..len)),
            flip.then(|| (rng.u64(0..len), rng.u8(0..8))),
        )
    }
}

/// Applies a truncation and a bit flip (byte offsets from the start of the download) to one
/// piece that starts at offset `pos`.
fn corrupt_piece(piece: Bytes, pos: u64, cut: Option<u64>, flip: Option<(u64, u8)>) -> Bytes {
    let end = pos + piece.len() as u64;
    let piece = match cut {
        Some(cut) if cut < end => piece.slice(..(cut.saturating_sub(pos)) as usize),
        _ => piece,
    };
    match flip {
        Some((at, bit)) if (pos..pos + piece.len() as u64).contains(&at) => {
            let mut owned = BytesMut::from(&piece[..]);
            owned[(at - pos) as usize] ^= 1 << bit;
            owned.freeze()
        }
        _ => piece,
    }
}

fn corrupt_stream(body: ByteStream, cut: Option<u64>, flip: Option<(u64, u8)>) -> ByteStream {
    if cut.is_none() && flip.is_none() {
        return body;
    }
    stream::unfold((body, 0u64), move |(mut body, pos)| async move {
        if cut.is_some_and(|cut| pos >= cut) {
            return None;
        }
        match body.next().await? {
            Ok(piece) => {
                let next = pos + piece.len() as u64;
                Some((Ok(corrupt_piece(piece, pos, cut, flip)), (body, next)))
            }
            Err(e) => Some((Err(e), (body, pos))),
        }
    })
    .boxed()
}

#[async_trait]
impl Backend for FaultBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let Some(e) = self.fault(Op::List, prefix.as_str()) else {
            return self.inner.list(prefix);
        };
        let after = if self.config.fail_ratio > 0.0 {
            self.rng.lock().expect("fault rng").usize(0..=3)
        } else {
            0
        };
        let failure = stream::once(async move { Err(e) });
        if after == 0 {
            return failure.boxed();
        }
        self.inner.list(prefix).take(after).chain(failure).boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        self.check(Op::Put, key)?;
        self.inner.put(key, payload, mode).await
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        self.check(Op::Get, key)?;
        let got = self.inner.get(key).await?;
        let (cut, flip) = self.corruption(got.meta.size);
        Ok(GetResult {
            meta: got.meta,
            body: corrupt_stream(got.body, cut, flip),
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.check(Op::GetRange, key)?;
        let got = self.inner.get_range(key, range).await?;
        let (cut, flip) = self.corruption(got.len() as u64);
        Ok(corrupt_piece(got, 0, cut, flip))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        self.check(Op::Head, key)?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.check(Op::Delete, key)?;
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        for k in keys {
            self.check(Op::Delete, k)?;
        }
        self.inner.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_piece_cuts_and_flips_at_absolute_offsets() {
        let piece = Bytes::from_static(&[0u8; 10]);
        assert_eq!(corrupt_piece(piece.clone(), 100, Some(105), None).len(), 5);
        assert_eq!(corrupt_piece(piece.clone(), 100, Some(90), None).len(), 0);
        assert_eq!(corrupt_piece(piece.clone(), 100, Some(200), None).len(), 10);
        let flipped = corrupt_piece(piece.clone(), 100, None, Some((103, 2)));
        assert_eq!(flipped[3], 4);
        assert_eq!(
            corrupt_piece(piece, 0, None, Some((103, 2))),
            Bytes::from_static(&[0u8; 10])
        );
    }
}
