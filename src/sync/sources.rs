//! What a checkpoint is made of when a user names files and directories (`casctl checkpoint`):
//! the source files with their recorded names, and the timeline metadata.
//!
//! Owns turning paths and an optional `--lsn`/metadata file into a file list and a
//! [`TimelineMetadata`]. Directories are walked by [`workdir::walk_files`], the same rule the
//! sync loop's workdir scan uses. Must not write anything or talk to a store.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::metadata::{METADATA_FILE_NAME, MetadataFormat, TimelineMetadata};
use crate::id::Lsn;
use crate::sync::workdir;
use crate::write::SourceFile;

/// Every file under `paths` with its recorded name, and a `metadata` file found at the top of a
/// given directory (the first one wins).
///
/// A file argument is recorded under its file name; a directory's files under their names
/// relative to it, selected by [`workdir::walk_files`]. Two files with the same recorded name
/// are an error.
pub fn collect_sources(paths: &[PathBuf]) -> Result<(Vec<SourceFile>, Option<PathBuf>)> {
    let mut files = Vec::new();
    let mut metadata = None;
    for path in paths {
        let md = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
        if md.is_dir() {
            let candidate = path.join(METADATA_FILE_NAME);
            if candidate.is_file() {
                metadata.get_or_insert(candidate);
            }
            let walked = workdir::walk_files(path).map_err(|e| Error::io("listing", path, e))?;
            files.extend(walked.into_iter().map(|f| SourceFile {
                name: f.name,
                path: f.path,
            }));
        } else {
            files.push(SourceFile {
                name: file_name(path)?,
                path: path.clone(),
            });
        }
    }
    let mut names = HashSet::new();
    if let Some(f) = files.iter().find(|f| !names.insert(&f.name)) {
        return Err(Error::InvalidInput(format!(
            "two files would be recorded as {:?}",
            f.name
        )));
    }
    Ok((files, metadata))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidInput(format!("{} has no UTF-8 file name", path.display())))
}

/// The metadata of a checkpoint from an LSN and/or a metadata file: the file's contents when
/// given, in either format ([`MetadataFormat::Auto`]; recorded verbatim; its
/// `disk_consistent_lsn` must then equal `lsn` if both are given), else metadata at `lsn` alone.
/// Neither is an error.
pub fn resolve_metadata(lsn: Option<Lsn>, file: Option<PathBuf>) -> Result<TimelineMetadata> {
    match (lsn, file) {
        (None, None) => Err(Error::InvalidInput(
            "give --lsn or --metadata (or a directory holding a metadata file)".into(),
        )),
        (Some(lsn), None) => Ok(TimelineMetadata::at(lsn)),
        (lsn, Some(path)) => {
            let bytes = workdir::read_bounded(&path).map_err(|e| Error::io("reading", &path, e))?;
            let md = MetadataFormat::Auto.parse(&bytes).map_err(|e| {
                Error::InvalidInput(format!("parsing metadata file {}: {e}", path.display()))
            })?;
            match lsn.filter(|l| *l != md.disk_consistent_lsn) {
                Some(lsn) => Err(Error::InvalidInput(format!(
                    "--lsn {lsn} differs from disk_consistent_lsn {} in {}",
                    md.disk_consistent_lsn,
                    path.display()
                ))),
                None => Ok(md),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{TenantId, TimelineId};

    /// `casctl checkpoint DIR` and the sync loop's workdir scan select the same files: reserved
    /// names are skipped at any depth (files and whole directories), the top-level `metadata`
    /// is the timeline metadata, a deeper `metadata` is a layer file.
    #[test]
    fn checkpoint_dir_and_workdir_scan_pick_the_same_files() {
        let work = tempfile::tempdir().unwrap();
        let (t, tl) = (TenantId([1; 16]), TimelineId([2; 16]));
        let dir = workdir::timeline_dir(work.path(), &t, &tl);
        let files = [
            "layer_a",
            "sub/layer_b",
            "sub/deeper/layer_c",
            "sub/metadata",
            ".layercas-x.tmp",
            "sub/.layercas-y.tmp",
            ".layercas-dir/layer_d",
            "sub/.layercas/layer_e",
        ];
        for f in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        let md = TimelineMetadata::at(Lsn(0x10));
        std::fs::write(dir.join(METADATA_FILE_NAME), md.to_file_bytes()).unwrap();

        let (sources, found) = collect_sources(std::slice::from_ref(&dir)).unwrap();
        let by_checkpoint: Vec<String> = sources.into_iter().map(|f| f.name).collect();
        let scanned = workdir::scan(work.path(), MetadataFormat::Auto).unwrap();
        let by_sync = &scanned.timelines[&(t, tl)].files;
        let want = [
            "layer_a",
            "sub/deeper/layer_c",
            "sub/layer_b",
            "sub/metadata",
        ];
        assert_eq!(by_checkpoint, want);
        assert_eq!(by_sync, &want);
        assert_eq!(found, Some(dir.join(METADATA_FILE_NAME)));
        assert_eq!(resolve_metadata(None, found).unwrap(), md);
    }

    #[test]
    fn metadata_needs_an_lsn_or_a_file_that_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METADATA_FILE_NAME);
        std::fs::write(&path, TimelineMetadata::at(Lsn(0x10)).to_file_bytes()).unwrap();
        assert!(resolve_metadata(None, None).is_err());
        assert_eq!(
            resolve_metadata(Some(Lsn(5)), None).unwrap(),
            TimelineMetadata::at(Lsn(5))
        );
        assert!(resolve_metadata(Some(Lsn(0x10)), Some(path.clone())).is_ok());
        let e = resolve_metadata(Some(Lsn(0x11)), Some(path.clone())).unwrap_err();
        assert!(e.to_string().contains("differs"), "{e}");
        // A pageserver-format file is read too, and recorded verbatim.
        use crate::format::metadata::{PageserverVersion, encode_pageserver};
        let bytes = encode_pageserver(&TimelineMetadata::at(Lsn(0x20)), PageserverVersion::V1);
        std::fs::write(&path, &bytes).unwrap();
        let md = resolve_metadata(Some(Lsn(0x20)), Some(path)).unwrap();
        assert_eq!(md.file, Some(bytes));
    }
}
