//! The backend error kinds callers branch on.
//!
//! Owns [`BackendError`] and [`BoxError`]. Each backend maps its own failures to these kinds (S3's
//! table lives in `s3::errors`); must not hold any backend-specific mapping itself.

use std::fmt;

/// Boxed error source inside a [`BackendError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The errors callers branch on. Each backend keeps its own detailed errors and converts to these;
/// the detail stays reachable through `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("precondition failed for {key}: it changed since it was read")]
    PreconditionFailed { key: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range {start}..{end} of {key} is not within the object's {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("object is larger than the {limit} bytes allowed here")]
    TooLarge { limit: u64 },
    #[error("{what} is not supported by this backend")]
    NotImplemented { what: &'static str },
    /// A failure that may pass: timeout, connection error, 5xx, throttling, injected fault.
    #[error("{op} {key}: transient failure: {source}")]
    Transient {
        op: &'static str,
        key: String,
        source: BoxError,
    },
    /// Anything else; not worth retrying.
    #[error("{op} {key}: {source}")]
    Other {
        op: &'static str,
        key: String,
        source: BoxError,
    },
}

impl BackendError {
    /// A non-retryable failure of `op` on `key`.
    pub fn other(op: &'static str, key: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        BackendError::Other {
            op,
            key: key.to_string(),
            source: source.into(),
        }
    }

    /// A retryable failure of `op` on `key`.
    pub fn transient(
        op: &'static str,
        key: impl fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        BackendError::Transient {
            op,
            key: key.to_string(),
            source: source.into(),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// Whether this is `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}
