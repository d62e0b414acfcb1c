//! gc's seal (`gc/seal`, envelope kind 10): a record that a gc run with one set of options left
//! nothing to do and nothing for later at one generation of the gc state (format-spec 13.8).
//!
//! Owns the encoding only. Must not decide when a seal is written, trusted or removed: gc's side
//! is `gc::seal`, the writer's removal is in `write::fence`.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};

/// Largest seal body accepted.
pub const MAX_GC_SEAL_BODY: u64 = 1024;

/// The seal object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSeal {
    /// The generation of the gc state the sealing run wrote last (the one it claimed, when it
    /// condemned nothing).
    pub generation: u64,
    /// What the run's options hash to (64 lower-case hex digits, `gc::seal::options_digest`).
    pub options: String,
    /// False while the run is scanning; true once it left nothing to do.
    pub confirmed: bool,
}

impl GcSeal {
    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::GcSeal, &envelope::encode_msgpack(self))
    }

    /// Parses a seal object.
    pub fn decode(bytes: &[u8]) -> Result<GcSeal, DecodeError> {
        let body = envelope::open(Kind::GcSeal, bytes, MAX_GC_SEAL_BODY)?;
        let seal: GcSeal = envelope::decode_msgpack("gc seal", body)?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if seal.options.len() != 64 || !seal.options.bytes().all(hex) {
            return Err(DecodeError::new(
                "gc seal",
                "options digest is not 64 lower-case hex digits",
            ));
        }
        Ok(seal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_reads_back_and_a_bad_digest_is_refused() {
        let seal = GcSeal {
            generation: 9,
            options: "ab".repeat(32),
            confirmed: true,
        };
        assert_eq!(GcSeal::decode(&seal.encode()).unwrap(), seal);
        let bad = GcSeal {
            options: "AB".repeat(32),
            ..seal
        };
        let err = GcSeal::decode(&bad.encode()).unwrap_err().to_string();
        assert!(err.contains("options digest"), "{err}");
    }
}
