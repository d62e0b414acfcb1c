//! gc's side of writers' intents (format-spec 13.2 and 13.4): reading every intent after the
//! condemnation is published, and clearing intents that no longer protect anything.
//!
//! Owns the listing, reading and deletion of `intents/`. Must not decide what is condemned: it
//! only reports which packs intents protect. An intent that cannot be read or decoded is an
//! error (the run then deletes nothing); `casctl gc --clear-intents` is the operator's way out.

use std::collections::BTreeSet;

use crate::backend::{BackendExt, Key};
use crate::error::{Error, Result};
/// The intent object's contents (encoded by `format::intent`), as [`Intents`] returns them.
pub use crate::format::intent::Intent;
use crate::format::intent::MAX_INTENT_BODY;
use crate::format::layout;
use crate::format::manifest::Manifest;
use crate::id::PackId;
use crate::store::Store;

use super::compact::Scanned;

/// Every intent in the store, as read now.
#[derive(Debug, Default)]
pub struct Intents {
    /// `(key, intent)` for each intent that still existed when read.
    pub read: Vec<(Key, Intent)>,
}

impl Intents {
    /// The packs some intent protects.
    pub fn protected(&self) -> BTreeSet<PackId> {
        self.read
            .iter()
            .flat_map(|(_, i)| i.packs.iter().copied())
            .collect()
    }

    /// The manifests some intent's commit builds on: gc must not delete them. An intent whose
    /// own manifest is in `planned` (the listing gc planned from) protects nothing here: that
    /// manifest was planned for (made a base, or dropped) like any other.
    pub fn predecessors(&self, planned: &BTreeSet<Key>) -> BTreeSet<Key> {
        self.read
            .iter()
            .filter(|(_, i)| {
                !planned.contains(&layout::manifest_key(&i.tenant, &i.timeline, i.lsn))
            })
            .filter_map(|(_, i)| {
                i.prev
                    .map(|p| layout::manifest_key(&i.tenant, &i.timeline, p))
            })
            .collect()
    }

    /// Intents whose manifest key is in `manifests`: a create of that key can no longer
    /// succeed, so they protect nothing the manifest does not (rule 13.4.9).
    pub fn settled<'a>(&'a self, manifests: &'a BTreeSet<Key>) -> impl Iterator<Item = &'a Key> {
        self.read
            .iter()
            .filter(|(_, i)| {
                manifests.contains(&layout::manifest_key(&i.tenant, &i.timeline, i.lsn))
            })
            .map(|(k, _)| k)
    }
}

/// The manifests that checkpoints the plan did not see build on, so gc must keep them and their
/// chains (format-spec 13.4, rule 8): the `prev` of every unsettled intent in `intents`, and
/// the `prev` of every manifest listed now (after `intents` was read) but not in `planned`. A
/// writer deletes its intent only after its manifest create is confirmed, so a checkpoint whose
/// intent was gone when gc read intents has its manifest in this listing.
pub async fn building_on(
    store: &Store,
    intents: &Intents,
    planned: &BTreeSet<Key>,
) -> Result<BTreeSet<Key>> {
    let mut out = intents.predecessors(planned);
    let listed = store.list_all_manifests().await?;
    for r in listed.iter().filter(|r| !planned.contains(&r.key)) {
        let m = match store.read_manifest(r).await {
            // Deleted since the listing (a superseded create another run removed).
            Err(e) if e.is_not_found() => continue,
            other => other?,
        };
        out.extend(predecessor(&m));
    }
    Ok(out)
}

/// [`building_on`] from manifests already listed and read after `intents` was read (gc's
/// second scan), without listing again.
pub(crate) fn building_on_scanned(
    intents: &Intents,
    planned: &BTreeSet<Key>,
    listed: &[Scanned],
) -> BTreeSet<Key> {
    let mut out = intents.predecessors(planned);
    let unplanned = listed.iter().filter(|s| !planned.contains(&s.r.key));
    out.extend(unplanned.filter_map(|s| predecessor(&s.manifest)));
    out
}

/// The manifest a delta builds on.
fn predecessor(m: &Manifest) -> Option<Key> {
    let prev = m.prev_lsn.filter(|_| !m.base)?;
    Some(layout::manifest_key(&m.tenant, &m.timeline, prev))
}

/// Lists and reads every intent. One that vanished between the listing and the read was
/// released by its writer (after its manifest was created) and is skipped.
pub async fn read_all(store: &Store) -> Result<Intents> {
    let listed = store.list(&layout::prefix(layout::INTENTS)).await?;
    let mut out = Intents::default();
    for meta in listed.into_iter().filter(|m| layout::is_intent_key(&m.key)) {
        let bytes = match store
            .backend()
            .get_bytes(&meta.key, MAX_INTENT_BODY + 64)
            .await
        {
            Err(e) if e.is_not_found() => continue,
            other => other?,
        };
        let intent = Intent::decode(&bytes).map_err(|e| Error::corrupt(&meta.key, e))?;
        out.read.push((meta.key, intent));
    }
    Ok(out)
}

/// Deletes the given intents; returns how many.
pub async fn clear<'a>(store: &Store, keys: impl IntoIterator<Item = &'a Key>) -> Result<usize> {
    let keys: Vec<Key> = keys.into_iter().cloned().collect();
    crate::backend::delete_batched(store.backend().as_ref(), &keys, |_| {}).await?;
    Ok(keys.len())
}

/// Deletes every intent (the operator's `--clear-intents`): only safe when no writer is running.
pub async fn clear_all(store: &Store) -> Result<usize> {
    let listed = store.list(&layout::prefix(layout::INTENTS)).await?;
    let keys: Vec<Key> = listed
        .into_iter()
        .map(|m| m.key)
        .filter(layout::is_intent_key)
        .collect();
    clear(store, &keys).await
}
