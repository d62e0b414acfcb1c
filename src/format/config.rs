//! The store's `config` object: chunker parameters, pack size and compression that every writer
//! of the store must use (or dedup silently breaks), plus the store's id.
//!
//! Owns the config type, its validation and encoding. Created once, conditionally, by the first
//! writer; never rewritten.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};

/// Largest config body accepted.
const MAX_BODY: u64 = 4096;

/// The chunking algorithm this code implements: FastCDC as published in 2020, as implemented by
/// the `fastcdc` crate 5.0.0 (`v2020`, normalization level 1, seed 0).
pub const CHUNKER_FASTCDC_2020: &str = "fastcdc-v2020";

/// Chunker parameters. Changing any of them changes every chunk boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Algorithm name; only [`CHUNKER_FASTCDC_2020`] exists.
    pub algorithm: String,
    /// FastCDC normalization level (0 to 3).
    pub normalization: u8,
    /// No chunk is shorter, except a file's last.
    pub min_size: u32,
    /// The size FastCDC aims for.
    pub avg_size: u32,
    /// No chunk is longer; a cut is forced here.
    pub max_size: u32,
}

impl ChunkerParams {
    /// The default, chosen by measurement (see format-spec/chunking.md): 16 KiB / 32 KiB / 128 KiB.
    pub fn default_params() -> ChunkerParams {
        ChunkerParams::fastcdc(16 << 10, 32 << 10, 128 << 10)
    }

    /// FastCDC 2020 with normalization level 1 and the given sizes.
    pub fn fastcdc(min_size: u32, avg_size: u32, max_size: u32) -> ChunkerParams {
        ChunkerParams {
            algorithm: CHUNKER_FASTCDC_2020.into(),
            normalization: 1,
            min_size,
            avg_size,
            max_size,
        }
    }

    /// Checks the parameters are ones this code can chunk with.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020 as f;
        if self.algorithm != CHUNKER_FASTCDC_2020 {
            return Err(format!("unknown chunker algorithm {:?}", self.algorithm));
        }
        if self.normalization > 3 {
            return Err(format!(
                "normalization level {} is not 0..=3",
                self.normalization
            ));
        }
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max;
        if !ok {
            return Err(format!(
                "chunk sizes min {min} / avg {avg} / max {max} must satisfy {}<=min<={}, {}<=avg<={}, {}<=max<={} and min<=avg<=max",
                f::MINIMUM_MIN,
                f::MINIMUM_MAX,
                f::AVERAGE_MIN,
                f::AVERAGE_MAX,
                f::MAXIMUM_MIN,
                f::MAXIMUM_MAX
            ));
        }
        Ok(())
    }
}

/// The store configuration. Encoded as a msgpack array of these fields in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Random id of the store, for telling stores apart in logs.
    #[serde(with = "serde_bytes_16")]
    pub store_id: [u8; 16],
    /// Chunk boundaries; fixed for the store's life so that equal data dedups.
    pub chunker: ChunkerParams,
    /// Packs are sealed once their blobs reach this many bytes.
    pub pack_target_size: u64,
    /// zstd level writers compress with (readers do not need it).
    pub zstd_level: i32,
}

/// Largest pack target size allowed: blob offsets in index entries are 32-bit.
pub const MAX_PACK_TARGET: u64 = 1 << 30;

impl StoreConfig {
    /// A new configuration with a fresh random id.
    pub fn new(chunker: ChunkerParams, pack_target_size: u64, zstd_level: i32) -> StoreConfig {
        StoreConfig {
            store_id: random_id(),
            chunker,
            pack_target_size,
            zstd_level,
        }
    }

    /// The defaults: [`ChunkerParams::default_params`], 16 MiB packs, zstd level 2 (with the
    /// store's dictionary it stores as little as level 3 and compresses a third faster:
    /// `benches/compression.rs`, format-spec section 4).
    pub fn default_config() -> StoreConfig {
        StoreConfig::new(ChunkerParams::default_params(), 16 << 20, 2)
    }

    /// Checks every field is usable.
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        if !(1 << 16..=MAX_PACK_TARGET).contains(&self.pack_target_size) {
            return Err(format!(
                "pack target size {} is not within 64 KiB..=1 GiB",
                self.pack_target_size
            ));
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(format!(
                "zstd level {} is not within 1..=19",
                self.zstd_level
            ));
        }
        Ok(())
    }

    /// The `config` object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::Config, &envelope::encode_msgpack(self))
    }

    /// Parses and validates a `config` object.
    pub fn decode(bytes: &[u8]) -> Result<StoreConfig, DecodeError> {
        let body = envelope::open(Kind::Config, bytes, MAX_BODY)?;
        let config: StoreConfig = envelope::decode_msgpack("config", body)?;
        config
            .validate()
            .map_err(|e| DecodeError::new("config", e))?;
        Ok(config)
    }
}

/// A fresh store id: the first 16 of [`crate::id::unique_bytes`].
fn random_id() -> [u8; 16] {
    crate::id::unique_bytes()[..16]
        .try_into()
        .expect("16 bytes")
}

/// Serializes a 16-byte array as msgpack `bin`.
mod serde_bytes_16 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        use serde::Deserialize;
        crate::id::TenantId::deserialize(d).map(|id| id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_validates() {
        let c = StoreConfig::default_config();
        assert_eq!(StoreConfig::decode(&c.encode()).unwrap(), c);
        let mut bad = c.clone();
        bad.chunker.avg_size = 100;
        assert!(
            StoreConfig::decode(&bad.encode())
                .unwrap_err()
                .reason
                .contains("avg")
        );
        bad = c.clone();
        bad.chunker.algorithm = "rabin".into();
        assert!(bad.validate().is_err());
    }
}
