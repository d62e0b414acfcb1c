//! Reading the gc state object (`gc/state`; encoding in `format::gc_state`): what writers
//! (through their fence) and gc read before acting.
//!
//! Owns the read and the etag it returns. Must not write the object: only gc updates it
//! (`gc::state::update`).

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::format::gc_state::{GcState, MAX_GC_STATE_BODY};
use crate::format::layout;

/// The gc state as read, with the etag to update it by (`None` when absent).
#[derive(Clone, Debug)]
pub struct Versioned {
    /// The state, or `None` when no gc has run on this store.
    pub state: Option<GcState>,
    /// Its etag, for the conditional update that follows.
    pub etag: Option<String>,
    /// Its envelope version (0 when absent): below `format::gc_state::GC_STATE_VERSION` in a store no binary
    /// knowing tenant index domains has marked yet.
    pub version: u8,
}

/// Reads the gc state. Absent is `state: None`.
pub async fn read(backend: &DynBackend) -> Result<Versioned> {
    let key = layout::gc_state_key();
    let got = match backend.get(&key).await {
        Err(e) if e.is_not_found() => {
            return Ok(Versioned {
                state: None,
                etag: None,
                version: 0,
            });
        }
        other => other?,
    };
    let etag = got.meta.etag.clone();
    let bytes = crate::backend::collect_stream(got.body, MAX_GC_STATE_BODY + 64).await?;
    let (version, state) =
        GcState::decode_versioned(&bytes).map_err(|e| Error::corrupt(&key, e))?;
    let etag = match etag {
        Some(e) => Some(e),
        None => backend.head(&key).await?.etag,
    };
    Ok(Versioned {
        state: Some(state),
        etag,
        version,
    })
}
