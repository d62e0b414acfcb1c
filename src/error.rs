//! The library's error type and its policy.
//!
//! # Policy
//! - Callers branch on the *kind*: [`Error::NotFound`], [`Error::AlreadyExists`] (and the backend's
//!   `PreconditionFailed`, reached through [`Error::Backend`]), [`Error::Corrupt`] for anything read
//!   from a store or workdir that fails a check, [`Error::InvalidInput`] for a caller's mistake,
//!   [`Error::Internal`] for a bug of the library itself (a task that panicked or was cancelled),
//!   never reported as the caller's mistake.
//! - Every message names the object, file, chunk or pack it is about.
//! - Nothing here panics on bad data: decoders return [`DecodeError`], wrapped with the key it was
//!   read from.
//! - `anyhow` is for the binaries only.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Why bytes failed to decode. Carries no key: the caller wraps it in [`Error::Corrupt`] with one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DecodeError {
    /// The kind of object or field being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl DecodeError {
    /// A decode failure of `what`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        DecodeError {
            what,
            reason: reason.into(),
        }
    }
}

/// Errors of the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Data read from a store or workdir failed a check.
    #[error("corrupt {object}: {source}")]
    Corrupt {
        /// What was read: a key or a path.
        object: String,
        /// The check it failed.
        source: DecodeError,
    },
    /// Something asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Something to be created exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The caller passed something unusable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file operation (`open`, `rename`, ...), for the message.
        op: &'static str,
        /// The file it was applied to.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A write was refused by the gc fence (format-spec section 13): its validation of the gc
    /// state is too old, or chunks it meant to reference kept being condemned. Retry it.
    #[error("fenced by gc: {0}")]
    Fenced(String),
    /// Restored bytes did not match their recorded hash.
    #[error("{0}")]
    Integrity(String),
    /// The operation was cancelled: its cancellation token fired, or the sync loop stopped.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A sync task failed for good: it panicked, or its timeline was evicted after repeated
    /// failures.
    #[error("{0}")]
    TaskFailed(String),
    /// A task of the library panicked or was cancelled: a bug, not bad input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        let what = if e.is_panic() {
            "panicked"
        } else {
            "was cancelled"
        };
        Error::Internal(format!("a worker task {what}: {e}"))
    }
}

impl Error {
    /// A corrupt object error.
    pub fn corrupt(object: impl std::fmt::Display, source: DecodeError) -> Self {
        Error::Corrupt {
            object: object.to_string(),
            source,
        }
    }

    /// A local I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether a backend answered "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_)) || matches!(self, Error::Backend(b) if b.is_not_found())
    }
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
