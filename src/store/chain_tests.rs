//! The chain a reader folds when a gc run stopped halfway through deleting the checkpoints a
//! base says it dropped (format-spec 7.1 and 7.2): superseded manifests are ignored, a real gap
//! is still an error.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::BackendExt;
use crate::format::config::StoreConfig;
use crate::format::layout;
use crate::format::manifest::{Manifest, TimelineState};
use crate::id::Lsn;
use crate::store::Store;
use crate::testkit::manifests::{file, manifest};
use crate::testkit::memory::MemoryBackend;

async fn store_with(manifests: &[Manifest]) -> Store {
    let store = Store::open_or_create(
        Arc::new(MemoryBackend::new()),
        StoreConfig::default_config(),
    )
    .await
    .unwrap();
    for m in manifests {
        let key = layout::manifest_key(&m.tenant, &m.timeline, m.lsn);
        let bytes = Bytes::from(m.encode());
        store.backend().create_bytes(&key, bytes).await.unwrap();
    }
    store
}

/// 0x10 kept; 0x20..0x40 dropped (0x20 already deleted, 0x30 and 0x40 not yet); 0x50 the base.
fn half_deleted() -> (Vec<Manifest>, Manifest) {
    let first = manifest(0x10, None, vec![file("a", b"a")], &[]);
    let kept = [
        first.clone(),
        manifest(0x30, Some(0x20), vec![file("c", b"c")], &[]),
        manifest(0x40, Some(0x30), vec![file("d", b"d")], &[]),
    ];
    let mut base = manifest(0x50, None, vec![file("a", b"a"), file("e", b"e")], &[]);
    base.base = true;
    base.dropped_from = Some(Lsn(0x20));
    let mut all = kept.to_vec();
    all.push(base.clone());
    (all, first)
}

async fn state_at(store: &Store, m: &Manifest, at: u64) -> crate::Result<Option<TimelineState>> {
    store
        .timeline_state(&m.tenant, &m.timeline, Some(Lsn(at)))
        .await
}

#[tokio::test]
async fn superseded_checkpoints_are_ignored_not_reported_as_gaps() {
    let (all, first) = half_deleted();
    let store = store_with(&all).await;
    // At 0x40 (listed, but dropped and its predecessor gone) the state is the newest checkpoint
    // not dropped: 0x10.
    let s = state_at(&store, &first, 0x40).await.unwrap().unwrap();
    assert_eq!(s, TimelineState::apply(None, first.clone()));
    let s = state_at(&store, &first, 0x50).await.unwrap().unwrap();
    assert_eq!(s.lsn, Lsn(0x50));
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a", "e"]);
}

#[tokio::test]
async fn a_gap_no_base_explains_is_still_an_error() {
    let (mut all, first) = half_deleted();
    all.last_mut().unwrap().dropped_from = Some(Lsn(0x45));
    let store = store_with(&all).await;
    let e = state_at(&store, &first, 0x40).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("predecessor"), "{e}");
}
