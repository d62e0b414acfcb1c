//! The conditional read and update of the gc state object (`gc/state`; its encoding is
//! `format::gc_state`): the fence between gc and writers.
//!
//! Owns the update (the read every writer shares is `store::gc_state`, re-exported here). Only gc writes the object, always with `PutMode::Update(etag)` (or
//! `Create` when absent), so two gc runs cannot interleave their updates: the loser gets
//! `PreconditionFailed` and stops. Must not decide what to condemn.

use bytes::Bytes;

use crate::backend::{BackendError, DynBackend, Payload, PutMode};
use crate::error::{Error, Result};
use crate::format::layout;

pub use crate::format::gc_state::{
    DEFAULT_WINDOW, DELETED_HISTORY, GcState, MAX_GC_STATE_BODY, Phase,
};
pub use crate::store::gc_state::{Versioned, read};

/// Replaces the state read as `prev` with `next` (bumping its generation); fails with
/// `PreconditionFailed` (through [`Error::Backend`]) when someone else changed it since.
pub async fn update(
    backend: &DynBackend,
    prev: &Versioned,
    mut next: GcState,
) -> Result<Versioned> {
    let key = layout::gc_state_key();
    next.generation = prev.state.as_ref().map_or(0, |s| s.generation) + 1;
    let mode = match &prev.etag {
        None if prev.state.is_none() => PutMode::Create,
        None => return Err(Error::InvalidInput("gc state has no etag".into())),
        Some(e) => PutMode::Update(e.clone()),
    };
    let payload = Payload::from_bytes(Bytes::from(next.encode()));
    match backend.put(&key, payload, mode).await {
        Err(BackendError::AlreadyExists { key }) => {
            return Err(BackendError::PreconditionFailed { key }.into());
        }
        other => other?,
    }
    // Read back rather than `head`: if another gc updated right after us, its etag must not be
    // taken for ours.
    let now = read(backend).await?;
    if now.state.as_ref() != Some(&next) {
        return Err(BackendError::PreconditionFailed {
            key: key.to_string(),
        }
        .into());
    }
    Ok(now)
}
