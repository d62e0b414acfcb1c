//! Per-timeline completion: each timeline's remote consistent LSN (the newest checkpoint known to
//! be durable in the store) as a `tokio::sync::watch`, and waiting for one LSN to get there.
//!
//! Owns the watches and the wait. Must not decide when a checkpoint is durable: the loop says so
//! after the manifest was created (or found already there).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::id::Lsn;
use crate::sync::state::TimelineKey;

/// What a timeline's watch carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteTimeline {
    /// The newest LSN whose checkpoint is durable in the store, as far as this loop knows
    /// (listed at startup, then every upload and download). Never decreases.
    pub remote_consistent_lsn: Option<Lsn>,
    /// Why the timeline was evicted, while it is; cleared when work is scheduled for it again.
    pub error: Option<String>,
}

/// Every timeline's watch, created on first use.
#[derive(Debug, Default)]
pub(crate) struct DurableBoard {
    watches: Mutex<HashMap<TimelineKey, watch::Sender<RemoteTimeline>>>,
}

impl DurableBoard {
    fn with<R>(&self, key: TimelineKey, f: impl FnOnce(&watch::Sender<RemoteTimeline>) -> R) -> R {
        let mut map = self.watches.lock().expect("durable lock");
        f(map
            .entry(key)
            .or_insert_with(|| watch::Sender::new(RemoteTimeline::default())))
    }

    /// A receiver of `key`'s state.
    pub fn subscribe(&self, key: TimelineKey) -> watch::Receiver<RemoteTimeline> {
        self.with(key, |s| s.subscribe())
    }

    /// The store holds `key` at `lsn` (at least).
    pub fn durable(&self, key: TimelineKey, lsn: Lsn) {
        self.with(key, |s| {
            s.send_if_modified(|r| {
                let newer = r.remote_consistent_lsn.is_none_or(|l| l < lsn);
                if newer {
                    r.remote_consistent_lsn = Some(lsn);
                }
                newer
            })
        });
    }

    /// `key` was evicted: waiters learn why.
    pub fn failed(&self, key: TimelineKey, error: String) {
        self.with(key, |s| s.send_modify(|r| r.error = Some(error)));
    }

    /// New work for `key`: an old eviction no longer answers waiters.
    pub fn clear_error(&self, key: TimelineKey) {
        self.with(key, |s| {
            s.send_if_modified(|r| r.error.take().is_some());
        });
    }

    /// The largest `local - remote` LSN distance over `local`'s timelines (a timeline the store
    /// lacks counts from 0).
    pub fn max_lag(&self, local: &HashMap<TimelineKey, Lsn>) -> u64 {
        let map = self.watches.lock().expect("durable lock");
        local
            .iter()
            .map(|(k, l)| {
                let remote = map.get(k).and_then(|s| s.borrow().remote_consistent_lsn);
                l.0.saturating_sub(remote.map_or(0, |r| r.0))
            })
            .max()
            .unwrap_or(0)
    }
}

/// Waits until `rx` says `lsn` is durable (returns the remote consistent LSN reached); fails
/// when the timeline is evicted, when the loop stops, or with [`Error::Cancelled`] when `cancel`
/// fires first.
pub(crate) async fn wait_durable(
    mut rx: watch::Receiver<RemoteTimeline>,
    lsn: Lsn,
    cancel: &CancellationToken,
    loop_cancel: &CancellationToken,
) -> Result<Lsn> {
    loop {
        {
            let r = rx.borrow_and_update();
            if let Some(l) = r.remote_consistent_lsn.filter(|l| *l >= lsn) {
                return Ok(l);
            }
            if let Some(e) = &r.error {
                return Err(Error::TaskFailed(format!(
                    "the timeline was evicted before {lsn} was uploaded: {e}"
                )));
            }
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Err(Error::Cancelled("the sync loop stopped".into()));
                }
            }
            _ = cancel.cancelled() => return Err(Error::Cancelled(format!("waiting for {lsn}"))),
            _ = loop_cancel.cancelled() => {
                return Err(Error::Cancelled("the sync loop was cancelled".into()));
            }
        }
    }
}
