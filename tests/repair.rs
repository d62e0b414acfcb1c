//! Store repair and gc's guards, through `casctl`: `repair index` after a lost index object,
//! gc refusing to delete while referenced chunks are missing (`--allow-missing`), stale intents
//! and `--clear-intents`, gc flag bounds, and verify's view of superseded manifests and broken
//! manifest chains.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layercas::backend::{BackendExt, Key};
use layercas::format::layout;
use layercas::gc::intents::Intent;
use layercas::id::{Lsn, PackId};
use serde_json::Value;

use common::*;

fn casctl(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casctl"));
    c.env_remove("LAYERCAS_STORE").arg("--store").arg(store);
    c
}

fn json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "casctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_json(store: &Path, args: &[&str]) -> Value {
    json(casctl(store).arg("--json").args(args).output().unwrap())
}

/// Checkpoints of `n` versions at LSNs 0/100, 0/110, ...: a shared file and one of each's own.
fn checkpoints(root: &Path, store: &Path, n: u64) -> Vec<PathBuf> {
    (0..n).map(|i| checkpoint(root, store, i)).collect()
}

/// Checkpoint `i`: the files `keep` (the same in every checkpoint) and `f<i>` (new data).
fn checkpoint(root: &Path, store: &Path, i: u64) -> PathBuf {
    let dir = root.join(format!("c{i}"));
    let mut files = BTreeMap::new();
    files.insert("keep".to_string(), noise(200_000, 9));
    files.insert(format!("f{i}"), noise(300_000, i));
    write_files(&dir, &files);
    let lsn = lsn(i);
    let (tenant, timeline) = (TENANT.to_string(), TIMELINE.to_string());
    let args = [
        "checkpoint",
        "--tenant",
        &tenant,
        "--timeline",
        &timeline,
        "--lsn",
        &lsn,
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.push(dir.to_str().unwrap());
    run_json(store, &args);
    dir
}

fn lsn(i: u64) -> String {
    format!("0/{:X}", 0x100 + i * 0x10)
}

/// Verify's exit status and report.
fn verify(store: &Path) -> (bool, Value) {
    let out = casctl(store)
        .args(["--json", "verify", "--read-data"])
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

fn messages(v: &Value, severity: &str) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["severity"] == severity)
        .map(|p| format!("{}: {}", p["key"], p["message"]))
        .collect()
}

/// The files of the store under `prefix` (its keys, as the local backend lays them out).
fn files_under(store: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![store.join(prefix)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn restore_matches(store: &Path, root: &Path, expected: &Path) {
    let to = root.join("restored");
    let _ = std::fs::remove_dir_all(&to);
    run_json(
        store,
        &[
            "restore",
            "--tenant",
            &TENANT.to_string(),
            "--timeline",
            &TIMELINE.to_string(),
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_eq!(read_tree(&to), read_tree(expected));
}

/// A lost index object: verify reports missing chunks, gc keeps the packs that still hold them
/// (their own tables name the chunks), `repair index` adopts them, and verify and restore work.
#[test]
fn repair_index_rebuilds_a_lost_index_object() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    let dirs = checkpoints(&root, &store, 3);
    let indexes = files_under(&store, layout::INDEX);
    assert!(!indexes.is_empty());
    for f in &indexes {
        std::fs::remove_file(f).unwrap();
    }
    let (ok, v) = verify(&store);
    assert!(!ok);
    assert!(
        messages(&v, "error")
            .iter()
            .any(|m| m.contains("in no existing pack of any index object")),
        "{v}"
    );
    // gc finds the chunks in the packs' own tables, so it neither refuses nor deletes them.
    let packs = files_under(&store, layout::PACKS).len();
    run_json(&store, &["gc"]);
    assert_eq!(files_under(&store, layout::PACKS).len(), packs);

    let dry = run_json(&store, &["repair", "index", "--dry-run"]);
    assert_eq!(dry["packs_adopted"].as_array().unwrap().len(), packs);
    assert!(dry["index_objects_written"].as_array().unwrap().is_empty());
    assert!(files_under(&store, layout::INDEX).is_empty());
    let r = run_json(&store, &["repair", "index"]);
    assert_eq!(r["packs_adopted"].as_array().unwrap().len(), packs);
    assert_eq!(r["packs_skipped"].as_array().unwrap().len(), 0);
    assert_eq!(r["index_objects_written"].as_array().unwrap().len(), 1);
    let (ok, v) = verify(&store);
    assert!(ok && messages(&v, "error").is_empty(), "{v}");
    restore_matches(&store, &root, &dirs[2]);
    // Nothing left to adopt.
    let again = run_json(&store, &["repair", "index"]);
    assert!(again["packs_adopted"].as_array().unwrap().is_empty());
}

/// A damaged unindexed pack is skipped and reported; the others are adopted.
#[test]
fn repair_index_skips_damaged_packs() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    checkpoints(&root, &store, 2);
    for f in files_under(&store, layout::INDEX) {
        std::fs::remove_file(f).unwrap();
    }
    let packs = files_under(&store, layout::PACKS);
    let data = std::fs::read(&packs[0]).unwrap();
    std::fs::write(&packs[0], &data[..data.len() / 2]).unwrap();
    let r = run_json(&store, &["repair", "index"]);
    let skipped = r["packs_skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert_eq!(
        r["packs_adopted"].as_array().unwrap().len(),
        packs.len() - 1
    );
    let text = casctl(&store).args(["repair", "index"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("skipped damaged pack"));
}

/// A chunk a kept manifest references that is in no pack at all: gc refuses (naming the count,
/// the chunk and the manifest) unless told `--allow-missing`.
#[test]
fn gc_refuses_to_delete_while_referenced_chunks_are_missing() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    checkpoints(&root, &store, 2);
    let before = files_under(&store, layout::PACKS);
    checkpoint(&root, &store, 2);
    for f in files_under(&store, layout::INDEX) {
        std::fs::remove_file(f).unwrap();
    }
    let packs = files_under(&store, layout::PACKS);
    // A pack of the last checkpoint: it holds `f2`, which the kept checkpoint needs.
    let newest = packs.iter().find(|p| !before.contains(p)).unwrap();
    std::fs::remove_file(newest).unwrap();
    let out = casctl(&store)
        .args(["gc", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gc refuses to delete") && err.contains("chunk") && err.contains("manifests/"),
        "{err}"
    );
    assert_eq!(files_under(&store, layout::PACKS).len(), packs.len() - 1);
    assert_eq!(
        files_under(&store, layout::MANIFESTS).len(),
        3,
        "nothing deleted"
    );
    let r = run_json(&store, &["gc", "--keep-last", "1", "--allow-missing"]);
    assert!(r["chunks_missing"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["manifests_deleted"], 2);
}

/// A stale intent (its manifest never came) keeps the packs it names through gc;
/// `gc --clear-intents` deletes it, and that gc reclaims them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_intents_keep_packs_until_cleared() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    let s2 = store.clone();
    let r2 = root.clone();
    tokio::task::spawn_blocking(move || checkpoints(&r2, &s2, 3))
        .await
        .unwrap();
    let packs: Vec<PackId> = files_under(&store, layout::PACKS)
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&store)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            layout::parse_pack_key(&Key::new(rel).unwrap()).unwrap()
        })
        .collect();
    let intent = Intent::new(TENANT, TIMELINE, Lsn(0x9999), packs.clone());
    let key: Key = layout::intent_key(&[7; 32]);
    local_backend(&store)
        .create_bytes(&key, intent.encode().into())
        .await
        .unwrap();
    let s2 = store.clone();
    let r = tokio::task::spawn_blocking(move || {
        run_json(&s2, &["gc", "--keep-last", "1", "--window-ms", "0"])
    })
    .await
    .unwrap();
    assert_eq!(r["manifests_deleted"], 2, "{r}");
    let present = |p: &PackId| store.join(layout::pack_key(p).as_str()).exists();
    assert!(
        packs.iter().all(present),
        "the intent keeps every pack it names: {r}"
    );
    assert_eq!(files_under(&store, layout::INTENTS).len(), 1);
    let s2 = store.clone();
    let r = tokio::task::spawn_blocking(move || {
        run_json(
            &s2,
            &[
                "gc",
                "--keep-last",
                "1",
                "--clear-intents",
                "--window-ms",
                "0",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(r["intents_cleared"], 1, "{r}");
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    assert!(!packs.iter().all(present), "{r}");
    assert!(files_under(&store, layout::INTENTS).is_empty());
    let (ok, v) = verify(&store);
    assert!(ok, "{v}");
}

/// Out-of-bounds gc flags are usage errors (exit 2) naming the flag, refused before the store
/// is touched.
#[test]
fn gc_flags_out_of_bounds_are_usage_errors() {
    let (_d, root) = tempdir();
    let store = root.join("no-store-here");
    for (args, names) in [
        (&["--window-ms", "86400001"][..], "--window-ms"),
        (&["--repack-threshold", "1.5"][..], "--repack-threshold"),
        (&["--repack-threshold=-0.1"][..], "--repack-threshold"),
        (&["--keep-last", "0"][..], "--keep-last"),
    ] {
        let out = casctl(&store).arg("gc").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert!(!store.exists());
    let out = casctl(&store)
        .args(["--json", "gc", "--window-ms", "86400001"])
        .output()
        .unwrap();
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["exit_code"], 2);
}

/// A manifest that a late create brought back after gc deleted it lies below the newest base
/// with its predecessor gone: a warning, and the next gc removes it.
#[test]
fn a_superseded_manifest_is_a_warning_and_the_next_gc_removes_it() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    let dirs = checkpoints(&root, &store, 3);
    let manifests = files_under(&store, layout::MANIFESTS);
    assert_eq!(manifests.len(), 3);
    let late = (manifests[1].clone(), std::fs::read(&manifests[1]).unwrap());
    run_json(&store, &["gc", "--keep-last", "1"]);
    assert_eq!(files_under(&store, layout::MANIFESTS).len(), 1);
    std::fs::write(&late.0, &late.1).unwrap();
    let (ok, v) = verify(&store);
    assert!(ok, "a superseded manifest is no error: {v}");
    let warnings = messages(&v, "warning");
    assert!(
        warnings.iter().any(|w| w.contains("superseded manifest")
            && w.contains("late create")
            && w.contains("the next gc removes it")),
        "{warnings:?}"
    );
    let r = run_json(&store, &["gc", "--keep-last", "1"]);
    assert_eq!(r["manifests_deleted"], 1, "{r}");
    assert_eq!(files_under(&store, layout::MANIFESTS).len(), 1);
    let (ok, v) = verify(&store);
    assert!(ok && !format!("{v}").contains("superseded"), "{v}");
    restore_matches(&store, &root, &dirs[2]);
}

/// A manifest missing from the middle of a chain at or above the newest base is an error naming
/// the missing LSN; verify exits 1.
#[test]
fn a_broken_chain_above_the_newest_base_is_an_error_naming_the_lsn() {
    let (_d, root) = tempdir();
    let store = root.join("store");
    checkpoints(&root, &store, 3);
    let manifests = files_under(&store, layout::MANIFESTS);
    std::fs::remove_file(&manifests[1]).unwrap();
    let out = casctl(&store).args(["--json", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = messages(&v, "error");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("manifest chain broken") && e.contains(&lsn(1))),
        "{errors:?}"
    );
}
