//! The pageserver's local workdir as the sync loop sees it:
//! `tenants/<tenant>/timelines/<timeline>/` with a `metadata` file and layer files.
//!
//! Owns scanning, path construction and the crate's one directory walker ([`walk_files`]).
//! Directories whose names are not ids are logged and ignored, and so is a timeline directory
//! without a metadata file (written last: a timeline being created or downloaded is not local
//! yet). A timeline whose metadata file cannot be read or parsed (in the caller's
//! [`MetadataFormat`]), is not a regular file, or whose directory holds a symbolic link or
//! special file, is reported in [`Scan::skipped`] with the reason: it never stops the scan, and
//! is never silently left out. Nothing here blocks on a fifo. Must not write anything; blocking
//! functions, so async callers run them on the blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::format::manifest::RESERVED_PREFIX;
use crate::format::metadata::{METADATA_FILE_NAME, MetadataFormat, TimelineMetadata};
use crate::id::{TenantId, TimelineId};
use crate::sync::state::TimelineKey;

/// A timeline found locally with valid metadata.
#[derive(Clone, Debug)]
pub struct LocalTimeline {
    /// The timeline's parsed `metadata` file.
    pub metadata: TimelineMetadata,
    /// Layer file names (relative to the timeline directory), sorted.
    pub files: Vec<String>,
}

/// The directory of a timeline inside `workdir`.
pub fn timeline_dir(workdir: &Path, tenant: &TenantId, timeline: &TimelineId) -> PathBuf {
    workdir
        .join("tenants")
        .join(tenant.to_string())
        .join("timelines")
        .join(timeline.to_string())
}

/// A timeline the scan could not take, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Tenant id in hex.
    pub tenant: String,
    /// Timeline id in hex.
    pub timeline: String,
    /// What was wrong (the metadata file's parse error, a symbolic link's path, ...).
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timeline {}/{}: {}",
            self.tenant, self.timeline, self.reason
        )
    }
}

/// What [`scan`] found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every timeline with readable metadata and only regular files.
    pub timelines: BTreeMap<TimelineKey, LocalTimeline>,
    /// Timelines left out, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Every timeline in `workdir`, its metadata read in `format`. A missing `tenants` directory
/// is an empty workdir.
pub fn scan(workdir: &Path, format: MetadataFormat) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let tenants = workdir.join("tenants");
    let entries = match std::fs::read_dir(&tenants) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for tenant_entry in entries.flatten() {
        let Some(tenant) = parse_dir_name::<TenantId>(&tenant_entry.path(), "tenant") else {
            continue;
        };
        let Ok(timelines) = std::fs::read_dir(tenant_entry.path().join("timelines")) else {
            tracing::warn!(tenant = %tenant, "tenant directory has no readable timelines/; skipped");
            continue;
        };
        for tl_entry in timelines.flatten() {
            let Some(timeline) = parse_dir_name::<TimelineId>(&tl_entry.path(), "timeline") else {
                continue;
            };
            match read_timeline(&tl_entry.path(), format) {
                Ok(Some(t)) => {
                    out.timelines.insert((tenant, timeline), t);
                }
                Ok(None) => {
                    tracing::info!(%tenant, %timeline, "no metadata file yet (an interrupted download?): not local");
                }
                Err(reason) => {
                    tracing::error!(%tenant, %timeline, "skipping timeline: {reason}");
                    out.skipped.push(Skipped {
                        tenant: tenant.to_string(),
                        timeline: timeline.to_string(),
                        reason,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn parse_dir_name<T: std::str::FromStr>(path: &Path, what: &str) -> Option<T> {
    let name = path.file_name()?.to_str()?;
    let parsed = name.parse().ok();
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "not a {what} id; skipped");
    }
    parsed
}

/// Reads and parses a timeline's metadata file in `format`; the error names the file. The file
/// must be a regular file: a symbolic link is refused, and so is a fifo, socket or device (opened
/// without blocking, so a fifo cannot hang the scan).
pub fn read_metadata(dir: &Path, format: MetadataFormat) -> Result<TimelineMetadata, String> {
    let path = dir.join(METADATA_FILE_NAME);
    super::io_gate::reached(&path);
    let bytes = crate::write::open_regular(&path)
        .and_then(|f| read_limited(f))
        .map_err(|e| format!("metadata file {}: {e}", path.display()))?;
    format
        .parse(&bytes)
        .map_err(|e| format!("metadata file {}: {e}", path.display()))
}

/// Reads a metadata file the user named (it may be a pipe), refusing one larger than any format
/// allows.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    read_limited(std::fs::File::open(path)?)
}

fn read_limited(file: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = crate::format::metadata::MAX_FILE_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let msg = format!("larger than {limit} bytes");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
    }
    Ok(bytes)
}

/// Checks that each of `names` (relative to `dir`) is a regular file reached through real
/// directories only, by the [`walk_files`] rule: an upload given a name never records a symbolic
/// link's target, nor opens a fifo (which would block until someone writes into it).
pub(crate) fn check_regular_files<'a>(
    dir: &Path,
    names: impl IntoIterator<Item = &'a String>,
) -> std::io::Result<()> {
    for name in names {
        let mut path = dir.to_path_buf();
        let parts: Vec<_> = Path::new(name).components().collect();
        for (i, part) in parts.iter().enumerate() {
            let std::path::Component::Normal(part) = part else {
                let msg = format!("{name:?} is not a plain relative file name");
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
            };
            path.push(part);
            let kind = std::fs::symlink_metadata(&path)?.file_type();
            let last = i + 1 == parts.len();
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if last && !kind.is_file() {
                "not a regular file (fifo, socket, device or directory)"
            } else if !last && !kind.is_dir() {
                "not a directory"
            } else {
                continue;
            };
            let msg = format!(
                "{} is {what}; layercas records only regular files",
                path.display()
            );
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
    }
    Ok(())
}

/// A timeline directory's contents; `None` without a metadata file (the file is written last, so
/// the directory is one being created or downloaded, not a local timeline).
fn read_timeline(dir: &Path, format: MetadataFormat) -> Result<Option<LocalTimeline>, String> {
    match std::fs::symlink_metadata(dir.join(METADATA_FILE_NAME)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let metadata = read_metadata(dir, format)?;
    let files = layer_files(dir).map_err(|e| format!("listing layers: {e}"))?;
    Ok(Some(LocalTimeline { metadata, files }))
}

/// A regular file found by [`walk_files`]: its name relative to the walked root (components
/// joined by `/`) and its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkedFile {
    /// The name relative to the walked directory, as stored in manifests.
    pub name: String,
    /// Where the file is on disk.
    pub path: PathBuf,
}

/// The one directory walker of the crate: every regular file under `root`, sorted by name.
///
/// The filter, shared by `casctl checkpoint DIR` and the sync loop's workdir scan:
/// - an entry whose name starts with [`RESERVED_PREFIX`] (our temporary files) is skipped at any
///   depth, and a reserved directory is not entered;
/// - the timeline `metadata` file at the top of `root` is skipped (it is recorded as the
///   checkpoint's metadata, not as a layer); a `metadata` file deeper down is a layer file;
/// - a symbolic link, fifo, socket or device is an error naming it: a pageserver never creates
///   one in a timeline directory, following it could record data from elsewhere, and skipping
///   it would leave a file out of the checkpoint without anyone noticing;
/// - a name that is not UTF-8 is an error (a manifest cannot record it).
pub fn walk_files(root: &Path) -> std::io::Result<Vec<WalkedFile>> {
    // Unsorted: the names are sorted once at the end (walkdir's sort parses both paths on
    // every comparison, a tenth of a checkpoint's start-up on a 900-file timeline).
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !is_reserved(e.file_name()));
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(std::io::Error::from)?;
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file (fifo, socket or device)"
            };
            let msg = format!(
                "{} is {what}; layercas records only regular files",
                entry.path().display()
            );
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
        let rel = entry.path().strip_prefix(root).expect("under root");
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                let msg = format!("{} is not UTF-8", entry.path().display());
                std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
            })?
            .join("/");
        if name != METADATA_FILE_NAME {
            out.push(WalkedFile {
                name,
                path: entry.into_path(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_reserved(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with(RESERVED_PREFIX))
}

/// The layer file names of a timeline directory, by the [`walk_files`] rule.
pub fn layer_files(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(walk_files(dir)?.into_iter().map(|f| f.name).collect())
}

/// Removes the temporary files restores and downloads leave under `dir` when interrupted
/// (`.layercas-*.tmp`, at any depth) and returns how many were removed. Used by casctl after
/// Ctrl-C; a missing `dir` holds none.
pub fn remove_temporaries(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let name = entry.file_name().to_str().unwrap_or("");
        if entry.file_type().is_file() && is_reserved(entry.file_name()) && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
