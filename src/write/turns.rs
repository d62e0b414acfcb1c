//! Which checkpoints of one writer may run at the same time.
//!
//! Checkpoints of one tenant's timelines run one after the other: the second deduplicates
//! against everything the first stored (the first's chunks are in the tenant's domain once it
//! commits), so a tenant's branches store their shared data once and the same input gives the
//! same store whatever the sync loop's concurrency. While the store has no compression
//! dictionary, every checkpoint runs alone, so that one of them trains it (format-spec 5.1) and
//! the others use it instead of training their own. Checkpoints of different tenants share no
//! chunks (each tenant is its own dedup domain) and run at once.
//!
//! Owns the locks and the "store has a dictionary" flag. Must not look at what a checkpoint
//! stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard, OwnedMutexGuard};

use crate::id::TenantId;

/// Tenant locks kept before the idle ones are dropped.
const KEEP_IDLE: usize = 1024;

/// The locks of one writer.
#[derive(Default)]
pub(crate) struct Turns {
    tenants: Mutex<HashMap<TenantId, Arc<AsyncMutex<()>>>>,
    untrained: AsyncMutex<()>,
    trained: AtomicBool,
}

/// A checkpoint's permission to run; dropping it lets the next one in.
pub(crate) struct Turn<'a> {
    _tenant: OwnedMutexGuard<()>,
    _untrained: Option<MutexGuard<'a, ()>>,
}

impl Turns {
    /// Waits until a checkpoint of `tenant` may run: no other checkpoint of `tenant` runs, and
    /// none at all while the store is not known to have a dictionary. Locks are always taken in
    /// this order (tenant, then dictionary), so waiting cannot deadlock.
    pub(crate) async fn take(&self, tenant: TenantId) -> Turn<'_> {
        let lock = {
            let mut map = self.tenants.lock().expect("turns lock");
            if map.len() > KEEP_IDLE {
                // Held or awaited locks have clones outside the map.
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(tenant).or_default().clone()
        };
        let tenant = lock.lock_owned().await;
        let untrained = if self.trained.load(Ordering::Acquire) {
            None
        } else {
            Some(self.untrained.lock().await)
        };
        Turn {
            _tenant: tenant,
            _untrained: untrained,
        }
    }

    /// Records that the store has a durable dictionary: from now on checkpoints of different
    /// tenants run at once.
    pub(crate) fn trained(&self) {
        self.trained.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tenant(b: u8) -> TenantId {
        TenantId([b; 16])
    }

    #[tokio::test]
    async fn one_tenant_waits_other_tenants_wait_only_until_trained() {
        let turns = Turns::default();
        let a = turns.take(tenant(1)).await;
        let blocked = |t| {
            let fut = turns.take(tenant(t));
            async move {
                tokio::time::timeout(Duration::from_millis(50), fut)
                    .await
                    .is_err()
            }
        };
        assert!(blocked(1).await, "a second checkpoint of a tenant waits");
        assert!(
            blocked(2).await,
            "without a dictionary every checkpoint waits"
        );
        drop(a);
        turns.trained();
        let a = turns.take(tenant(1)).await;
        assert!(
            !blocked(2).await,
            "other tenants run once the store has a dictionary"
        );
        assert!(blocked(1).await, "the same tenant still waits");
        drop(a);
        assert!(!blocked(1).await);
    }
}
