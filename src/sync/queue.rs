//! The sync loop's queue: at most one pending task per timeline, merged, never dropped.
//!
//! Owns merging and the order timelines are served in (first come, first served; a timeline
//! whose task is running or backing off waits without blocking the others). Must not run tasks.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::format::metadata::TimelineMetadata;
use crate::sync::state::TimelineKey;

/// Which files an upload records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadFiles {
    /// The whole timeline directory, as a full checkpoint.
    All,
    /// These new layer files, added to the previous checkpoint.
    New(BTreeSet<String>),
}

/// An upload of a timeline's newest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The files to record.
    pub files: UploadFiles,
    /// The checkpoint's metadata (with the file's bytes, kept verbatim).
    pub metadata: TimelineMetadata,
}

impl Upload {
    /// Folds a later upload into this one: the union of files, the newer metadata.
    fn merge(&mut self, later: Upload) {
        self.files = match (
            std::mem::replace(&mut self.files, UploadFiles::All),
            later.files,
        ) {
            (UploadFiles::New(mut a), UploadFiles::New(b)) => {
                a.extend(b);
                UploadFiles::New(a)
            }
            _ => UploadFiles::All,
        };
        if later.metadata.disk_consistent_lsn >= self.metadata.disk_consistent_lsn {
            self.metadata = later.metadata;
        }
    }
}

/// Work pending for one timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    /// The upload to do, if any.
    pub upload: Option<Upload>,
    /// Whether to download the store's newer checkpoint first.
    pub download: bool,
}

impl Task {
    /// Folds `later` into this task.
    pub fn merge(&mut self, later: Task) {
        match (&mut self.upload, later.upload) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        self.download |= later.download;
    }

    fn is_empty(&self) -> bool {
        self.upload.is_none() && !self.download
    }
}

/// Pending tasks and the timelines that are busy.
#[derive(Default, Debug)]
pub struct Queue {
    pending: HashMap<TimelineKey, Task>,
    order: VecDeque<TimelineKey>,
    /// Running, or waiting out a backoff: not to be started.
    busy: HashSet<TimelineKey>,
}

impl Queue {
    /// Adds work for a timeline, merging with what is pending.
    pub fn push(&mut self, key: TimelineKey, task: Task) {
        if task.is_empty() {
            return;
        }
        match self.pending.get_mut(&key) {
            Some(t) => t.merge(task),
            None => {
                self.pending.insert(key, task);
                self.order.push_back(key);
            }
        }
    }

    /// The next timeline with pending work that is not busy; marks it busy.
    pub fn take_ready(&mut self) -> Option<(TimelineKey, Task)> {
        let pos = self.order.iter().position(|k| !self.busy.contains(k))?;
        let key = self.order.remove(pos).expect("position is valid");
        let task = self.pending.remove(&key).expect("ordered keys are pending");
        self.busy.insert(key);
        Some((key, task))
    }

    /// A busy timeline became free; `unfinished` work (a failed task) goes back in front of
    /// anything queued for it since.
    pub fn release(&mut self, key: TimelineKey, unfinished: Option<Task>) {
        self.busy.remove(&key);
        if let Some(mut task) = unfinished {
            if let Some(newer) = self.pending.remove(&key) {
                task.merge(newer);
                self.order.retain(|k| *k != key);
            }
            self.push(key, task);
        }
    }

    /// Marks a timeline busy without taking work (while it waits out a backoff).
    pub fn hold(&mut self, key: TimelineKey) {
        self.busy.insert(key);
    }

    /// Takes the work pending for `key` (not started yet), if any.
    pub fn remove(&mut self, key: &TimelineKey) -> Option<Task> {
        let task = self.pending.remove(key)?;
        self.order.retain(|k| k != key);
        Some(task)
    }

    /// Timelines with work pending, running or backing off.
    pub fn len(&self) -> usize {
        self.busy.len()
            + self
                .pending
                .keys()
                .filter(|k| !self.busy.contains(k))
                .count()
    }

    /// Whether no work is pending and nothing is busy.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.busy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Lsn, TenantId, TimelineId};

    fn key(n: u8) -> TimelineKey {
        (TenantId([n; 16]), TimelineId([n; 16]))
    }

    fn upload(files: &[&str], lsn: u64) -> Task {
        let files = UploadFiles::New(files.iter().map(|s| s.to_string()).collect());
        Task {
            upload: Some(Upload {
                files,
                metadata: TimelineMetadata::at(Lsn(lsn)),
            }),
            download: false,
        }
    }

    /// A queue holding an upload of `(timeline, file, lsn)` for each entry, pushed in order.
    fn queue_of(uploads: &[(u8, &str, u64)]) -> Queue {
        let mut q = Queue::default();
        for &(k, file, lsn) in uploads {
            q.push(key(k), upload(&[file], lsn));
        }
        q
    }

    #[test]
    fn uploads_for_one_timeline_merge_and_are_never_dropped() {
        let mut q = queue_of(&[(1, "a", 10), (1, "b", 20)]);
        let (_, t) = q.take_ready().unwrap();
        let u = t.upload.unwrap();
        assert_eq!(
            u.files,
            UploadFiles::New(["a".to_string(), "b".to_string()].into())
        );
        assert_eq!(u.metadata.disk_consistent_lsn, Lsn(20));
        assert!(q.take_ready().is_none());
    }

    #[test]
    fn a_busy_timeline_does_not_block_others_and_failed_work_returns() {
        let mut q = queue_of(&[(1, "a", 10), (2, "x", 10)]);
        let (k1, t1) = q.take_ready().unwrap();
        assert_eq!(k1, key(1));
        q.push(key(1), upload(&["b"], 20)); // arrives while timeline 1 runs
        let (k2, _) = q.take_ready().unwrap();
        assert_eq!(k2, key(2), "timeline 2 is served while 1 is busy");
        assert!(
            q.take_ready().is_none(),
            "timeline 1 must wait for its running task"
        );
        q.release(k1, Some(t1)); // failed: comes back, merged with the newer upload
        let (_, t) = q.take_ready().unwrap();
        assert_eq!(
            t.upload.unwrap().files,
            UploadFiles::New(["a".to_string(), "b".to_string()].into())
        );
        q.release(key(1), None);
        q.release(key(2), None);
        assert!(q.is_idle());
    }
}
