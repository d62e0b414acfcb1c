//! Which checkpoints of one writer may run at the same time.
//!
//! Checkpoints of one tenant's timelines run one after the other: the second deduplicates
//! against everything the first stored (the first's chunks are in the tenant's domain once it
//! commits), so a tenant's branches store their shared data once and the same input gives the
//! same store whatever the sync loop's concurrency. Checkpoints of different tenants share no
//! chunks (each tenant is its own dedup domain) and run at once.
//!
//! Owns the tenant locks. Must not look at what a checkpoint stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::id::TenantId;

/// Tenant locks kept before the idle ones are dropped.
const KEEP_IDLE: usize = 1024;

/// The locks of one writer.
#[derive(Default)]
pub(crate) struct Turns {
    tenants: Mutex<HashMap<TenantId, Arc<AsyncMutex<()>>>>,
}

/// A checkpoint's permission to run; dropping it lets the tenant's next one in.
pub(crate) struct Turn {
    _held: OwnedMutexGuard<()>,
}

impl Turns {
    /// Waits until no other checkpoint of `tenant` runs.
    pub(crate) async fn take(&self, tenant: TenantId) -> Turn {
        let lock = {
            let mut map = self.tenants.lock().expect("turns lock");
            if map.len() > KEEP_IDLE {
                // Held or awaited locks have clones outside the map.
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(tenant).or_default().clone()
        };
        Turn {
            _held: lock.lock_owned().await,
        }
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
    async fn a_tenant_waits_for_its_own_checkpoints_only() {
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
        assert!(!blocked(2).await, "another tenant's does not");
        drop(a);
        assert!(!blocked(1).await);
    }
}
