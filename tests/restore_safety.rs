//! Restores that cannot be silently wrong, driven through casctl as a user runs it: a gap in a
//! timeline's manifest chain fails restore and verify; planted symlinks never lead a restore
//! outside its destination; a non-empty destination is refused unless `--overwrite`, which gives
//! exactly the requested state, even after an interrupted restore.
#[path = "common/casctl_json.rs"]
mod casctl_json;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use layercas::backend::Prefix;
use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions};
use layercas::id::Lsn;
use layercas::store::Store;
use layercas::write::Writer;
use layercas::{Error, RestoreOptions, RestorePlan, progress};

use casctl_json::*;
use common::target::Target;
use common::*;

/// Writes layer `i` into `work` (distinct content per layer).
fn add_layer(work: &Path, i: u64) {
    std::fs::write(
        work.join(format!("layer_{i}")),
        noise(60_000 + i as usize, i),
    )
    .unwrap();
}

fn manifest_key(lsn: u64) -> String {
    format!("manifests/{T}/{TL}/{lsn:016X}")
}

/// A deleted middle or first delta manifest: restore fails naming the missing LSN, and verify
/// reports it as an error and exits 1.
#[test]
fn a_gap_in_the_manifest_chain_fails_restore_and_verify() {
    let (_s, store) = tempdir();
    let t = Target::local(&store);
    let (_w, work) = tempdir();
    for (i, lsn) in [(0, "0/10"), (1, "0/20"), (2, "0/30")] {
        add_layer(&work, i);
        json(&checkpoint(&t, &work, lsn));
    }
    assert!(verify(&t).0);
    for (missing, text) in [(0x20, "0/20"), (0x10, "0/10")] {
        let key = manifest_key(missing);
        let saved = t.read(&key);
        std::fs::remove_file(store.join(&key)).unwrap();

        let (_o, out) = tempdir();
        let r = restore(&t, &out, None);
        assert_eq!(r.status.code(), Some(3), "restore must fail");
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(stderr.contains(text), "{stderr}");
        assert!(read_tree(&out).is_empty(), "nothing restored");

        let out = run(t.casctl().args(["--json", "verify"]));
        assert_eq!(out.status.code(), Some(1), "verify exits 1");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let errors = error_messages(&v);
        assert!(
            errors.iter().any(|e| e.contains(&format!("LSN {text}"))),
            "{errors:?}"
        );
        t.write(&key, &saved);
        assert!(verify(&t).0);
    }
}

/// Every entry under `dir` (files, directories, symlinks), relative, with a `/` after directories.
fn all_entries(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                stack.push(p);
            } else {
                out.insert(rel);
            }
        }
    }
    out
}

/// What restoring the files `files` with a metadata file leaves: exactly these entries.
fn expected_entries(files: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = files.keys().cloned().collect();
    for name in files.keys() {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            out.insert(format!("{}/", &name[..at + i]));
            at += i + 1;
        }
    }
    out.insert("metadata".into());
    out
}

/// A destination holding anything is refused (exit 4, nothing changed); with `--overwrite` it
/// ends holding exactly the checkpoint: extra files, directories, stale temporary files and a
/// file where a directory belongs are removed, a wrong file is replaced, the metadata is new.
#[test]
fn a_non_empty_destination_is_refused_and_overwrite_gives_exactly_the_checkpoint() {
    let (_s, store) = tempdir();
    let t = Target::local(&store);
    let (_w, work) = tempdir();
    let mut files = BTreeMap::new();
    files.insert("layer_0".to_string(), noise(70_000, 1));
    files.insert("dir/layer_1".to_string(), noise(90_000, 2));
    files.insert("dir/deep/layer_2".to_string(), noise(50_000, 3));
    write_files(&work, &files);
    json(&checkpoint(&t, &work, "0/10"));
    let (_c, clean) = tempdir();
    json(&restore(&t, &clean, None));

    let (_o, out) = tempdir();
    let mut junk = BTreeMap::new();
    junk.insert("extra".to_string(), b"x".to_vec());
    junk.insert("dir/extra".to_string(), b"y".to_vec());
    junk.insert("layer_0".to_string(), noise(70_000, 99)); // wrong content
    junk.insert("dir/deep/layer_2/inside".to_string(), b"z".to_vec()); // a dir where a file goes
    junk.insert("dir/layer_1_stale/a".to_string(), b"w".to_vec());
    junk.insert(".layercas-0123456789abcdef.tmp".to_string(), b"t".to_vec());
    junk.insert("metadata".to_string(), b"newer metadata".to_vec());
    write_files(&out, &junk);
    std::fs::create_dir(out.join("empty")).unwrap();
    let before = all_entries(&out);

    let refused = restore(&t, &out, None);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "a non-empty destination is refused"
    );
    let err: serde_json::Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert_eq!(err["exit_code"], 4);
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("not empty") && msg.contains("--overwrite"),
        "{msg}"
    );
    assert_eq!(
        all_entries(&out),
        before,
        "a refused restore changes nothing"
    );

    let mut c = t.casctl();
    c.args([
        "--json",
        "restore",
        "--overwrite",
        "--tenant",
        T,
        "--timeline",
        TL,
        "--to",
    ]);
    json(&run(c.arg(&out)));
    assert_eq!(all_entries(&out), expected_entries(&files));
    assert_eq!(read_tree(&out), files);
    assert_eq!(
        std::fs::read(out.join("metadata")).unwrap(),
        std::fs::read(clean.join("metadata")).unwrap()
    );
}

/// A local store holding `files` (written under `work`) as checkpoints, and its writer.
async fn store_with(store_dir: &Path) -> (Store, Writer) {
    let store = local_store(store_dir).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    (store, writer)
}

async fn pack_keys(store: &Store) -> BTreeSet<String> {
    let listed = store.list(&Prefix::new("packs/").unwrap()).await.unwrap();
    listed.into_iter().map(|m| m.key.to_string()).collect()
}

/// The plan of restoring the newest checkpoint into the empty `out` (temporary files created).
async fn plan_newest(store: &Store, out: &Path) -> RestorePlan {
    let index = store.load_index().await.unwrap();
    let state = store.checkpoint_state(&TENANT, &TIMELINE, None).await;
    let opts = RestoreOptions::default();
    store
        .plan_restore(&index, &state.unwrap(), out, opts, &progress::none())
        .unwrap()
}

const OVERWRITE: RestoreOptions = RestoreOptions { overwrite: true };

/// A store holding two files (one in a subdirectory) at 0x10, and a directory outside any
/// destination holding a `victim` file and an empty `outdir`.
struct Planted {
    _dirs: [tempfile::TempDir; 3],
    store: Store,
    files: BTreeMap<String, Vec<u8>>,
    outside: PathBuf,
    victim: PathBuf,
}

impl Planted {
    async fn new() -> Planted {
        let (s, store_dir) = tempdir();
        let (store, writer) = store_with(&store_dir).await;
        let (w, work) = tempdir();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), noise(300_000, 1));
        files.insert("sub/deeper/b".to_string(), noise(200_000, 2));
        write_files(&work, &files);
        checkpoint_dir(&writer, &work, 0x10).await;
        let (x, outside) = tempdir();
        let victim = outside.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::create_dir(outside.join("outdir")).unwrap();
        Planted {
            _dirs: [s, w, x],
            store,
            files,
            outside,
            victim,
        }
    }

    /// Fails unless nothing outside was written or created.
    fn untouched(&self, when: &str) {
        let victim = std::fs::read(&self.victim).unwrap();
        assert!(
            victim == b"precious",
            "{when}: the file outside was written"
        );
        let created: Vec<_> = std::fs::read_dir(self.outside.join("outdir"))
            .unwrap()
            .collect();
        assert!(created.is_empty(), "{when}: created outside: {created:?}");
        assert_eq!(
            std::fs::read_dir(&self.outside).unwrap().count(),
            2,
            "{when}"
        );
    }
}

/// Symlinks planted in the destination at the old predictable temporary names and at a
/// directory component never make a restore write or create anything outside it: without
/// `overwrite` the destination is refused, with it they are removed, not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_planted_before_a_restore_are_not_followed() {
    let p = Planted::new().await;
    let (store, files, victim, outside) = (&p.store, &p.files, &p.victim, &p.outside);
    let (_o, out) = tempdir();
    let old_tmp = format!(".layercas-{}.tmp", &blake3::hash(b"a").to_hex()[..16]);
    symlink(victim, out.join(old_tmp)).unwrap();
    symlink(victim, out.join(".layercas-metadata.tmp")).unwrap();
    symlink(outside.join("outdir"), out.join("sub")).unwrap();
    let err = store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, progress::none())
        .await
        .unwrap_err();
    p.untouched("refused");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    store
        .restore_timeline_with(&TENANT, &TIMELINE, None, &out, OVERWRITE, progress::none())
        .await
        .unwrap();
    p.untouched("overwritten");
    assert_eq!(all_entries(&out), expected_entries(files));
    assert_eq!(&read_tree(&out), files);
}

/// Temporary files swapped for symlinks to a file outside, after the plan created them: the
/// restore fails, naming one, and writes nothing outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_files_swapped_for_symlinks_are_not_followed() {
    let p = Planted::new().await;
    let (store, files, victim) = (&p.store, &p.files, &p.victim);
    let (_o, out) = tempdir();
    let plan = plan_newest(store, &out).await;
    let temps: Vec<_> = all_entries(&out)
        .into_iter()
        .filter(|e| e.contains(".layercas-"))
        .collect();
    assert_eq!(temps.len(), files.len(), "{temps:?}");
    for t in &temps {
        std::fs::remove_file(out.join(t)).unwrap();
        symlink(victim, out.join(t)).unwrap();
    }
    let outcome = store.execute_restore(plan, progress::none()).await;
    p.untouched("swapped");
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains(".layercas-"), "{err}");
}

/// A restore of an older checkpoint over a newer one, cut off by a pack that cannot be read,
/// leaves no metadata beside the files (the newer one is removed first); run again, it leaves
/// exactly the older checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_then_a_rerun_gives_exactly_the_checkpoint() {
    let (_s, store_dir) = tempdir();
    let (store, writer) = store_with(&store_dir).await;
    let (_w, work) = tempdir();
    let mut v10 = BTreeMap::new();
    v10.insert("x".to_string(), noise(250_000, 1));
    write_files(&work, &v10);
    checkpoint_dir(&writer, &work, 0x08).await;
    let first = pack_keys(&store).await;
    v10.insert("d/a1".to_string(), noise(250_000, 2));
    write_files(&work, &v10);
    checkpoint_dir(&writer, &work, 0x10).await;
    let second: Vec<String> = pack_keys(&store)
        .await
        .difference(&first)
        .cloned()
        .collect();
    assert_eq!(second.len(), 1);
    std::fs::remove_dir_all(&work).unwrap();
    let v20 = BTreeMap::from([("d/a2".to_string(), noise(250_000, 3))]);
    write_files(&work, &v20);
    checkpoint_dir(&writer, &work, 0x20).await;

    let (_o, out) = tempdir();
    store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, progress::none())
        .await
        .unwrap();
    assert_eq!(read_tree(&out), v20);
    let faults = FaultConfig {
        broken_prefix: Some(second[0].clone()),
        ..FaultConfig::none()
    };
    let broken = Store::open(Arc::new(FaultBackend::new(
        local_backend(&store_dir),
        faults,
    )))
    .await
    .unwrap();
    let at = Some(Lsn(0x10));
    let err = broken
        .restore_timeline_with(&TENANT, &TIMELINE, at, &out, OVERWRITE, progress::none())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(
        !out.join("metadata").exists(),
        "the newer metadata stayed beside older files"
    );
    for (name, data) in read_tree(&out) {
        assert_eq!(
            v10.get(&name),
            Some(&data),
            "{name} is not the older checkpoint's"
        );
    }

    store
        .restore_timeline_with(&TENANT, &TIMELINE, at, &out, OVERWRITE, progress::none())
        .await
        .unwrap();
    assert_eq!(all_entries(&out), expected_entries(&v10));
    assert_eq!(read_tree(&out), v10);
    let metadata = TimelineMetadata::at(Lsn(0x10)).to_file_bytes();
    assert_eq!(std::fs::read(out.join("metadata")).unwrap(), metadata);
}

/// gc repacks the pack a planned restore reads (between the plan and the reads): the restore
/// finds it gone, reloads the index, and reads the chunks from their new pack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_repacked_after_the_plan_is_read_from_its_new_place() {
    let (_s, store_dir) = tempdir();
    let (store, writer) = store_with(&store_dir).await;
    let (_w, work) = tempdir();
    let keep = BTreeMap::from([("keep".to_string(), noise(200_000, 1))]);
    write_files(&work, &keep);
    write_files(
        &work,
        &BTreeMap::from([("drop".to_string(), noise(3 << 20, 2))]),
    );
    checkpoint_dir(&writer, &work, 0x10).await;
    std::fs::remove_file(work.join("drop")).unwrap();
    checkpoint_dir(&writer, &work, 0x20).await;
    let before = pack_keys(&store).await;
    assert_eq!(before.len(), 1);

    let (_o, out) = tempdir();
    let plan = plan_newest(&store, &out).await;
    let mut gc_opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
    gc_opts.window = Duration::ZERO;
    gc_opts.repack_threshold = 0.9;
    gc::run(&store, &gc_opts, progress::none()).await.unwrap();
    let after = pack_keys(&store).await;
    assert!(
        after.is_disjoint(&before),
        "gc repacked the pack: {before:?} {after:?}"
    );

    let report = store.execute_restore(plan, progress::none()).await.unwrap();
    assert_eq!(read_tree(&out), keep);
    assert_eq!(
        report.range_reads, 2,
        "the planned read, then the retried one"
    );
}

/// A manifest whose file hash its chunks do not reproduce (what a file changed between two reads
/// used to record) fails the restore, naming the file, and leaves nothing under its name and no
/// temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_hash_its_chunks_do_not_reproduce_fails_the_restore() {
    use layercas::backend::BackendExt;
    use layercas::format::layout;
    use layercas::format::manifest::Manifest;
    let (_s, store_dir) = tempdir();
    let (store, writer) = store_with(&store_dir).await;
    let (_w, work) = tempdir();
    let files = BTreeMap::from([("f".to_string(), noise(400_000, 5))]);
    write_files(&work, &files);
    checkpoint_dir(&writer, &work, 0x10).await;
    let state = store.checkpoint_state(&TENANT, &TIMELINE, None).await;
    let mut entry = state.unwrap().files["f"].clone();
    entry.name = "g".into();
    entry.hash.0[0] ^= 1;
    let m = Manifest {
        tenant: TENANT,
        timeline: TIMELINE,
        lsn: Lsn(0x20),
        prev_lsn: Some(Lsn(0x10)),
        metadata: TimelineMetadata::at(Lsn(0x20)),
        added: vec![entry],
        removed: vec![],
        base: false,
        dropped_from: None,
    };
    let key = layout::manifest_key(&TENANT, &TIMELINE, Lsn(0x20));
    let backend = store.backend();
    backend.create_bytes(&key, m.encode().into()).await.unwrap();

    let (_o, out) = tempdir();
    let err = store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, progress::none())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"g\"") && msg.contains("recorded hash"),
        "{msg}"
    );
    let left = all_entries(&out);
    assert!(
        !left.contains("g") && !left.contains("metadata"),
        "{left:?}"
    );
    assert!(left.iter().all(|e| !e.contains(".layercas")), "{left:?}");
}
