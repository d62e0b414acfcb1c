//! The pageserver's local workdir as the sync loop sees it:
//! `tenants/<tenant>/timelines/<timeline>/` with a `metadata` file and layer files.
//!
//! Owns scanning and path construction. Broken entries (unparsable ids, missing or corrupt
//! metadata) are logged and skipped; they never stop the scan. Must not write anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::format::manifest::RESERVED_PREFIX;
use crate::format::metadata::{METADATA_FILE_NAME, TimelineMetadata};
use crate::id::{TenantId, TimelineId};
use crate::sync::state::TimelineKey;

/// A timeline found locally with valid metadata.
#[derive(Clone, Debug)]
pub struct LocalTimeline {
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

/// Every timeline in `workdir` with readable metadata. A missing `tenants` directory is an
/// empty workdir.
pub fn scan(workdir: &Path) -> std::io::Result<BTreeMap<TimelineKey, LocalTimeline>> {
    let mut out = BTreeMap::new();
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
            match read_timeline(&tl_entry.path()) {
                Ok(t) => {
                    out.insert((tenant, timeline), t);
                }
                Err(why) => {
                    tracing::warn!(tenant = %tenant, timeline = %timeline, "skipping timeline: {why}")
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

fn read_timeline(dir: &Path) -> Result<LocalTimeline, String> {
    let bytes =
        std::fs::read(dir.join(METADATA_FILE_NAME)).map_err(|e| format!("metadata file: {e}"))?;
    let metadata =
        TimelineMetadata::from_file_bytes(&bytes).map_err(|e| format!("metadata file: {e}"))?;
    let mut files = Vec::new();
    collect_layers(dir, dir, &mut files).map_err(|e| format!("listing layers: {e}"))?;
    files.sort();
    Ok(LocalTimeline { metadata, files })
}

/// Layer files: regular files other than `metadata` and our temporary files.
pub fn collect_layers(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            collect_layers(root, &e.path(), out)?;
        } else if ft.is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_str()
                .map(str::to_string);
            match rel {
                Some(rel) if rel != METADATA_FILE_NAME => out.push(rel),
                _ => {}
            }
        }
    }
    Ok(())
}
