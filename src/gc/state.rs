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
    DEFAULT_WINDOW, DELETED_HISTORY, GC_STATE_VERSION, GcState, MAX_GC_STATE_BODY, Phase,
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

/// Marks the store for binaries that know tenant index domains and delete gc's seal after each
/// commit (format-spec 11, 13.1 and 13.8):
/// writes the gc state back unchanged at [`GC_STATE_VERSION`] when it is older, or creates the
/// initial state when there is none, so that older writers and gc refuse the store instead of
/// misreading it. The one write of the state not made by gc: conditional like gc's, and it
/// changes no field, so a gc whose update it overtakes only stops (its etag changed) and no
/// writer's fence sees a different state. Called before a writer creates its first index object.
pub async fn mark_version(backend: &DynBackend) -> Result<()> {
    let key = layout::gc_state_key();
    for _ in 0..crate::store::GC_RACE_RETRIES {
        let prev = read(backend).await?;
        if prev.version >= GC_STATE_VERSION {
            return Ok(());
        }
        let (state, mode) = match (&prev.state, &prev.etag) {
            (None, _) => (GcState::initial(DEFAULT_WINDOW), PutMode::Create),
            (Some(s), Some(e)) => (s.clone(), PutMode::Update(e.clone())),
            (Some(_), None) => return Err(Error::InvalidInput("gc state has no etag".into())),
        };
        let payload = Payload::from_bytes(Bytes::from(state.encode()));
        match backend.put(&key, payload, mode).await {
            Ok(()) => return Ok(()),
            Err(BackendError::AlreadyExists { .. } | BackendError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Fenced(
        "the gc state kept changing while marking its version; retry".into(),
    ))
}
