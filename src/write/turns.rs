//! Which checkpoints of one writer may run at the same time, and which one trains the store's
//! compression dictionary.
//!
//! Checkpoints of one tenant's timelines run one after the other: the second deduplicates
//! against everything the first stored (the first's chunks are in the tenant's domain once it
//! commits), so a tenant's branches store their shared data once and the same input gives the
//! same store whatever the sync loop's concurrency. Checkpoints of different tenants share no
//! chunks (each tenant is its own dedup domain) and run at once.
//!
//! While the store has no dictionary, each checkpoint samples its new chunks (format-spec 5.1);
//! the first whose sample is full claims the training, and the others compress without one
//! instead of training their own. The claim is given back when the training yields nothing or
//! its checkpoint fails before the dictionary is durable, so that a later checkpoint can train.
//!
//! Owns the tenant locks and the training claim. Must not look at what a checkpoint stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::id::TenantId;

/// Tenant locks kept before the idle ones are dropped.
const KEEP_IDLE: usize = 1024;

/// The locks of one writer.
#[derive(Default)]
pub(crate) struct Turns {
    tenants: Mutex<HashMap<TenantId, Arc<AsyncMutex<()>>>>,
    training: Arc<AtomicBool>,
}

/// A checkpoint's permission to run; dropping it lets the tenant's next one in.
pub(crate) struct Turn(#[allow(dead_code)] OwnedMutexGuard<()>);

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
        Turn(lock.lock_owned().await)
    }

    /// The right to train the dictionary, shared with every checkpoint of this writer.
    pub(crate) fn training(&self) -> TrainingRight {
        TrainingRight(self.training.clone())
    }
}

/// Where a checkpoint claims the right to train the store's dictionary.
#[derive(Clone, Default)]
pub(crate) struct TrainingRight(Arc<AtomicBool>);

impl TrainingRight {
    /// The claim, unless another checkpoint of the writer holds (or held) it.
    pub(crate) fn claim(&self) -> Option<Claim> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| Claim(Some(self.0.clone())))
    }
}

/// A held training claim: given back when dropped, unless [`Claim::keep`] says the dictionary
/// it trained is durable.
pub(crate) struct Claim(Option<Arc<AtomicBool>>);

impl Claim {
    /// The dictionary is in the store: no checkpoint of this writer trains another.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(false, Ordering::Release);
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

    #[test]
    fn one_claim_at_a_time_given_back_unless_kept() {
        let right = Turns::default().training();
        let first = right.claim().expect("free");
        assert!(right.claim().is_none(), "held");
        drop(first);
        let second = right.claim().expect("given back on drop");
        second.keep();
        assert!(right.clone().claim().is_none(), "kept for good");
    }
}
