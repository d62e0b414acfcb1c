//! Tests of the packer: upload failures and index objects readers would reject.

use super::*;

#[tokio::test]
async fn a_panicking_upload_task_is_an_internal_error_not_invalid_input() {
    let mut tasks: JoinSet<Result<UploadedPack>> = JoinSet::new();
    tasks.spawn(async { panic!("upload bug") });
    let (mut done, mut failure) = (Vec::new(), None);
    collect_one(&mut tasks, &mut done, &mut failure).await;
    let e = failure.expect("the panic is a failure");
    assert!(
        matches!(&e, Error::Internal(m) if m.contains("panicked")),
        "{e:?}"
    );
    // A worker whose send finds the uploads stopped gets the same kind and message.
    assert!(matches!(copy_error(&e), Error::Internal(m) if m.contains("panicked")));
}

#[cfg(feature = "testkit")]
#[tokio::test]
async fn an_index_object_readers_would_reject_is_never_written() {
    let backend: DynBackend = Arc::new(crate::testkit::memory::MemoryBackend::new());
    let too_many = (0..=MAX_INDEX_SECTIONS)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            (PackId(id), Vec::new())
        })
        .collect();
    let e = create_index(&backend, layout::IndexDomain::Legacy, too_many)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the format's limits"), "{e}");
    let listed = backend.list_all(&layout::prefix(layout::INDEX)).await;
    assert!(listed.unwrap().is_empty());
}
