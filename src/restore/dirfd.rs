//! Directory handles for restore: every path below the destination is reached from an opened
//! directory one component at a time, never through a symbolic link, and every file restore
//! creates is created relative to such a handle with `O_CREAT|O_EXCL|O_NOFOLLOW` under an
//! unpredictable name. A symlink planted at a directory component or at a temporary name makes the
//! operation fail; it is never followed.
//!
//! Owns the system calls (through rustix) on the destination tree. Must not know chunks, packs or
//! manifests.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::format::manifest::RESERVED_PREFIX;

/// Times a temporary name is drawn again when it exists already.
const NAME_ATTEMPTS: usize = 8;

/// An opened directory of the destination tree, with its path for messages.
#[derive(Debug)]
pub(crate) struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

/// A file restore created: its name in its directory and the inode it got, so that a reopen can
/// tell it from anything renamed over that name since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Created {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

fn io(op: &'static str, path: impl Into<PathBuf>, e: Errno) -> Error {
    Error::io(op, path, e.into())
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl DirHandle {
    /// Opens the destination `to`, creating it (and its parents) if missing. `to` itself is the
    /// caller's choice and may be reached through symlinks; nothing below it is.
    pub(crate) fn open_root(to: &Path) -> Result<DirHandle> {
        std::fs::create_dir_all(to).map_err(|e| Error::io("create directory", to, e))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(to, flags, Mode::empty()).map_err(|e| io("open", to, e))?;
        Ok(DirHandle {
            fd,
            path: to.to_path_buf(),
        })
    }

    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the subdirectory `name`, creating it when `create` and it is missing. A symlink or a
    /// non-directory there is an error naming it.
    pub(crate) fn child(&self, name: impl AsRef<OsStr>, create: bool) -> Result<DirHandle> {
        let name = name.as_ref();
        let path = self.path.join(name);
        for _ in 0..2 {
            match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => return Ok(DirHandle { fd, path }),
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => continue,
                        Err(e) => return Err(io("create directory", path, e)),
                    }
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(Error::io(
                        "open directory",
                        path,
                        std::io::Error::other(
                            "it is a symbolic link or not a directory; restore does not follow it",
                        ),
                    ));
                }
                Err(e) => return Err(io("open directory", path, e)),
            }
        }
        Err(io("open directory", path, Errno::NOENT))
    }

    /// Creates a new temporary file under an unpredictable name, refusing anything already there
    /// (a symlink included). Returns its name, the open file and its identity.
    pub(crate) fn create_temp(&self) -> Result<(String, File, Created)> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..NAME_ATTEMPTS {
            let name = temp_name();
            match rustix::fs::openat(&self.fd, &name, flags, Mode::from_raw_mode(0o644)) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let created =
                        identity(&file).map_err(|e| Error::io("stat", self.path.join(&name), e))?;
                    return Ok((name, file, created));
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io("create", self.path.join(&name), e)),
            }
        }
        Err(io(
            "create",
            self.path.join(".layercas-*.tmp"),
            Errno::EXIST,
        ))
    }

    /// Reopens a file this restore created, for writing; fails if `name` is no longer that file.
    pub(crate) fn reopen(&self, name: &str, created: Created) -> Result<File> {
        let path = self.path.join(name);
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .map_err(|e| io("open", &path, e))?;
        let file = File::from(fd);
        match identity(&file) {
            Ok(id) if id == created => Ok(file),
            Ok(_) => Err(Error::io(
                "open",
                path,
                std::io::Error::other("the temporary file was replaced by another"),
            )),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Opens `name` for reading if it is a regular file (not through a symlink).
    pub(crate) fn open_regular(&self, name: &str) -> Option<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).ok()?;
        let file = File::from(fd);
        file.metadata().ok()?.is_file().then_some(file)
    }

    /// Renames `from` to `to`, both in this directory.
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| io("rename", self.path.join(to), e))
    }

    /// Removes the file (or empty directory, with `dir`) `name`; a missing one is no error.
    pub(crate) fn remove(&self, name: impl AsRef<OsStr>, dir: bool) -> Result<()> {
        let name = name.as_ref();
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&self.fd, name, flags) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io("remove", self.path.join(name), e)),
        }
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| io("fsync directory", &self.path, e))
    }

    /// Makes everything written to the directory's filesystem durable (`syncfs`); fails when any
    /// writeback on it failed since this handle was opened (Linux 5.8 and later report that).
    pub(crate) fn sync_filesystem(&self) -> Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(|e| io("syncfs", &self.path, e))
    }

    /// The entries of the directory (without `.` and `..`), each with whether it is a directory
    /// itself (a symlink to one is not).
    pub(crate) fn entries(&self) -> Result<Vec<(OsString, bool)>> {
        let mut dir =
            rustix::fs::Dir::read_from(&self.fd).map_err(|e| io("list", &self.path, e))?;
        let mut out = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.map_err(|e| io("list", &self.path, e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Unknown => rustix::fs::statat(&self.fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                    .map_err(|e| io("stat", self.path.join(&name), e))?,
                t => t == FileType::Directory,
            };
            out.push((name, is_dir));
        }
        Ok(out)
    }
}

fn identity(file: &File) -> std::io::Result<Created> {
    let m = file.metadata()?;
    Ok(Created {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// `.layercas-<32 hex digits>.tmp`, from a random number and the process-unique bytes: nobody
/// can plant anything at it in advance, and no two calls return the same name.
fn temp_name() -> String {
    let unique = crate::id::unique_bytes();
    let mixed = fastrand::u128(..) ^ u128::from_le_bytes(unique[..16].try_into().expect("16"));
    format!("{RESERVED_PREFIX}-{mixed:032x}.tmp")
}
