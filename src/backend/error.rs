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
    /// The object does not exist (or was deleted while being read).
    #[error("object {key} not found")]
    NotFound {
        /// The object concerned.
        key: String,
    },
    /// A conditional create found the key taken; callers treat it as "someone else wrote it".
    #[error("object {key} already exists")]
    AlreadyExists {
        /// The object concerned.
        key: String,
    },
    /// A conditional write lost: the object changed since its etag was read.
    #[error("precondition failed for {key}: it changed since it was read")]
    PreconditionFailed {
        /// The object concerned.
        key: String,
    },
    /// The key breaks the key rules; nothing was sent to the store.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A range read asked for bytes outside the object.
    #[error("range {start}..{end} of {key} is not within the object's {size} bytes")]
    InvalidRange {
        /// The object read.
        key: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's actual size.
        size: u64,
    },
    /// A read refused to buffer an object above the caller's bound.
    #[error("object is larger than the {limit} bytes allowed here")]
    TooLarge {
        /// The bound the object exceeded, in bytes.
        limit: u64,
    },
    /// The backend lacks an optional capability (e.g. conditional overwrite).
    #[error("{what} is not supported by this backend")]
    NotImplemented {
        /// The missing capability.
        what: &'static str,
    },
    /// A failure that may pass: timeout, connection error, 5xx, throttling, injected fault.
    #[error("{op} {key}: transient failure: {source}")]
    Transient {
        /// The call that failed (`put`, `get`, ...), for the message and metrics.
        op: &'static str,
        /// The object the call was about.
        key: String,
        /// The underlying error, kept for `source()`.
        source: BoxError,
    },
    /// Anything else; not worth retrying.
    #[error("{op} {key}: {source}")]
    Other {
        /// The call that failed (`put`, `get`, ...), for the message.
        op: &'static str,
        /// The object the call was about.
        key: String,
        /// The underlying error, kept for `source()`.
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
