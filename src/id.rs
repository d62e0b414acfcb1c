//! Typed identifiers: content hashes (chunk, pack, index), tenant and timeline ids, and LSNs.
//!
//! Owns parsing and printing of every id, and [`unique_bytes`], the one generator of fresh
//! unique values (store ids, salt blobs). Each stored kind has its own type so that a pack id
//! cannot be passed where a chunk id is expected. No id type implements `Default`: an all-zero id
//! would look valid.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A hash map keyed by ids: foldhash (randomly seeded per process, so crafted ids cannot force
/// collisions) hashes a 32-byte id several times faster than std's SipHash.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set of ids (see [`IdMap`]).
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Error for an id or LSN that does not parse; names what was given and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {given:?}: expected {expected}")]
pub struct ParseIdError {
    what: &'static str,
    given: String,
    expected: &'static str,
}

/// Fixed-size byte ids serialize as a msgpack `bin` of exactly `N` bytes.
macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// The id's bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, as used in keys and output.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Builds the id from exactly `LEN` bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Some(Self(bytes.try_into().ok()?))
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let err = || ParseIdError {
                    what: $what,
                    given: s.chars().take(80).collect(),
                    expected: concat!(stringify!($len), " bytes as lower- or upper-case hex"),
                };
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes", $len)
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        $name::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    };
}

byte_id!(
    /// blake3 of a chunk's raw (uncompressed) bytes.
    ChunkId, 32, "chunk id"
);
byte_id!(
    /// blake3 of a whole pack object; also its key.
    PackId, 32, "pack id"
);
byte_id!(
    /// blake3 of a whole index object; also its key.
    IndexId, 32, "index id"
);
byte_id!(
    /// blake3 of a whole file's bytes.
    FileHash, 32, "file hash"
);
byte_id!(
    /// A tenant of the pageserver (128 bits).
    TenantId, 16, "tenant id"
);
byte_id!(
    /// A timeline of a tenant (128 bits).
    TimelineId, 16, "timeline id"
);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl PackId {
    /// The id of a whole pack object's bytes.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl IndexId {
    /// The id of a whole index object's bytes.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

/// A Postgres log sequence number. Printed and parsed in Postgres notation (`16/B374D848`);
/// in keys as 16 upper-case hex digits so that keys sort in LSN order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// 16 upper-case hex digits: the manifest key component.
    pub fn to_key_component(self) -> String {
        format!("{:016X}", self.0)
    }

    /// Inverse of [`Lsn::to_key_component`]; exactly 16 hex digits.
    pub fn from_key_component(s: &str) -> Option<Lsn> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Lsn, ParseIdError> {
        let err = || ParseIdError {
            what: "LSN",
            given: s.chars().take(80).collect(),
            expected: "Postgres notation X/Y with X and Y of 1 to 8 hex digits, e.g. 16/B374D848",
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn(((part(hi)? as u64) << 32) | part(lo)? as u64))
    }
}

/// 32 bytes that no other call returns, in this process or another: hashes the process id, a
/// process-wide counter, the wall clock and the thread. Uniqueness, not secrecy, is the goal.
pub fn unique_bytes() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&wall.as_nanos().to_le_bytes());
    h.update(&format!("{:?}", std::thread::current().id()).into_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(lsn.to_key_component(), "00000016B374D848");
        assert_eq!(Lsn::from_key_component("00000016B374D848"), Some(lsn));
        for bad in ["", "16", "/1", "1/", "1/123456789", "g/1", "1/2/3", "+1/1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn ids_parse_only_exact_length_hex() {
        let t: TenantId = "00112233445566778899aabbccddeeff".parse().unwrap();
        assert_eq!(t.to_string(), "00112233445566778899aabbccddeeff");
        assert!("00112233".parse::<TenantId>().is_err());
        assert!(
            "zz112233445566778899aabbccddeeff"
                .parse::<TenantId>()
                .is_err()
        );
        let e = "xyz".parse::<TimelineId>().unwrap_err().to_string();
        assert!(e.contains("timeline id") && e.contains("xyz"), "{e}");
    }

    #[test]
    fn ids_serialize_as_msgpack_bin() {
        let id = ChunkId::of(b"abc");
        let bytes = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(&bytes[..2], &[0xc4, 32]);
        assert_eq!(rmp_serde::from_slice::<ChunkId>(&bytes).unwrap(), id);
        // A bin of the wrong length is an error, not a panic.
        assert!(rmp_serde::from_slice::<ChunkId>(&[0xc4, 2, 1, 2]).is_err());
    }
}
