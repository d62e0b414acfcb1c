//! Intent objects (`intents/<id>`, envelope kind 7): the packs a writer's commit is about to
//! reference, written before the writer reads the gc state (format-spec section 13.2).
//!
//! Owns the encoding only. Must not decide when an intent is written, trusted or deleted: the
//! writer's side lives in `write::fence`, gc's in `gc`.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};
use crate::id::{Lsn, PackId, TenantId, TimelineId};

/// Largest intent body accepted (about two million packs).
pub const MAX_INTENT_BODY: u64 = 64 << 20;

/// What one commit attempt will reference, and which manifest it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Tenant of the manifest the commit creates.
    pub tenant: TenantId,
    /// Timeline of the manifest the commit creates.
    pub timeline: TimelineId,
    /// The LSN of the manifest the commit creates (its key is derived from these three).
    pub lsn: Lsn,
    /// Every pack holding a chunk the manifest adds, sorted, without duplicates.
    pub packs: Vec<PackId>,
    /// The LSN of the manifest the commit's delta builds on (its `prev_lsn`): gc does not delete
    /// that manifest while the intent exists (format-spec 13.4). Absent in older intents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Lsn>,
}

impl Intent {
    /// An intent for the given manifest naming `packs` (sorted and deduplicated here).
    pub fn new(tenant: TenantId, timeline: TimelineId, lsn: Lsn, mut packs: Vec<PackId>) -> Intent {
        packs.sort_unstable();
        packs.dedup();
        Intent {
            tenant,
            timeline,
            lsn,
            packs,
            prev: None,
        }
    }

    /// The same intent, naming the manifest the commit builds on.
    pub fn building_on(mut self, prev: Option<Lsn>) -> Intent {
        self.prev = prev;
        self
    }

    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::Intent, &envelope::encode_msgpack(self))
    }

    /// Parses an intent object, rejecting unsorted or repeated packs.
    pub fn decode(bytes: &[u8]) -> Result<Intent, DecodeError> {
        let body = envelope::open(Kind::Intent, bytes, MAX_INTENT_BODY)?;
        let intent: Intent = envelope::decode_msgpack("intent", body)?;
        if !intent.packs.windows(2).all(|w| w[0] < w[1]) {
            return Err(DecodeError::new(
                "intent",
                "packs are not strictly ascending",
            ));
        }
        Ok(intent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(b: u8) -> PackId {
        PackId([b; 32])
    }

    #[test]
    fn roundtrip_sorts_and_dedups() {
        let t = TenantId([1; 16]);
        let tl = TimelineId([2; 16]);
        let i = Intent::new(t, tl, Lsn(9), vec![pack(3), pack(1), pack(3)]);
        assert_eq!(i.packs, vec![pack(1), pack(3)]);
        assert_eq!(Intent::decode(&i.encode()).unwrap(), i);
    }

    #[test]
    fn unsorted_packs_are_rejected() {
        let mut i = Intent::new(TenantId([1; 16]), TimelineId([2; 16]), Lsn(9), vec![]);
        i.packs = vec![pack(2), pack(1)];
        let err = Intent::decode(&i.encode()).unwrap_err();
        assert!(err.to_string().contains("ascending"), "{err}");
        let mut bytes = i.encode();
        bytes.truncate(20);
        assert!(Intent::decode(&bytes).is_err());
    }

    #[test]
    fn prev_round_trips_and_older_intents_have_none() {
        let i = Intent::new(
            TenantId([1; 16]),
            TimelineId([2; 16]),
            Lsn(9),
            vec![pack(1)],
        );
        let with = i.clone().building_on(Some(Lsn(7)));
        assert_eq!(Intent::decode(&with.encode()).unwrap().prev, Some(Lsn(7)));
        // An intent written before the field existed: four fields.
        let old = (i.tenant, i.timeline, i.lsn, &i.packs);
        let bytes = envelope::seal(Kind::Intent, &envelope::encode_msgpack(&old));
        assert_eq!(Intent::decode(&bytes).unwrap(), i);
    }
}
