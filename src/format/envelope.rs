//! The envelope around every small stored object (config, pack table, index, manifest, timeline
//! metadata, dictionary, gc cache shard): magic, kind, version, length, body, checksum.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "LCAS"
//! 4       1     kind (see `Kind`)
//! 5       1     format version of that kind (currently 1)
//! 6       2     reserved, zero
//! 8       8     body length n, u64 little-endian
//! 16      n     body
//! 16+n    32    blake3 of bytes 0 .. 16+n
//! ```
//! Owns framing and integrity only; what a body means belongs to the module of its kind.

use crate::error::DecodeError;

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"LCAS";
/// Header bytes before the body.
pub const HEADER_LEN: usize = 16;
/// Checksum bytes after the body.
pub const CHECKSUM_LEN: usize = 32;
/// Smallest possible envelope (empty body).
pub const OVERHEAD: usize = HEADER_LEN + CHECKSUM_LEN;

// `duplicates` pairs this list of values with casctl's exit codes by shape alone; both are
// tables of fixed numbers, not logic to share.
/// What an envelope holds. The byte values are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Config = 1,
    PackTable = 2,
    Index = 3,
    Manifest = 4,
    TimelineMetadata = 5,
    GcState = 6,
    Intent = 7,
    Dictionary = 8,
    ManifestCache = 9,
    GcSeal = 10,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::PackTable => "pack table",
            Kind::Index => "index",
            Kind::Manifest => "manifest",
            Kind::TimelineMetadata => "timeline metadata",
            Kind::GcState => "gc state",
            Kind::Intent => "intent",
            Kind::Dictionary => "dictionary",
            Kind::ManifestCache => "gc cache shard",
            Kind::GcSeal => "gc seal",
        }
    }
}

/// The version of every kind this code writes by default (manifests also have version 2).
pub const VERSION: u8 = 1;

/// Frames `body` as an envelope of `kind`.
pub fn seal(kind: Kind, body: &[u8]) -> Vec<u8> {
    seal_version(kind, VERSION, body)
}

/// Frames `body` as an envelope of `kind` with body format `version`.
pub fn seal_version(kind: Kind, version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(kind as u8);
    out.push(version);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Checks an envelope of `kind` whose body may be at most `max_body` bytes and returns the body.
/// `bytes` must be exactly one envelope.
pub fn open(kind: Kind, bytes: &[u8], max_body: u64) -> Result<&[u8], DecodeError> {
    open_versions(kind, &[VERSION], bytes, max_body).map(|(_, body)| body)
}

/// Like [`open`], accepting any of `versions`; returns the version found and the body.
pub fn open_versions<'a>(
    kind: Kind,
    versions: &[u8],
    bytes: &'a [u8],
    max_body: u64,
) -> Result<(u8, &'a [u8]), DecodeError> {
    let err = |reason: String| DecodeError::new(kind.name(), reason);
    if bytes.len() < OVERHEAD {
        return Err(err(format!(
            "{} bytes is shorter than the {OVERHEAD}-byte envelope",
            bytes.len()
        )));
    }
    if bytes[0..4] != MAGIC {
        return Err(err(format!("bad magic {:02x?}", &bytes[0..4])));
    }
    if bytes[4] != kind as u8 {
        return Err(err(format!(
            "kind byte {} where {} ({}) was expected",
            bytes[4],
            kind as u8,
            kind.name()
        )));
    }
    if !versions.contains(&bytes[5]) {
        return Err(err(format!(
            "unsupported format version {} (this reader knows {versions:?})",
            bytes[5]
        )));
    }
    if bytes[6..8] != [0, 0] {
        return Err(err("reserved header bytes are not zero".into()));
    }
    let body_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if body_len > max_body {
        return Err(err(format!(
            "body length {body_len} exceeds the limit of {max_body}"
        )));
    }
    let actual = (bytes.len() - OVERHEAD) as u64;
    if body_len != actual {
        return Err(err(format!(
            "body length field says {body_len} but {actual} bytes are present"
        )));
    }
    let end = HEADER_LEN + body_len as usize;
    let sum = blake3::hash(&bytes[..end]);
    if sum.as_bytes()[..] != bytes[end..] {
        return Err(err("checksum mismatch".into()));
    }
    Ok((bytes[5], &bytes[HEADER_LEN..end]))
}

/// Decodes a msgpack body with rmp-serde. The body must be exactly the canonical encoding of the
/// value (what [`encode_msgpack`] writes): this rejects trailing bytes and alternative encodings,
/// so that equal values always have equal bytes and equal checksums. Lengths inside the body are
/// checked against the bytes present before anything is allocated for them.
pub fn decode_msgpack<T>(what: &'static str, body: &[u8]) -> Result<T, DecodeError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    let value: T = serde::Deserialize::deserialize(&mut de)
        .map_err(|e| DecodeError::new(what, e.to_string()))?;
    if encode_msgpack(&value) != body {
        return Err(DecodeError::new(
            what,
            "body is not the canonical encoding of its value (trailing bytes?)",
        ));
    }
    Ok(value)
}

/// Encodes a value as a msgpack body (structs as arrays of their fields, in declaration order).
pub fn encode_msgpack<T: serde::Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("encoding to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_flip_is_caught() {
        let sealed = seal(Kind::Index, b"hello body");
        assert_eq!(open(Kind::Index, &sealed, 100).unwrap(), b"hello body");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(Kind::Index, &bad, 100).is_err(),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn wrong_kind_truncation_and_limits_are_errors() {
        let sealed = seal(Kind::Manifest, &[7; 20]);
        assert!(
            open(Kind::Index, &sealed, 100)
                .unwrap_err()
                .reason
                .contains("kind byte")
        );
        assert!(
            open(Kind::Manifest, &sealed, 10)
                .unwrap_err()
                .reason
                .contains("exceeds")
        );
        for cut in 0..sealed.len() {
            assert!(open(Kind::Manifest, &sealed[..cut], 100).is_err());
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(Kind::Manifest, &longer, 100).is_err());
    }
}
