//! How `tests/sync.rs` runs the sync loop: its remote configuration (short backoffs), starting
//! it over a local or given backend, reading a workdir back (metadata included) and copying
//! workdirs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use layercas::sync::{
    RemoteStorageConfig, RemoteStorageKind, StateBoard, SyncHandle, TimelineSyncState,
    start_with_backend,
};

use crate::common::{local_backend, read_tree};

pub fn remote(store: &Path) -> RemoteStorageConfig {
    let mut r = RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: store.to_path_buf(),
    });
    r.base_backoff = Duration::from_millis(10);
    r.max_backoff = Duration::from_millis(200);
    r
}

pub type Started = (
    Arc<StateBoard>,
    BTreeMap<layercas::sync::TimelineKey, TimelineSyncState>,
    SyncHandle,
);

pub async fn start(workdir: &Path, store: &Path) -> Started {
    start_on(workdir, store, local_backend(store)).await
}

/// Starts the loop over `backend` (`store` only names it in the configuration).
pub async fn start_on(
    workdir: &Path,
    store: &Path,
    backend: layercas::backend::DynBackend,
) -> Started {
    let board = Arc::new(StateBoard::default());
    let r = remote(store);
    let startup = start_with_backend(workdir.to_path_buf(), &r, backend, board.clone())
        .await
        .expect("startup");
    (board, startup.states, startup.handle.expect("loop runs"))
}

/// Every file under a directory with its bytes (metadata included).
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = read_tree(dir);
    for (k, v) in read_tree_with_metadata(dir) {
        out.insert(k, v);
    }
    out
}

pub fn read_tree_with_metadata(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() == "metadata" {
                out.push((
                    p.strip_prefix(dir).unwrap().to_str().unwrap().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out
}

pub fn copy_with_new_tenants(from: &Path, to: &Path) {
    for t in std::fs::read_dir(from.join("tenants")).unwrap() {
        let t = t.unwrap();
        let name = t.file_name().into_string().unwrap();
        let flipped: String = name.chars().rev().collect();
        copy_dir(&t.path(), &to.join("tenants").join(flipped));
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A `[remote_storage]` section for a local store, metadata in the pageserver's format, short
/// backoffs.
pub fn pageserver_toml(store: &Path) -> String {
    format!(
        "[remote_storage]\nlocal_path = {:?}\nmetadata_format = \"pageserver\"\n\
         base_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n",
        store.to_str().unwrap()
    )
}

/// A backend that panics on the first write under `prefix` and passes everything else through:
/// a bug inside a sync task, on purpose.
#[derive(Debug)]
pub struct PanicOnce {
    pub inner: layercas::backend::DynBackend,
    pub prefix: String,
    pub fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl layercas::backend::Backend for PanicOnce {
    fn list(
        &self,
        prefix: &layercas::backend::Prefix,
    ) -> futures::stream::BoxStream<
        'static,
        Result<layercas::backend::ObjectMeta, layercas::backend::BackendError>,
    > {
        self.inner.list(prefix)
    }
    async fn put(
        &self,
        key: &layercas::backend::Key,
        payload: layercas::backend::Payload,
        mode: layercas::backend::PutMode,
    ) -> Result<(), layercas::backend::BackendError> {
        if key.as_str().starts_with(&self.prefix)
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("injected panic writing {}", key.as_str());
        }
        self.inner.put(key, payload, mode).await
    }
    async fn get(
        &self,
        key: &layercas::backend::Key,
    ) -> Result<layercas::backend::GetResult, layercas::backend::BackendError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &layercas::backend::Key,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, layercas::backend::BackendError> {
        self.inner.get_range(key, range).await
    }
    async fn head(
        &self,
        key: &layercas::backend::Key,
    ) -> Result<layercas::backend::ObjectMeta, layercas::backend::BackendError> {
        self.inner.head(key).await
    }
    async fn delete(
        &self,
        key: &layercas::backend::Key,
    ) -> Result<(), layercas::backend::BackendError> {
        self.inner.delete(key).await
    }
}
