//! Timeline sync states and where they are delivered.
//!
//! Owns the state type and the sink interface only; deciding states is the loop's business.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::id::{Lsn, TenantId, TimelineId};

/// Where a timeline stands between the local workdir and the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "lsn")]
pub enum TimelineSyncState {
    /// Complete locally at this LSN; the store has it or an upload is scheduled.
    Ready(Lsn),
    /// Present locally, but the store has a newer checkpoint at this LSN.
    AwaitsDownload(Lsn),
    /// Only in the store, newest checkpoint at this LSN.
    CloudOnly(Lsn),
    /// Sync gave up after too many errors; the LSN is the local one, if any.
    Evicted(Option<Lsn>),
}

impl TimelineSyncState {
    /// The state's name, as in the enum.
    pub fn name(&self) -> &'static str {
        match self {
            TimelineSyncState::Ready(_) => "Ready",
            TimelineSyncState::AwaitsDownload(_) => "AwaitsDownload",
            TimelineSyncState::CloudOnly(_) => "CloudOnly",
            TimelineSyncState::Evicted(_) => "Evicted",
        }
    }

    /// The LSN the state carries, if any.
    pub fn lsn(&self) -> Option<Lsn> {
        match *self {
            TimelineSyncState::Ready(l)
            | TimelineSyncState::AwaitsDownload(l)
            | TimelineSyncState::CloudOnly(l) => Some(l),
            TimelineSyncState::Evicted(l) => l,
        }
    }
}

impl std::fmt::Display for TimelineSyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lsn() {
            Some(lsn) => write!(f, "{} at {lsn}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A timeline's identity.
pub type TimelineKey = (TenantId, TimelineId);

/// Receives state changes: once per timeline after startup, then after every change. Called from
/// the sync loop's task; must not block for long.
pub trait SyncStateSink: Send + Sync + 'static {
    /// Called with the new state of `tenant`/`timeline`.
    fn timeline_state(&self, tenant: TenantId, timeline: TimelineId, state: TimelineSyncState);
}

impl SyncStateSink
    for tokio::sync::mpsc::UnboundedSender<(TenantId, TimelineId, TimelineSyncState)>
{
    fn timeline_state(&self, tenant: TenantId, timeline: TimelineId, state: TimelineSyncState) {
        let _ = self.send((tenant, timeline, state));
    }
}

/// A sink that keeps the latest state of every timeline, for callers that poll.
#[derive(Default)]
pub struct StateBoard {
    states: Mutex<BTreeMap<TimelineKey, TimelineSyncState>>,
}

impl StateBoard {
    /// The latest state of every timeline reported so far.
    pub fn snapshot(&self) -> BTreeMap<TimelineKey, TimelineSyncState> {
        self.states.lock().expect("state lock").clone()
    }
}

impl SyncStateSink for StateBoard {
    fn timeline_state(&self, tenant: TenantId, timeline: TimelineId, state: TimelineSyncState) {
        self.states
            .lock()
            .expect("state lock")
            .insert((tenant, timeline), state);
    }
}

impl<T: SyncStateSink> SyncStateSink for std::sync::Arc<T> {
    fn timeline_state(&self, tenant: TenantId, timeline: TimelineId, state: TimelineSyncState) {
        (**self).timeline_state(tenant, timeline, state)
    }
}
