//! gc cache shards (`gc/cache/manifests/<2 hex>` and `gc/cache/indexes/<2 hex>`, envelope kind
//! 9): copies of manifests and index objects that gc keeps so that a run reads only the objects
//! that changed (format-spec 13.7).
//!
//! ```text
//! body  = entry_count (u32 LE) || entry_0 || ... || entry_{entry_count-1}
//! entry = key_len (u16 LE) || key (UTF-8) || bytes_len (u32 LE) || the object's bytes
//! ```
//! Keys are strictly ascending. An entry proves nothing by itself: gc uses it only when it is
//! provably the object a listing shows now (`gc::cache`).
//!
//! Owns the encoding only. Must not decide what is cached or when an entry is trusted (that is
//! `gc::cache`).

use crate::backend::{Key, MAX_KEY_LEN};
use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};

/// Largest shard body accepted.
pub const MAX_SHARD_BODY: u64 = 256 << 20;
/// Largest object a shard holds a copy of; larger ones are always read from the store.
pub const MAX_CACHED_OBJECT: usize = 1 << 20;
/// Fewest bytes an entry takes: both length fields.
const MIN_ENTRY_LEN: usize = 2 + 4;
const WHAT: &str = "gc cache shard";

/// One shard: object keys and the bytes of the object stored under each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheShard {
    /// Entries in strictly ascending key order.
    pub entries: Vec<(Key, Vec<u8>)>,
}

impl CacheShard {
    /// The object's bytes. Entries must be strictly ascending by key and each at most
    /// [`MAX_CACHED_OBJECT`] bytes (callers build shards from a sorted map and filter sizes).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (key, bytes) in &self.entries {
            body.extend_from_slice(&(key.as_str().len() as u16).to_le_bytes());
            body.extend_from_slice(key.as_str().as_bytes());
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(bytes);
        }
        envelope::seal(Kind::ManifestCache, &body)
    }

    /// Parses a shard: bounded lengths, valid keys, strictly ascending, exact body length.
    pub fn decode(bytes: &[u8]) -> Result<CacheShard, DecodeError> {
        let body = envelope::open(Kind::ManifestCache, bytes, MAX_SHARD_BODY)?;
        let (count, mut rest) = take(body, 4)?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        if count > rest.len() / MIN_ENTRY_LEN {
            return Err(DecodeError::new(
                WHAT,
                format!("{count} entries cannot fit in {} bytes", rest.len()),
            ));
        }
        let mut entries: Vec<(Key, Vec<u8>)> = Vec::with_capacity(count);
        for _ in 0..count {
            let (key, after) = take_key(rest)?;
            let (len, after) = take(after, 4)?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            if len > MAX_CACHED_OBJECT {
                return Err(DecodeError::new(
                    WHAT,
                    format!("entry of {len} bytes exceeds the limit of {MAX_CACHED_OBJECT}"),
                ));
            }
            let (manifest, after) = take(after, len)?;
            if entries.last().is_some_and(|(k, _)| k >= &key) {
                return Err(DecodeError::new(WHAT, "keys are not strictly ascending"));
            }
            entries.push((key, manifest.to_vec()));
            rest = after;
        }
        if !rest.is_empty() {
            return Err(DecodeError::new(
                WHAT,
                format!("{} bytes after the last entry", rest.len()),
            ));
        }
        Ok(CacheShard { entries })
    }
}

fn take(b: &[u8], n: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    if b.len() < n {
        return Err(DecodeError::new(
            WHAT,
            format!("truncated: {n} bytes needed, {} left", b.len()),
        ));
    }
    Ok(b.split_at(n))
}

fn take_key(b: &[u8]) -> Result<(Key, &[u8]), DecodeError> {
    let (len, rest) = take(b, 2)?;
    let len = u16::from_le_bytes(len.try_into().expect("2 bytes")) as usize;
    if len > MAX_KEY_LEN {
        return Err(DecodeError::new(
            WHAT,
            format!("key of {len} bytes is longer than {MAX_KEY_LEN}"),
        ));
    }
    let (raw, rest) = take(rest, len)?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::new(WHAT, "key is not UTF-8"))?;
    let key = Key::new(text).map_err(|e| DecodeError::new(WHAT, format!("bad key: {e}")))?;
    Ok((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> CacheShard {
        CacheShard {
            entries: vec![
                (Key::new("manifests/a/b/1").unwrap(), vec![1, 2, 3]),
                (Key::new("manifests/a/b/2").unwrap(), vec![]),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let s = shard();
        assert_eq!(CacheShard::decode(&s.encode()).unwrap(), s);
        let empty = CacheShard::default();
        assert_eq!(CacheShard::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn unsorted_truncated_and_oversized_are_rejected() {
        let mut s = shard();
        s.entries.reverse();
        let err = CacheShard::decode(&s.encode()).unwrap_err();
        assert!(err.to_string().contains("ascending"), "{err}");
        let mut bytes = shard().encode();
        bytes.truncate(bytes.len() - 40);
        assert!(CacheShard::decode(&bytes).is_err());
        let big = CacheShard {
            entries: vec![(
                Key::new("manifests/x").unwrap(),
                vec![0; MAX_CACHED_OBJECT + 1],
            )],
        };
        let err = CacheShard::decode(&big.encode()).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
