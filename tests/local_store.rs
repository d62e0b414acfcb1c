//! The local store as casctl and the library use it: opening a missing store is an error that
//! creates nothing, a read-only store can be read, staging leftovers of killed writers are counted
//! and removed (never a live writer's file), verify knows every key of the layout, and a failed
//! pack upload reports its cause.
#[allow(dead_code)]
#[path = "common/casctl_json.rs"]
mod casctl_json;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use casctl_json::*;
use common::target::Target;
use common::*;
use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::store::Store;
use layercas::write::Writer;

/// A store with one checkpoint of a few files, and those files.
fn filled_store(root: &Path) -> (Target, BTreeMap<String, Vec<u8>>) {
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let work = root.join("work");
    let mut files = BTreeMap::new();
    files.insert("a".to_string(), noise(300_000, 1));
    files.insert("dir/b".to_string(), noise(50_000, 2));
    write_files(&work, &files);
    let t = Target::local(&store);
    json(&checkpoint(&t, &work, "0/100"));
    (t, files)
}

/// Every path under `dir` with its kind, size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (bool, u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = std::fs::metadata(&d).unwrap();
        out.insert(d.clone(), (true, 0, md.modified().unwrap()));
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), (false, md.len(), md.modified().unwrap()));
            }
        }
    }
    out
}

/// Commands that only read a store refuse a directory that does not exist, name it, and do not
/// create it.
#[test]
fn reading_a_missing_local_store_is_an_error_that_creates_nothing() {
    let (_d, root) = tempdir();
    let missing = root.join("typo").join("store");
    let t = Target::local(&missing);
    let (_o, out) = tempdir();
    let tl = ["--tenant", T, "--timeline", TL];
    let commands: Vec<Vec<&str>> = vec![
        vec!["ls"],
        vec!["stats"],
        vec!["verify"],
        vec!["gc", "--dry-run"],
        [&["restore", "--to", out.to_str().unwrap()][..], &tl].concat(),
    ];
    for args in commands {
        let o = run(t.casctl().args(&args));
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(missing.to_str().unwrap()) && err.contains("does not exist"),
            "{args:?}: {err}"
        );
        assert!(!root.join("typo").exists(), "{args:?} created the path");
    }
}

/// A store nobody may write to can be listed, restored, verified and counted, and none of that
/// writes anything (as root, where permissions do not bite, the unchanged tree shows it).
#[test]
fn a_read_only_store_can_be_listed_restored_and_verified() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, root) = tempdir();
    let (t, files) = filled_store(&root);
    let store = root.join("store");
    // A copy of a store need not have the staging directory.
    std::fs::remove_dir_all(store.join(".staging")).unwrap();
    let before = snapshot(&store);
    let set_mode = |mode: u32| {
        for p in before.keys().filter(|p| before[*p].0) {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o555);
    let (_o, out) = tempdir();
    let ls = json(&run(t.casctl().args(["--json", "ls"])));
    assert_eq!(ls[0]["checkpoints"], serde_json::json!(["0/100"]));
    json(&restore(&t, &out, None));
    assert_eq!(read_tree(&out).remove("a"), files.get("a").cloned());
    let (ok, v) = verify(&t);
    assert!(ok, "{v}");
    json(&run(t.casctl().args(["--json", "stats"])));
    let after = snapshot(&store);
    set_mode(0o755);
    assert_eq!(before, after, "reading the store changed it");
}

/// A staging file no writer holds (what a killed writer leaves) is counted by `stats` and
/// `verify` and removed by the next write; a live writer's locked file is counted and kept.
#[test]
fn staging_leftovers_are_counted_and_the_next_write_removes_them() {
    let (_d, root) = tempdir();
    let (t, _) = filled_store(&root);
    let staging = root.join("store/.staging");
    let leftover = staging.join("4242-1-0");
    std::fs::write(&leftover, vec![7u8; 1000]).unwrap();
    let live = staging.join("4243-1-0");
    let held = std::fs::File::create(&live).unwrap();
    held.lock().unwrap();
    let s = json(&run(t.casctl().args(["--json", "stats"])));
    assert_eq!(s["staging"]["stale_files"], 1, "{s}");
    assert_eq!(s["staging"]["stale_bytes"], 1000, "{s}");
    assert_eq!(s["staging"]["live_files"], 1, "{s}");
    let (ok, v) = verify(&t);
    assert!(ok && v["staging"]["stale_files"] == 1, "{v}");
    let text = String::from_utf8(run(t.casctl().arg("stats")).stdout).unwrap();
    assert!(text.contains("1 leftover files"), "{text}");

    let (_w, work) = tempdir();
    std::fs::write(work.join("c"), noise(10_000, 3)).unwrap();
    json(&checkpoint(&t, &work, "0/200"));
    assert!(!leftover.exists(), "the writer removed the leftover");
    assert!(live.exists(), "a live writer's file is never removed");
    let s = json(&run(t.casctl().args(["--json", "stats"])));
    assert_eq!(s["staging"]["stale_files"], 0, "{s}");
    drop(held);
}

/// `gc/state` and intents are part of the layout: verify does not call them foreign.
#[test]
fn verify_knows_the_gc_state_and_intents() {
    let (_d, root) = tempdir();
    let (t, _) = filled_store(&root);
    json(&run(t.casctl().args(["--json", "gc"])));
    assert!(root.join("store/gc/state").exists());
    let intent =
        layercas::format::intent::Intent::new(TENANT, TIMELINE, layercas::id::Lsn(1), vec![]);
    let key = root.join("store/intents").join("ab".repeat(32));
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, intent.encode()).unwrap();
    let (ok, v) = verify(&t);
    assert!(ok, "{v}");
    let foreign: Vec<_> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["message"].as_str().unwrap().contains("not part of"))
        .collect();
    assert!(foreign.is_empty(), "{foreign:?}");
}

/// A pack upload that fails for good fails the checkpoint with the upload's own error (kind and
/// message), not a sentinel saying the uploads stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pack_upload_reports_its_cause() {
    let (_s, dir) = tempdir();
    let base = local_backend(&dir);
    let config = StoreConfig::new(ChunkerParams::fastcdc(1024, 4096, 16384), 64 << 10, 3);
    Store::open_or_create(base.clone(), config).await.unwrap();
    let faults = FaultConfig {
        broken_prefix: Some("packs/".into()),
        ops: vec![layercas::backend::wrap::Op::Put],
        ..FaultConfig::none()
    };
    let store = Store::open(Arc::new(FaultBackend::new(base, faults)))
        .await
        .unwrap();
    let (_w, work) = tempdir();
    // Far more packs than the upload queue holds: workers keep sending after the first failure.
    std::fs::write(work.join("big"), noise(8 << 20, 5)).unwrap();
    let writer = Writer::new(store).await.unwrap();
    let req = layercas::write::CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: layercas::format::metadata::TimelineMetadata::at(layercas::id::Lsn(0x100)),
        files: sources(&work),
        mode: layercas::write::CheckpointMode::Full,
    };
    let err = writer
        .checkpoint(req, layercas::progress::none())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("injected permanent fault"), "{text}");
    assert!(!text.contains("upload stopped"), "{text}");
    assert!(matches!(err, layercas::Error::Backend(_)), "{err:?}");
}

/// A name over 1024 bytes (in all) is refused when writing, before anything is uploaded, so that
/// every recorded name can be restored below PATH_MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_over_1024_bytes_are_refused_when_writing() {
    let (_s, dir) = tempdir();
    let store = local_store(&dir).await;
    let (_w, work) = tempdir();
    let name = format!("{}/{}", vec!["d".repeat(250); 4].join("/"), "f".repeat(30));
    assert!(name.len() > 1024 && name.len() < 1100);
    let mut files = BTreeMap::new();
    files.insert(name, b"x".to_vec());
    write_files(&work, &files);
    let writer = Writer::new(store.clone()).await.unwrap();
    let req = layercas::write::CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: layercas::format::metadata::TimelineMetadata::at(layercas::id::Lsn(0x100)),
        files: sources(&work),
        mode: layercas::write::CheckpointMode::Full,
    };
    let err = writer
        .checkpoint(req, layercas::progress::none())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, layercas::Error::InvalidInput(m) if m.contains("longer than 1024")),
        "{err}"
    );
    let listed = store.timeline_manifests(&TENANT, &TIMELINE).await.unwrap();
    assert!(listed.is_empty());
}

/// An object of up to 1 MiB has the quoted MD5 of its bytes as etag, in listings, heads and
/// gets alike (as S3's single PUTs do), and a new write changes it; a larger one keeps the
/// inode tag.
#[tokio::test]
async fn small_objects_have_md5_etags() {
    use layercas::backend::{BackendExt, Key, Payload, Prefix, PutMode};
    use md5::{Digest, Md5};
    let (_d, dir) = tempdir();
    let b = local_backend(&dir);
    let md5 = |bytes: &[u8]| format!("\"{}\"", hex::encode(Md5::digest(bytes)));
    let (small, large) = (noise(1000, 1), noise((1 << 20) + 1, 2));
    for (name, bytes) in [("s", &small), ("l", &large)] {
        let payload = Payload::from_bytes(bytes::Bytes::from(bytes.clone()));
        b.put(&Key::new(name).unwrap(), payload, PutMode::Create)
            .await
            .unwrap();
    }
    let k = Key::new("s").unwrap();
    let listed = b.list_all(&Prefix::all()).await.unwrap();
    let etag_of = |key: &str| {
        listed
            .iter()
            .find(|m| m.key.as_str() == key)
            .unwrap()
            .etag
            .clone()
    };
    assert_eq!(etag_of("s"), Some(md5(&small)));
    assert_eq!(b.head(&k).await.unwrap().etag, Some(md5(&small)));
    assert_eq!(b.get(&k).await.unwrap().meta.etag, Some(md5(&small)));
    let l = etag_of("l").unwrap();
    assert!(l != md5(&large) && !l.starts_with('"'), "{l}");
    let other = noise(1000, 3);
    let payload = Payload::from_bytes(bytes::Bytes::from(other.clone()));
    b.put(&k, payload, PutMode::Overwrite).await.unwrap();
    assert_eq!(b.head(&k).await.unwrap().etag, Some(md5(&other)));
}
