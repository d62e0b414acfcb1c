//! Helpers shared by the integration tests: stores in temporary directories, deterministic file
//! contents, directory comparison.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod hold_proxy;
#[cfg(feature = "s3")]
pub mod race_rig;
pub mod recording;
#[cfg(feature = "s3")]
pub mod s3server;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layercas::backend::DynBackend;
use layercas::backend::local::LocalBackend;
use layercas::format::config::StoreConfig;
use layercas::format::metadata::TimelineMetadata;
use layercas::id::{Lsn, TenantId, TimelineId};
use layercas::progress;
use layercas::store::Store;
use layercas::write::{CheckpointMode, CheckpointReport, CheckpointRequest, SourceFile, Writer};

pub const TENANT: TenantId = TenantId([0xaa; 16]);
pub const TIMELINE: TimelineId = TimelineId([0xbb; 16]);

/// A local backend in `dir`.
pub fn local_backend(dir: &Path) -> DynBackend {
    Arc::new(LocalBackend::new(dir).expect("local backend"))
}

/// A store with the default configuration in `dir`.
pub async fn local_store(dir: &Path) -> Store {
    Store::open_or_create(local_backend(dir), StoreConfig::default_config())
        .await
        .expect("store")
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` (name → content) under `dir`.
pub fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// Every regular file under `dir` (relative name → bytes), skipping `metadata`.
pub fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                if rel != "metadata" {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    out
}

/// The source-file list of every file under `dir` except `metadata`.
pub fn sources(dir: &Path) -> Vec<SourceFile> {
    read_tree(dir)
        .keys()
        .map(|n| SourceFile {
            name: n.clone(),
            path: dir.join(n),
        })
        .collect()
}

/// Records the files under `dir` as a full checkpoint at `lsn`.
pub async fn checkpoint_dir(writer: &Writer, dir: &Path, lsn: u64) -> CheckpointReport {
    let req = CheckpointRequest {
        tenant: TENANT,
        timeline: TIMELINE,
        metadata: TimelineMetadata::at(Lsn(lsn)),
        files: sources(dir),
        mode: CheckpointMode::Full,
    };
    writer
        .checkpoint(req, progress::none())
        .await
        .expect("checkpoint")
}

/// Copies the store fixture `tests/data/<name>` into `to`.
pub fn copy_fixture(name: &str, to: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    for e in walkdir::WalkDir::new(&fixture).into_iter().flatten() {
        let dest = to.join(e.path().strip_prefix(&fixture).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A fresh temporary directory that lives as long as the returned guard.
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}
