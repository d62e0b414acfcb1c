//! Layers: each a [`Backend`](super::Backend) wrapped around a `Backend`, adding one
//! cross-cutting concern and nothing else. [`super::open`] stacks them in production order
//! (limit, metrics, retry, timeout around the real backend).
//!
//! Owns retry, timeout, concurrency limits, request metrics and (for tests) fault injection.
//! Must not know what the keys mean: no layer looks inside a pack, index or manifest.

#[cfg(feature = "testkit")]
pub mod fault;
pub mod limit;
pub mod metrics;
pub mod retry;
pub mod timeout;
