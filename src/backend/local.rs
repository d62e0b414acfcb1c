//! Local-filesystem backend: one file per object under a root directory.
//!
//! Owns the mapping of keys to paths and the atomicity rules on a POSIX filesystem. Must not
//! retry, count or inject faults (wrappers do that).
//!
//! - Every write goes to a unique, locked staging file in `<root>/.staging/` (see `staging`), is
//!   fsynced, then moved into place by `rename` (overwrite) or `link` (create: fails atomically
//!   with `EEXIST`, also against other processes), and the parent directory is fsynced. A crash
//!   leaves at most a staging file, which no key can name and which listings skip; the first
//!   write of each opened backend removes such leftovers (never a live writer's file).
//! - [`LocalBackend::open`] writes nothing, so a read-only store can be listed and read; only
//!   [`LocalBackend::new`] creates the root directory.
//! - An object of up to 1 MiB carries the MD5 of its bytes in a user attribute, and its etag is
//!   that MD5, as S3's is for an object written by one PUT; other objects (or a filesystem
//!   without user attributes) get a tag of inode, change time and size. Only gc's cache compares
//!   etags with content, and it copies nothing larger; packs, mostly larger, skip the hashing.
//! - `Update(etag)` holds an exclusive advisory lock (`File::lock`) on `<root>/.lock` while it
//!   compares and renames, so updates from several processes serialise.
//! - A key can never resolve outside the root: keys cannot hold `..` or start with `/`, and every
//!   resolved path is checked to stay under the root after symlinks are followed.

use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use rustix::fs::XattrFlags;
use tokio::io::AsyncWriteExt;

use super::{Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode};

mod staging;

pub use staging::{STAGING_DIR, StagingReport};

/// Lock file serialising conditional updates.
const LOCK_FILE: &str = ".lock";
/// The user attribute holding the MD5 (hex) of an object's bytes, set when it is written.
const MD5_XATTR: &str = "user.layercas.md5";
/// Objects up to this size get an MD5 etag, as S3 gives an object written by one PUT (gc uses
/// it to prove that its copy of a manifest is the listed object, and copies none larger).
/// Larger ones are not hashed: MD5 of a 4 MiB pack was a quarter of its upload.
pub(crate) const MD5_ETAG_MAX: u64 = 1 << 20;
/// Bytes gathered before each write of an object's staging file.
const WRITE_BUFFER: usize = 1 << 20;

/// A store in a local directory.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Set once this backend swept the staging directory (on its first write).
    swept: Arc<AtomicBool>,
}

impl LocalBackend {
    /// Opens a store rooted at `root`, creating the directory if needed.
    pub fn new(root: impl AsRef<Path>) -> io::Result<LocalBackend> {
        std::fs::create_dir_all(root.as_ref())?;
        LocalBackend::open(root)
    }

    /// Opens the store rooted at `root`, which must be an existing directory. Writes nothing:
    /// a store the caller may only read can be listed and read.
    pub fn open(root: impl AsRef<Path>) -> io::Result<LocalBackend> {
        let given = root.as_ref();
        let not_a_store = |what: &str| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("store directory {} {what}", given.display()),
            )
        };
        match std::fs::metadata(given) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Err(not_a_store("is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_a_store(
                    "does not exist (`casctl init` creates a store)",
                ));
            }
            Err(e) => return Err(e),
        }
        Ok(LocalBackend {
            root: given.canonicalize()?,
            swept: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Counts the staging files of the store at `root`: live writers' and leftovers of writers
    /// that are gone (format-spec section 14.3). Changes nothing.
    pub fn staging_report(root: impl AsRef<Path>) -> io::Result<StagingReport> {
        staging::inspect(root.as_ref())
    }

    /// Removes the staging leftovers of writers that are gone, once per backend.
    async fn sweep_once(&self) {
        if self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let root = self.root.clone();
        match tokio::task::spawn_blocking(move || staging::sweep(&root)).await {
            Ok(Ok(r)) if r.removed_files > 0 => {
                tracing::info!(
                    files = r.removed_files,
                    bytes = r.removed_bytes,
                    "removed staging leftovers of writers that are gone"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("sweeping {}: {e}", self.root.join(STAGING_DIR).display()),
            Err(e) => tracing::warn!("sweeping the staging directory: {e}"),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// `path` after following symlinks, refused if it leaves the root.
    fn contained(&self, key: &Key, path: &Path) -> Result<PathBuf, BackendError> {
        let real = path
            .canonicalize()
            .map_err(|e| io_error("resolve", key, e))?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            let e = io::Error::new(
                io::ErrorKind::PermissionDenied,
                "path leaves the store root",
            );
            Err(BackendError::other("resolve", key, e))
        }
    }

    /// The path of an existing object, checked to stay under the root.
    fn existing(&self, key: &Key) -> Result<PathBuf, BackendError> {
        self.contained(key, &self.path_of(key))
    }

    /// Writes `payload` to a fresh staging file and fsyncs it. Returns its path and the file
    /// holding its lock, to be kept until the staging name is gone.
    async fn stage(
        &self,
        key: &Key,
        payload: &Payload,
    ) -> Result<(PathBuf, std::fs::File), BackendError> {
        let (staging, lock) =
            staging::create(&self.root).map_err(|e| io_error("create staging file", key, e))?;
        let result = async {
            // Buffered: a pack's payload is one piece per blob, and each write of a tokio file
            // is a trip to the blocking pool.
            let file = tokio::fs::File::from_std(lock.try_clone()?);
            let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut body = payload.stream();
            let mut written = 0u64;
            let mut md5 = (payload.len() <= MD5_ETAG_MAX).then(Md5::new);
            while let Some(piece) = body.try_next().await.map_err(io::Error::other)? {
                file.write_all(&piece).await?;
                written += piece.len() as u64;
                if let Some(h) = &mut md5 {
                    h.update(&piece);
                }
            }
            if written != payload.len() {
                return Err(io::Error::other(format!(
                    "payload gave {written} bytes, expected {}",
                    payload.len()
                )));
            }
            if let Some(h) = md5 {
                // Where the filesystem has no user attributes, the etag stays the inode's.
                let hex = hex::encode(h.finalize());
                let _ =
                    rustix::fs::fsetxattr(&lock, MD5_XATTR, hex.as_bytes(), XattrFlags::empty());
            }
            file.flush().await?;
            file.get_ref().sync_all().await
        }
        .await;
        match result {
            Ok(()) => Ok((staging, lock)),
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                Err(io_error("write", key, e))
            }
        }
    }

    /// Makes sure the parent directory of `key` exists inside the root; returns the final path.
    fn prepare_parent(&self, key: &Key) -> Result<PathBuf, BackendError> {
        let path = self.path_of(key);
        let parent = path.parent().expect("a key path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| io_error("create directory", key, e))?;
        self.contained(key, parent)?;
        Ok(path)
    }

    fn commit(&self, key: &Key, staging: &Path, mode: &PutMode) -> Result<(), BackendError> {
        let path = self.prepare_parent(key)?;
        match mode {
            PutMode::Overwrite => {
                std::fs::rename(staging, &path).map_err(|e| io_error("rename", key, e))?
            }
            PutMode::Create => {
                let linked = std::fs::hard_link(staging, &path);
                let _ = std::fs::remove_file(staging);
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(BackendError::AlreadyExists {
                            key: key.to_string(),
                        });
                    }
                    Err(e) => return Err(io_error("link", key, e)),
                }
            }
            PutMode::Update(etag) => {
                let _lock = FileLock::exclusive(&self.root.join(LOCK_FILE))
                    .map_err(|e| io_error("lock", key, e))?;
                let current = std::fs::metadata(&path).map_err(|e| io_error("stat", key, e))?;
                if &etag_of(&path, &current) != etag {
                    let _ = std::fs::remove_file(staging);
                    return Err(BackendError::PreconditionFailed {
                        key: key.to_string(),
                    });
                }
                std::fs::rename(staging, &path).map_err(|e| io_error("rename", key, e))?;
            }
        }
        sync_dir(path.parent().expect("parent")).map_err(|e| io_error("fsync directory", key, e))
    }

    fn meta_of(&self, key: Key, path: &Path, md: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            key,
            size: md.len(),
            last_modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            etag: Some(etag_of(path, md)),
        }
    }

    /// Walks the directories under the root that can hold keys starting with `prefix`.
    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackendError> {
        // Start at the deepest directory the prefix names in full.
        let start_dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![start_dir];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BackendError::other("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| BackendError::other("list", prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let rel = path
                    .strip_prefix(&self.root)
                    .expect("walk stays under root");
                let Some(rel) = rel.to_str() else { continue };
                let ft = entry
                    .file_type()
                    .map_err(|e| BackendError::other("list", prefix, e))?;
                if ft.is_dir() {
                    // Descend only where keys with the prefix can be.
                    let as_dir = format!("{rel}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    let Ok(key) = Key::new(rel) else { continue };
                    match entry.metadata() {
                        Ok(md) => out.push(self.meta_of(key, &path, &md)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(BackendError::other("list", prefix, e)),
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let this = self.clone();
        let prefix = prefix.as_str().to_string();
        let listed = async move {
            let items = tokio::task::spawn_blocking(move || this.list_blocking(&prefix))
                .await
                .map_err(|e| BackendError::other("list", "", e))??;
            Ok::<_, BackendError>(stream::iter(items.into_iter().map(Ok)))
        };
        stream::once(listed).try_flatten().boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        if let PutMode::Create = mode {
            // Cheap early answer; the link below is what makes it atomic.
            if tokio::fs::symlink_metadata(self.path_of(key)).await.is_ok() {
                return Err(BackendError::AlreadyExists {
                    key: key.to_string(),
                });
            }
        }
        self.sweep_once().await;
        let (staging, lock) = self.stage(key, &payload).await?;
        let (this, key2) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            let result = this.commit(&key2, &staging, &mode);
            if result.is_err() {
                let _ = std::fs::remove_file(&staging);
            }
            // The staging name is gone: the lock may go.
            drop(lock);
            result
        })
        .await
        .map_err(|e| BackendError::other("put", key, e))?
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let path = self.existing(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error("open", key, e))?;
        let md = file
            .metadata()
            .await
            .map_err(|e| io_error("stat", key, e))?;
        let meta = self.meta_of(key.clone(), &path, &md);
        let body = super::read_stream(file, md.len(), key.to_string());
        Ok(GetResult { meta, body })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        use std::os::unix::fs::FileExt;
        let path = self.existing(key)?;
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| io_error("open", &key, e))?;
            let size = file
                .metadata()
                .map_err(|e| io_error("stat", &key, e))?
                .len();
            let range = super::checked_range(&key, range, size)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start)
                .map_err(|e| io_error("read", &key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| BackendError::other("get_range", "", e))?
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        let path = self.existing(key)?;
        let md = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_error("stat", key, e))?;
        if !md.is_file() {
            return Err(BackendError::NotFound {
                key: key.to_string(),
            });
        }
        Ok(self.meta_of(key.clone(), &path, &md))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let path = self.path_of(key);
        match tokio::fs::symlink_metadata(&path).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        let path = self.existing(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", key, e)),
        }
    }
}

/// Maps an I/O error on `key` to a backend error; a missing file is `NotFound`.
fn io_error(op: &'static str, key: impl std::fmt::Display, e: io::Error) -> BackendError {
    if e.kind() == io::ErrorKind::NotFound {
        BackendError::NotFound {
            key: key.to_string(),
        }
    } else {
        BackendError::other(op, key, e)
    }
}

/// The object's etag: the quoted MD5 of its bytes when it was written with one (as S3's etag of
/// a single PUT), otherwise a version tag that changes whenever the file is replaced: inode,
/// change time and size.
fn etag_of(path: &Path, md: &std::fs::Metadata) -> String {
    let mut md5 = [0u8; 32];
    if let Ok(32) = rustix::fs::getxattr(path, MD5_XATTR, &mut md5)
        && md5.iter().all(u8::is_ascii_hexdigit)
    {
        return format!("\"{}\"", String::from_utf8_lossy(&md5));
    }
    format!(
        "{:x}-{:x}.{:x}-{:x}",
        md.ino(),
        md.ctime(),
        md.ctime_nsec(),
        md.len()
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// An exclusive advisory lock on a file (`std::fs::File::lock`: `flock` on Unix), released on
/// drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.lock()?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first says so explicitly.
        let _ = self.0.unlock();
    }
}
