//! The per-store compression dictionary (format-spec section 5.1): a checkpoint with more than
//! `TRAIN_BYTES` of new compressible data trains it, stores it under `dicts/` before any pack
//! that uses it, and compresses later chunks with it; everything restores and verifies, on a
//! local store and on S3, beside chunks written before the dictionary existed.
mod common;

use std::collections::BTreeMap;

use common::*;
use layercas::backend::{BackendExt, Prefix};
use layercas::format::dict;
use layercas::format::layout;
use layercas::format::pack::Compression;
use layercas::progress;
use layercas::store::Store;
use layercas::write::Writer;

/// `len` bytes of text rows (account, balance, filler), which zstd compresses several times.
fn rows(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!(
            "{:010} | account {:06} | branch {:03} | balance {:>9} | filler {}\n",
            x % 10_000_000_000,
            x % 1_000_000,
            (x >> 20) % 1000,
            (x >> 30) as i64 % 100_000 - 50_000,
            ["pending", "settled", "refunded", "disputed"][(x >> 40) as usize % 4]
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_after_training_use_the_dictionary_and_round_trip() {
    let (_s, store_dir) = tempdir();
    round_trip_on(local_store(&store_dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_after_training_use_the_dictionary_and_round_trip_on_s3() {
    use layercas::backend::open::{StackConfig, standard_stack};
    let s3 = common::s3server::s3_backend(common::s3server::small_pages_and_parts).await;
    let backend = standard_stack(std::sync::Arc::new(s3), &StackConfig::default()).backend;
    let config = layercas::format::config::StoreConfig::default_config();
    round_trip_on(Store::open_or_create(backend, config).await.unwrap()).await;
}

async fn round_trip_on(store: Store) {
    let (_w, work) = tempdir();
    let writer = Writer::new(store.clone()).await.unwrap();
    // Checkpoint 1: under the training size, so per-chunk zstd only (the old format's blobs).
    let mut v1 = BTreeMap::new();
    v1.insert("small".to_string(), rows(2 << 20, 1));
    write_files(&work, &v1);
    checkpoint_dir(&writer, &work, 0x100).await;
    let dicts = Prefix::new(layout::DICTS).unwrap();
    assert!(store.backend().list_all(&dicts).await.unwrap().is_empty());
    // Checkpoint 2: enough new data to train; the rest of it uses the dictionary.
    let mut v2 = v1.clone();
    v2.insert("big".to_string(), rows(dict::TRAIN_BYTES + (6 << 20), 2));
    write_files(&work, &v2);
    checkpoint_dir(&writer, &work, 0x200).await;
    let listed = store.backend().list_all(&dicts).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let index = store.load_index().await.unwrap();
    let used = index
        .iter()
        .filter(|(_, l)| l.compression == Compression::ZstdDict)
        .count();
    let plain = index
        .iter()
        .filter(|(_, l)| l.compression == Compression::Zstd)
        .count();
    assert!(
        used >= 100 && plain >= 50,
        "{used} dictionary blobs, {plain} plain"
    );
    // Checkpoint 3 uses the stored dictionary from its first chunk.
    let mut v3 = v2.clone();
    v3.insert("more".to_string(), rows(1 << 20, 3));
    write_files(&work, &v3);
    let r3 = checkpoint_dir(&writer, &work, 0x300).await;
    assert!(r3.new_stored_bytes * 3 < r3.new_raw_bytes, "{r3:?}");
    for (lsn, want) in [(0x100, &v1), (0x200, &v2), (0x300, &v3)] {
        let (_o, out) = tempdir();
        store
            .restore_timeline(
                &TENANT,
                &TIMELINE,
                Some(layercas::id::Lsn(lsn)),
                &out,
                progress::none(),
            )
            .await
            .unwrap();
        assert_eq!(&read_tree(&out), want, "at {lsn:x}");
    }
    let opts = layercas::verify::VerifyOptions {
        read_data: true,
        ..Default::default()
    };
    let report = layercas::verify::verify(&store, opts, progress::none())
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.blobs_checked as u64 > used as u64, "{report:?}");
}

/// A store written by the code before dictionaries existed (tests/data/store-v1: `casctl init`
/// and one checkpoint of three files, made with the main branch's release casctl) restores as
/// it did, and a writer can add dictionary-compressed checkpoints to it; both restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_dictionaries_restores_and_takes_new_checkpoints() {
    let (_s, store_dir) = tempdir();
    copy_fixture("store-v1", &store_dir);
    let store = Store::open(local_backend(&store_dir)).await.unwrap();
    let (tenant, timeline) = (
        "0102030405060708090a0b0c0d0e0f10".parse().unwrap(),
        "1112131415161718191a1b1c1d1e1f20".parse().unwrap(),
    );
    let (_o, old) = tempdir();
    store
        .restore_timeline(&tenant, &timeline, None, &old, progress::none())
        .await
        .unwrap();
    let files = read_tree(&old);
    let sizes: Vec<(&str, usize)> = files.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(
        sizes,
        [("empty", 0), ("layer_a", 144_979), ("layer_b", 4000)]
    );
    assert!(files["layer_a"].starts_with(b"000000 | account "));
    assert_eq!(
        files["layer_a"].iter().filter(|b| **b == b'\n').count(),
        3000
    );

    // New checkpoints on the old store train a dictionary and use it; the old one still reads.
    let writer = Writer::new(store.clone()).await.unwrap();
    let (_w, work) = tempdir();
    let mut v2 = BTreeMap::new();
    v2.insert("big".to_string(), rows(dict::TRAIN_BYTES + (2 << 20), 9));
    write_files(&work, &v2);
    let req = layercas::write::CheckpointRequest {
        tenant,
        timeline,
        metadata: layercas::format::metadata::TimelineMetadata::at(layercas::id::Lsn(0x200)),
        files: sources(&work),
        mode: layercas::write::CheckpointMode::Full,
    };
    writer.checkpoint(req, progress::none()).await.unwrap();
    let dicts = Prefix::new(layout::DICTS).unwrap();
    assert_eq!(store.backend().list_all(&dicts).await.unwrap().len(), 1);
    for (lsn, name, len) in [(0x100, "layer_a", 144_979), (0x200, "big", v2["big"].len())] {
        let (_o, out) = tempdir();
        let lsn = Some(layercas::id::Lsn(lsn));
        store
            .restore_timeline(&tenant, &timeline, lsn, &out, progress::none())
            .await
            .unwrap();
        assert_eq!(std::fs::read(out.join(name)).unwrap().len(), len);
    }
}

/// Checkpoints one writer runs at once, as the sync loop does: two timelines of one tenant with
/// the same files and a timeline of another tenant, each with more than `TRAIN_BYTES` of new
/// data. One dictionary is trained (not one per checkpoint), the tenant's second timeline stores
/// nothing new, and the store ends up within 5% of its size when the three run one after another
/// (the other tenant's checkpoint, beside the one that trains, compresses without dictionary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpoints_train_one_dictionary_and_share_a_tenants_chunks() {
    use layercas::format::metadata::TimelineMetadata;
    use layercas::id::{Lsn, TenantId, TimelineId};
    use layercas::write::{CheckpointMode, CheckpointRequest};

    let (_w, work) = tempdir();
    let (shared, other) = (work.join("shared"), work.join("other"));
    let mut files = BTreeMap::new();
    files.insert("layer".to_string(), rows(dict::TRAIN_BYTES + (4 << 20), 7));
    write_files(&shared, &files);
    files.insert("layer".to_string(), rows(dict::TRAIN_BYTES + (4 << 20), 8));
    write_files(&other, &files);
    let tenant_b: TenantId = "b0000000000000000000000000000000".parse().unwrap();
    let timeline_2: TimelineId = "20000000000000000000000000000000".parse().unwrap();
    let jobs = [
        (TENANT, TIMELINE, &shared),
        (TENANT, timeline_2, &shared),
        (tenant_b, TIMELINE, &other),
    ];
    let request =
        |(tenant, timeline, dir): (TenantId, TimelineId, &std::path::PathBuf)| CheckpointRequest {
            tenant,
            timeline,
            metadata: TimelineMetadata::at(Lsn(0x100)),
            files: sources(dir),
            mode: CheckpointMode::Full,
        };
    let mut sizes = Vec::new();
    for concurrent in [true, false] {
        let (_s, store_dir) = tempdir();
        let store = local_store(&store_dir).await;
        let writer = Writer::new(store.clone()).await.unwrap();
        let run = |job| writer.checkpoint(request(job), progress::none());
        let reports = if concurrent {
            let (a, b, c) = tokio::join!(run(jobs[0]), run(jobs[1]), run(jobs[2]));
            vec![a.unwrap(), b.unwrap(), c.unwrap()]
        } else {
            let mut v = Vec::new();
            for job in jobs {
                v.push(run(job).await.unwrap());
            }
            v
        };
        let dicts = Prefix::new(layout::DICTS).unwrap();
        let listed = store.backend().list_all(&dicts).await.unwrap();
        assert_eq!(listed.len(), 1, "concurrent {concurrent}: {listed:?}");
        let shared_new: Vec<u64> = reports[..2].iter().map(|r| r.new_chunks).collect();
        assert!(
            shared_new.iter().filter(|n| **n == 0).count() == 1
                && shared_new.iter().any(|n| *n > 100),
            "concurrent {concurrent}: one of the tenant's timelines stores its chunks, the other none: {shared_new:?}"
        );
        let packs = Prefix::new(layout::PACKS).unwrap();
        let stored: u64 = store
            .backend()
            .list_all(&packs)
            .await
            .unwrap()
            .iter()
            .map(|m| m.size)
            .sum();
        sizes.push(stored);
    }
    let (concurrent, sequential) = (sizes[0] as f64, sizes[1] as f64);
    assert!(
        (concurrent / sequential - 1.0).abs() < 0.05,
        "concurrent checkpoints stored {concurrent} bytes of packs, one after another {sequential}"
    );
}

/// A checkpoint that trained the dictionary but failed before the dictionary was durable gives
/// the training back: the writer's next checkpoint trains one and stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_fails_gives_the_training_back() {
    use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
    let (_s, store_dir) = tempdir();
    let faults = FaultConfig {
        broken_prefix: Some(layout::DICTS.into()),
        ops: vec![layercas::backend::wrap::Op::Put],
        ..FaultConfig::none()
    };
    let backend = std::sync::Arc::new(FaultBackend::new(local_backend(&store_dir), faults));
    let config = layercas::format::config::StoreConfig::default_config();
    let store = Store::open_or_create(backend.clone(), config)
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    let (_w, work) = tempdir();
    let mut files = BTreeMap::new();
    files.insert("layer".to_string(), rows(dict::TRAIN_BYTES + (4 << 20), 9));
    write_files(&work, &files);
    let req = |lsn| layercas::write::CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: layercas::format::metadata::TimelineMetadata::at(layercas::id::Lsn(lsn)),
        files: sources(&work),
        mode: layercas::write::CheckpointMode::Full,
    };
    let failed = writer.checkpoint(req(0x100), progress::none()).await;
    assert!(failed.is_err(), "the dictionary's upload fails: {failed:?}");
    backend.repair();
    let r = writer
        .checkpoint(req(0x100), progress::none())
        .await
        .unwrap();
    let dicts = Prefix::new(layout::DICTS).unwrap();
    let listed = store.backend().list_all(&dicts).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(r.new_stored_bytes * 3 < r.new_raw_bytes, "{r:?}");
}

/// A writer lists `dicts/` only until it knows a dictionary: the one that trained it lists it
/// no more, and a new writer lists it once (a request less per checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_knows_the_dictionary_lists_dicts_no_more() {
    let (_s, store_dir) = tempdir();
    let rec = common::recording::Recording::new(local_backend(&store_dir));
    let backend: layercas::backend::DynBackend = rec.clone();
    let config = layercas::format::config::StoreConfig::default_config();
    let store = Store::open_or_create(backend, config).await.unwrap();
    let (_w, work) = tempdir();
    let trainer = Writer::new(store.clone()).await.unwrap();
    let mut files = BTreeMap::new();
    files.insert("big".to_string(), rows(dict::TRAIN_BYTES + (2 << 20), 1));
    write_files(&work, &files);
    checkpoint_dir(&trainer, &work, 0x100).await;
    let dicts = Prefix::new(layout::DICTS).unwrap();
    assert_eq!(store.backend().list_all(&dicts).await.unwrap().len(), 1);
    let newcomer = Writer::new(store.clone()).await.unwrap();
    let mut lists = Vec::new();
    for (i, writer) in [&trainer, &trainer, &newcomer, &newcomer]
        .into_iter()
        .enumerate()
    {
        files.insert(format!("more-{i}"), rows(1 << 20, 10 + i as u64));
        write_files(&work, &files);
        rec.take();
        checkpoint_dir(writer, &work, 0x200 + 0x100 * i as u64).await;
        let seen = rec.take();
        lists.push(
            seen.iter()
                .filter(|r| r.starts_with("list") && r.contains(layout::DICTS))
                .count(),
        );
    }
    assert_eq!(lists, [0, 0, 1, 0]);
}

/// Checkpoints far smaller than a sample (a fleet's usual) still get the store a dictionary:
/// a writer's checkpoints add their new chunks to one sample, and the one that fills it trains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_checkpoints_add_up_to_a_dictionary() {
    let (_s, store_dir) = tempdir();
    let store = local_store(&store_dir).await;
    let (_w, work) = tempdir();
    let writer = Writer::new(store.clone()).await.unwrap();
    let dicts = Prefix::new(layout::DICTS).unwrap();
    let mut files = BTreeMap::new();
    let each = 2 << 20;
    let mut trained_at = None;
    for i in 0..6u64 {
        files.insert(format!("layer-{i}"), rows(each, 100 + i));
        write_files(&work, &files);
        checkpoint_dir(&writer, &work, 0x100 * (i + 1)).await;
        let listed = store.backend().list_all(&dicts).await.unwrap();
        if trained_at.is_none() && !listed.is_empty() {
            trained_at = Some(i);
        }
        assert!(listed.len() <= 1, "{listed:?}");
    }
    // 2 MiB of new rows per checkpoint: the fifth fills the 8 MiB sample.
    assert_eq!(
        trained_at,
        Some((dict::TRAIN_BYTES / each) as u64),
        "{trained_at:?}"
    );
}
