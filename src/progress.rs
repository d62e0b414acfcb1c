//! Progress reporting from long operations to whoever shows it (a terminal bar, a log, nothing).
//!
//! Owns the reporting interface only; the library never draws anything itself.

use std::sync::Arc;

/// Receives progress of one long operation, in bytes. Called from many threads.
pub trait Progress: Send + Sync {
    /// Announces the total amount of work, once it is known.
    fn set_total(&self, _bytes: u64) {}
    /// Reports that `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
    /// Announces that a new phase of the operation, named `label`, starts; the amounts reported
    /// after it belong to that phase (progress restarts from zero with no known total).
    fn phase(&self, _label: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A shareable progress sink.
pub type DynProgress = Arc<dyn Progress>;

/// A sink that reports nothing.
pub fn none() -> DynProgress {
    Arc::new(NoProgress)
}
