//! Exponential backoff with jitter: the one delay policy of the retry wrapper and the sync loop.
//!
//! Owns the delay arithmetic only. Must not sleep, count attempts or decide what to retry: callers
//! do, and call [`Backoff::delay`] for the wait before retry `n`.

use std::time::Duration;

/// Waits that double from `base` per retry up to `max`, each shortened by a random part of at most
/// `jitter` of it (`1.0`: uniform over the whole range, "full jitter"; `0.0`: none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first (longest possible) wait.
    pub base: Duration,
    /// Cap on any one wait.
    pub max: Duration,
    /// Fraction (0.0..=1.0) of the wait that a random draw may take off.
    pub jitter: f64,
}

impl Backoff {
    /// The longest wait before retry `n` (1-based): `min(max, base * 2^(n-1))`.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// The wait before retry `n` (1-based): the ceiling less a random part of at most `jitter`.
    pub fn delay(&self, n: u32) -> Duration {
        let off = self.jitter.clamp(0.0, 1.0) * fastrand::f64();
        self.ceiling(n).mul_f64(1.0 - off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_within_its_jitter_band() {
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            jitter: 0.25,
        };
        for n in 1..40 {
            let cap = Duration::from_millis(10 * (1u64 << (n - 1).min(20))).min(b.max);
            assert_eq!(b.ceiling(n), cap);
            let d = b.delay(n);
            assert!(d <= cap && d >= cap.mul_f64(0.75), "{n}: {d:?} of {cap:?}");
        }
    }
}
