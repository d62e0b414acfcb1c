//! Round trips through a local store: what is checkpointed restores byte-identically, for every
//! shape of file, and dedup stores little for repeated or slightly changed data.
mod common;

use std::collections::BTreeMap;

use common::*;
use layercas::format::metadata::TimelineMetadata;
use layercas::id::Lsn;
use layercas::progress;
use layercas::store::Store;
use layercas::write::Writer;

/// Empty files, files below the minimum chunk size, at exact chunk-size boundaries, multi-chunk
/// files, nested names, and a thousand tiny files all come back byte-identical, with metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_shape_round_trips() {
    let (_s, store_dir) = tempdir();
    every_file_shape_round_trips_on(local_store(&store_dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_shape_round_trips_on_s3() {
    every_file_shape_round_trips_on(s3_store().await).await;
}

async fn every_file_shape_round_trips_on(store: Store) {
    let (_w, work) = tempdir();
    let (_r, out) = tempdir();
    let p = &store.config().chunker;
    let mut files = BTreeMap::new();
    files.insert("empty".to_string(), vec![]);
    files.insert("one_byte".into(), vec![7]);
    files.insert("below_min".into(), noise(p.min_size as usize - 1, 1));
    files.insert("exactly_min".into(), noise(p.min_size as usize, 2));
    files.insert("exactly_avg".into(), noise(p.avg_size as usize, 3));
    files.insert("exactly_max".into(), noise(p.max_size as usize, 4));
    files.insert("max_plus_one".into(), noise(p.max_size as usize + 1, 5));
    files.insert("multi/chunk/large".into(), noise(9 << 20, 6)); // above the in-memory limit
    for i in 0..1000 {
        files.insert(format!("tiny/{i:04}"), noise(i % 300, 100 + i as u64));
    }
    write_files(&work, &files);
    let writer = Writer::new(store.clone()).await.unwrap();
    let report = checkpoint_dir(&writer, &work, 0x1000).await;
    assert_eq!(report.files_added, files.len());
    // Tiny files share packs: far fewer packs than files.
    assert!(
        report.packs_written <= 3,
        "{} packs for {} files",
        report.packs_written,
        files.len()
    );

    let restored = store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, progress::none())
        .await
        .unwrap();
    assert_eq!(restored.files, files.len());
    assert_eq!(read_tree(&out), files);
    let md =
        TimelineMetadata::from_file_bytes(&std::fs::read(out.join("metadata")).unwrap()).unwrap();
    assert_eq!(md.disk_consistent_lsn, Lsn(0x1000));
    // No temporary file is left behind.
    assert!(read_tree(&out).keys().all(|k| !k.contains(".layercas")));
}

/// Restoring at an older LSN gives that checkpoint's files; later removals and additions apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_at_each_lsn_gives_that_checkpoint() {
    let (_s, store_dir) = tempdir();
    restore_at_each_lsn_gives_that_checkpoint_on(local_store(&store_dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_at_each_lsn_gives_that_checkpoint_on_s3() {
    restore_at_each_lsn_gives_that_checkpoint_on(s3_store().await).await;
}

async fn restore_at_each_lsn_gives_that_checkpoint_on(store: Store) {
    let (_w, work) = tempdir();
    let writer = Writer::new(store.clone()).await.unwrap();
    let mut v1 = BTreeMap::new();
    v1.insert("a".to_string(), noise(100_000, 1));
    v1.insert("b".to_string(), noise(50_000, 2));
    write_files(&work, &v1);
    checkpoint_dir(&writer, &work, 0x100).await;
    std::fs::remove_file(work.join("a")).unwrap();
    let mut v2 = v1.clone();
    v2.remove("a");
    v2.insert("c".into(), noise(70_000, 3));
    write_files(&work, &v2);
    let r2 = checkpoint_dir(&writer, &work, 0x200).await;
    assert_eq!(
        (r2.files_added, r2.files_removed, r2.files_unchanged),
        (1, 1, 1)
    );

    for (lsn, want) in [(0x100, &v1), (0x1FF, &v1), (0x200, &v2), (0x5000, &v2)] {
        let (_o, out) = tempdir();
        store
            .restore_timeline(&TENANT, &TIMELINE, Some(Lsn(lsn)), &out, progress::none())
            .await
            .unwrap();
        assert_eq!(&read_tree(&out), want, "at {lsn:x}");
    }
    let (_o, out) = tempdir();
    let err = store
        .restore_timeline(&TENANT, &TIMELINE, Some(Lsn(0x50)), &out, progress::none())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // The same LSN cannot be recorded twice, nor an older one after a newer.
    let again = writer
        .checkpoint(request(&work, 0x200), progress::none())
        .await
        .unwrap_err();
    assert!(
        matches!(again, layercas::Error::AlreadyExists(_)),
        "{again}"
    );
    let older = writer
        .checkpoint(request(&work, 0x150), progress::none())
        .await
        .unwrap_err();
    assert!(matches!(older, layercas::Error::InvalidInput(_)), "{older}");
}

fn request(dir: &std::path::Path, lsn: u64) -> layercas::write::CheckpointRequest {
    layercas::write::CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: TimelineMetadata::at(Lsn(lsn)),
        files: sources(dir),
        mode: layercas::write::CheckpointMode::Full,
    }
}

/// The same bytes under other names store (almost) nothing new, and are not chunked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_under_new_names_store_under_one_percent() {
    let (_s, store_dir) = tempdir();
    same_bytes_under_new_names_store_under_one_percent_on(local_store(&store_dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_under_new_names_store_under_one_percent_on_s3() {
    same_bytes_under_new_names_store_under_one_percent_on(s3_store().await).await;
}

async fn same_bytes_under_new_names_store_under_one_percent_on(store: Store) {
    let (_w, work) = tempdir();
    let writer = Writer::new(store.clone()).await.unwrap();
    let mut files = BTreeMap::new();
    for i in 0..20 {
        files.insert(format!("f{i}"), noise(300_000 + i * 1000, i as u64));
    }
    write_files(&work, &files);
    let first = checkpoint_dir(&writer, &work, 0x100).await;
    for (name, _) in &files {
        std::fs::rename(work.join(name), work.join(format!("renamed_{name}"))).unwrap();
    }
    let second = checkpoint_dir(&writer, &work, 0x200).await;
    assert_eq!(second.files_added, files.len());
    assert_eq!(
        second.files_deduplicated,
        files.len(),
        "whole files must be recognised by hash"
    );
    assert_eq!(second.chunks, 0, "known files must not be chunked again");
    assert!(
        second.new_stored_bytes * 100 < first.new_stored_bytes,
        "{second:?}"
    );

    // Under a fresh writer (no whole-file knowledge of another timeline), chunk dedup still holds.
    let other = Writer::new(store.clone()).await.unwrap();
    let req = layercas::write::CheckpointRequest {
        timeline: layercas::id::TimelineId([0xcc; 16]),
        ..request(&work, 0x300)
    };
    let third = other.checkpoint(req, progress::none()).await.unwrap();
    assert!(third.chunks > 0);
    assert!(
        third.new_stored_bytes * 100 < first.new_stored_bytes,
        "{third:?}"
    );
}

/// A file where 2% of its 8 KiB pages changed stores at most ~10% of its size again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_percent_changed_pages_store_at_most_ten_percent() {
    let (_s, store_dir) = tempdir();
    two_percent_changed_pages_store_at_most_ten_percent_on(local_store(&store_dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_percent_changed_pages_store_at_most_ten_percent_on_s3() {
    two_percent_changed_pages_store_at_most_ten_percent_on(s3_store().await).await;
}

async fn two_percent_changed_pages_store_at_most_ten_percent_on(store: Store) {
    let (_w, work) = tempdir();
    let writer = Writer::new(store.clone()).await.unwrap();
    let pages = 4096; // 32 MiB
    let mut data = noise(pages * 8192, 9);
    std::fs::write(work.join("image_1"), &data).unwrap();
    checkpoint_dir(&writer, &work, 0x100).await;
    // Change 2% of pages, spread evenly with a deterministic stride.
    let changed = pages / 50;
    for k in 0..changed {
        let page = (k * 7919) % pages;
        let fresh = noise(8192, 1000 + k as u64);
        data[page * 8192..(page + 1) * 8192].copy_from_slice(&fresh);
    }
    std::fs::remove_file(work.join("image_1")).unwrap();
    std::fs::write(work.join("image_2"), &data).unwrap();
    let r = checkpoint_dir(&writer, &work, 0x200).await;
    let ratio = r.new_stored_bytes as f64 / data.len() as f64;
    assert!(ratio <= 0.10, "stored {:.1}% of the file", ratio * 100.0);
    let (_o, out) = tempdir();
    store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, progress::none())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("image_2")).unwrap(), data);
}

/// A store in a fresh bucket on the test S3 server, through the standard stack.
async fn s3_store() -> Store {
    use layercas::backend::open::{StackConfig, standard_stack};
    let s3 = common::s3server::s3_backend(common::s3server::small_pages_and_parts).await;
    let backend = standard_stack(std::sync::Arc::new(s3), &StackConfig::default()).backend;
    Store::open_or_create(
        backend,
        layercas::format::config::StoreConfig::default_config(),
    )
    .await
    .unwrap()
}
