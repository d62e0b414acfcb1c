//! `TimelineMetadata`: what the pageserver keeps in a timeline's `metadata` file, and that file's
//! encoding (an envelope of kind `TimelineMetadata` around a msgpack body, see format-spec/).
//!
//! Owns the type and its file format only; where the file lives is the workdir's business.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};
use crate::id::{Lsn, TimelineId};

/// Name of the metadata file inside a timeline directory.
pub const METADATA_FILE_NAME: &str = "metadata";

/// Largest metadata body accepted (the real one is under 100 bytes).
const MAX_BODY: u64 = 4096;

/// The state of a timeline as of its last checkpoint. Encoded as a msgpack array of the fields in
/// this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineMetadata {
    /// Everything up to this LSN is in the timeline's layer files.
    pub disk_consistent_lsn: Lsn,
    /// The LSN of the record before `disk_consistent_lsn`, when known.
    pub prev_record_lsn: Option<Lsn>,
    /// The timeline this one branched from, if any.
    pub ancestor_timeline: Option<TimelineId>,
    /// The LSN of the branch point on the ancestor (0 without ancestor).
    pub ancestor_lsn: Lsn,
    /// Pages older than this may have been garbage-collected.
    pub latest_gc_cutoff_lsn: Lsn,
    /// Where the timeline's initdb image sits.
    pub initdb_lsn: Lsn,
}

impl TimelineMetadata {
    /// Metadata of a fresh timeline with nothing known but its consistent LSN.
    pub fn at(lsn: Lsn) -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: lsn,
            prev_record_lsn: None,
            ancestor_timeline: None,
            ancestor_lsn: Lsn(0),
            latest_gc_cutoff_lsn: Lsn(0),
            initdb_lsn: Lsn(0),
        }
    }

    /// The bytes of a `metadata` file.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        envelope::seal(Kind::TimelineMetadata, &envelope::encode_msgpack(self))
    }

    /// Parses a `metadata` file.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<TimelineMetadata, DecodeError> {
        let body = envelope::open(Kind::TimelineMetadata, bytes, MAX_BODY)?;
        envelope::decode_msgpack("timeline metadata", body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_file_round_trips_and_rejects_damage() {
        let md = TimelineMetadata {
            disk_consistent_lsn: Lsn(0x16_B374_D848),
            prev_record_lsn: Some(Lsn(0x16_B374_D800)),
            ancestor_timeline: Some(TimelineId([7; 16])),
            ancestor_lsn: Lsn(0x100),
            latest_gc_cutoff_lsn: Lsn(0x80),
            initdb_lsn: Lsn(0x40),
        };
        let bytes = md.to_file_bytes();
        assert_eq!(TimelineMetadata::from_file_bytes(&bytes).unwrap(), md);
        assert!(TimelineMetadata::from_file_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(TimelineMetadata::from_file_bytes(b"garbage").is_err());
    }
}
