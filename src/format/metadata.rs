//! `TimelineMetadata`: the LSNs the store needs from a timeline's `metadata` file, plus that
//! file's exact bytes; and the two file formats layercas can read it from.
//!
//! The file is kept verbatim: the store never rewrites it, a restore writes back exactly the bytes
//! a checkpoint recorded. The fields are what the store needs (the checkpoint's LSN, the branch
//! point, the gc cutoff); they come from a parser the caller chooses ([`MetadataFormat`]):
//! - `pageserver`: the pageserver's own file (512 bytes, crc32c header, bincode big-endian body;
//!   format versions 1, 3 and 4, see [`PageserverVersion`]);
//! - `layercas`: layercas's envelope of kind 5 around a msgpack body (format-spec section 10),
//!   for stores that do not come from a pageserver;
//! - `auto`: whichever of the two the file is (the envelope starts with `LCAS`).
//!
//! Owns the type and both file formats only; where the file lives is the workdir's business.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};
use crate::id::{Lsn, TimelineId};

/// Name of the metadata file inside a timeline directory.
pub const METADATA_FILE_NAME: &str = "metadata";

/// Largest layercas metadata body accepted (the real one is under 100 bytes).
const MAX_BODY: u64 = 4096;
/// Largest metadata file recorded verbatim in a manifest.
pub const MAX_FILE_BYTES: usize = 64 << 10;

/// The state of a timeline as of its last checkpoint. Encoded (in manifests and layercas files)
/// as a msgpack array of the fields in this order; `file` is a seventh element only when present.
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
    /// The metadata file's exact bytes (msgpack `bin`), opaque to the store; a restore writes them
    /// back verbatim. Absent when the file is the layercas encoding of the fields above (which
    /// reproduces it byte for byte), or when no file was given (`casctl checkpoint --lsn`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "file_bytes")]
    pub file: Option<Vec<u8>>,
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
            file: None,
        }
    }

    /// The bytes of the `metadata` file: the recorded file verbatim, else the layercas encoding.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        match &self.file {
            Some(bytes) => bytes.clone(),
            None => self.layercas_file_bytes(),
        }
    }

    /// The layercas encoding of the fields (an envelope of kind 5), whatever `file` holds.
    pub fn layercas_file_bytes(&self) -> Vec<u8> {
        let fields = TimelineMetadata {
            file: None,
            ..self.clone()
        };
        envelope::seal(Kind::TimelineMetadata, &envelope::encode_msgpack(&fields))
    }

    /// Parses a `metadata` file in layercas's format (`file` stays `None`: re-encoding the
    /// fields gives the same bytes, the decoder accepts only the canonical encoding).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<TimelineMetadata, DecodeError> {
        let body = envelope::open(Kind::TimelineMetadata, bytes, MAX_BODY)?;
        let md: TimelineMetadata = envelope::decode_msgpack("timeline metadata", body)?;
        if md.file.is_some() {
            return Err(DecodeError::new(
                "timeline metadata",
                "a metadata file does not embed file bytes",
            ));
        }
        Ok(md)
    }
}

/// Which format a timeline's `metadata` file is read in. The TOML spelling is the lower-case
/// name (`metadata_format = "pageserver"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataFormat {
    /// The pageserver's own file (see [`PageserverVersion`]).
    Pageserver,
    /// layercas's envelope of kind 5.
    Layercas,
    /// The layercas envelope if the file starts with its magic, else the pageserver's file.
    #[default]
    Auto,
}

impl MetadataFormat {
    /// Reads a metadata file: the fields the store needs, and `file` set to the bytes whenever
    /// the layercas encoding of the fields would not reproduce them.
    pub fn parse(self, bytes: &[u8]) -> Result<TimelineMetadata, DecodeError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(DecodeError::new(
                "timeline metadata",
                format!("{} bytes, more than {MAX_FILE_BYTES}", bytes.len()),
            ));
        }
        let layercas = match self {
            MetadataFormat::Pageserver => false,
            MetadataFormat::Layercas => true,
            MetadataFormat::Auto => bytes.starts_with(&envelope::MAGIC),
        };
        if layercas {
            TimelineMetadata::from_file_bytes(bytes)
        } else {
            let (mut md, _) = parse_pageserver(bytes)?;
            md.file = Some(bytes.to_vec());
            Ok(md)
        }
    }
}

/// Size of every pageserver metadata file.
pub const PAGESERVER_FILE_LEN: usize = 512;
/// Header of a pageserver metadata file: crc32c (u32), size (u16), format_version (u16).
const PS_HEADER_LEN: usize = 8;

/// The pageserver metadata format versions layercas reads. All are 512 bytes: a header of
/// checksum (u32, crc32c of the body), size (u16, header plus body) and format_version (u16), then
/// the body, all big-endian with fixed-width integers (bincode), then zeros up to 512. An
/// `Option` is one tag byte (0 none, 1 some) then the value. Version 2 and versions above 4 are
/// rejected (their bodies are not documented here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageserverVersion {
    /// Body: disk_consistent_lsn (u64), prev_record_lsn (Option<u64>), ancestor_timeline
    /// (Option<[u8; 16]>), ancestor_lsn, latest_gc_cutoff_lsn, initdb_lsn (u64 each).
    V1,
    /// The same body under format_version 3.
    V3,
    /// The version-3 body followed by pg_version (u32).
    V4 {
        /// The Postgres major version of the timeline.
        pg_version: u32,
    },
}

impl PageserverVersion {
    fn number(self) -> u16 {
        match self {
            PageserverVersion::V1 => 1,
            PageserverVersion::V3 => 3,
            PageserverVersion::V4 { .. } => 4,
        }
    }
}

fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Encodes a pageserver metadata file of `version` (`md.file` is ignored).
pub fn encode_pageserver(md: &TimelineMetadata, version: PageserverVersion) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&md.disk_consistent_lsn.0.to_be_bytes());
    match md.prev_record_lsn {
        Some(l) => {
            body.push(1);
            body.extend_from_slice(&l.0.to_be_bytes());
        }
        None => body.push(0),
    }
    match md.ancestor_timeline {
        Some(t) => {
            body.push(1);
            body.extend_from_slice(&t.0);
        }
        None => body.push(0),
    }
    for l in [md.ancestor_lsn, md.latest_gc_cutoff_lsn, md.initdb_lsn] {
        body.extend_from_slice(&l.0.to_be_bytes());
    }
    if let PageserverVersion::V4 { pg_version } = version {
        body.extend_from_slice(&pg_version.to_be_bytes());
    }
    let mut out = Vec::with_capacity(PAGESERVER_FILE_LEN);
    out.extend_from_slice(&crc32c(&body).to_be_bytes());
    out.extend_from_slice(&((PS_HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.extend_from_slice(&version.number().to_be_bytes());
    out.extend_from_slice(&body);
    out.resize(PAGESERVER_FILE_LEN, 0);
    out
}

/// Parses a pageserver metadata file; the result's `file` is `None` (the caller keeps the bytes).
pub fn parse_pageserver(
    bytes: &[u8],
) -> Result<(TimelineMetadata, PageserverVersion), DecodeError> {
    let bad = |r: String| DecodeError::new("pageserver timeline metadata", r);
    if bytes.len() != PAGESERVER_FILE_LEN {
        return Err(bad(format!(
            "{} bytes, the file is always {PAGESERVER_FILE_LEN}",
            bytes.len()
        )));
    }
    let checksum = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let size = u16::from_be_bytes([bytes[4], bytes[5]]) as usize;
    let version = u16::from_be_bytes([bytes[6], bytes[7]]);
    if !(PS_HEADER_LEN..=PAGESERVER_FILE_LEN).contains(&size) {
        return Err(bad(format!("size {size} is not within 8..=512")));
    }
    let body = &bytes[PS_HEADER_LEN..size];
    if crc32c(body) != checksum {
        return Err(bad(format!(
            "checksum {checksum:#010x} does not match the body's crc32c {:#010x}",
            crc32c(body)
        )));
    }
    let mut r = Reader {
        bytes: body,
        what: "pageserver timeline metadata",
    };
    let md = TimelineMetadata {
        disk_consistent_lsn: Lsn(r.u64()?),
        prev_record_lsn: r.option(|r| r.u64().map(Lsn))?,
        ancestor_timeline: r.option(|r| r.array().map(TimelineId))?,
        ancestor_lsn: Lsn(r.u64()?),
        latest_gc_cutoff_lsn: Lsn(r.u64()?),
        initdb_lsn: Lsn(r.u64()?),
        file: None,
    };
    let version = match version {
        1 => PageserverVersion::V1,
        3 => PageserverVersion::V3,
        4 => PageserverVersion::V4 {
            pg_version: r.u32()?,
        },
        v => return Err(bad(format!("format_version {v} is not one of 1, 3, 4"))),
    };
    if !r.bytes.is_empty() {
        return Err(bad(format!(
            "{} bytes after the version-{} body",
            r.bytes.len(),
            version.number()
        )));
    }
    Ok((md, version))
}

/// Reads big-endian fixed-width values off the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.bytes.len() < N {
            return Err(DecodeError::new(self.what, "the body ends early"));
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take::<8>().map(u64::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn array(&mut self) -> Result<[u8; 16], DecodeError> {
        self.take::<16>()
    }
    fn option<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.take::<1>()?[0] {
            0 => Ok(None),
            1 => value(self).map(Some),
            tag => Err(DecodeError::new(
                self.what,
                format!("option tag {tag}, not 0 or 1"),
            )),
        }
    }
}

/// serde for `TimelineMetadata::file`: msgpack `bin`, at most [`MAX_FILE_BYTES`].
mod file_bytes {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v.as_deref().unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "the metadata file's bytes (bin, at most {MAX})")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                if v.len() > MAX {
                    return Err(E::custom(format!("metadata file of {} bytes", v.len())));
                }
                Ok(v.to_vec())
            }
        }
        const MAX: usize = super::MAX_FILE_BYTES;
        d.deserialize_bytes(Bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of format-spec's metadata vector (the golden files below state the same).
    fn sample() -> TimelineMetadata {
        let path = format!(
            "{}/format-spec/vectors/metadata.hex",
            env!("CARGO_MANIFEST_DIR")
        );
        TimelineMetadata::from_file_bytes(&hex_file(&path)).unwrap()
    }

    /// A golden file written by hand from the layout (tests/data/*.hex says how).
    fn golden(name: &str) -> Vec<u8> {
        hex_file(&format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    /// The bytes of a hex file (whitespace and `#` comment lines ignored).
    fn hex_file(path: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(path).unwrap();
        let digits: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split_whitespace())
            .collect();
        hex::decode(digits).unwrap()
    }

    #[test]
    fn metadata_file_round_trips_and_rejects_damage() {
        let md = sample();
        let bytes = md.to_file_bytes();
        assert_eq!(TimelineMetadata::from_file_bytes(&bytes).unwrap(), md);
        assert!(TimelineMetadata::from_file_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(TimelineMetadata::from_file_bytes(b"garbage").is_err());
        assert_eq!(MetadataFormat::Layercas.parse(&bytes).unwrap(), md);
        assert_eq!(MetadataFormat::Auto.parse(&bytes).unwrap(), md);
        assert!(MetadataFormat::Pageserver.parse(&bytes).is_err());
    }

    #[test]
    fn crc32c_is_the_castagnoli_checksum() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn pageserver_golden_files_parse_and_encode_byte_for_byte() {
        for (name, version) in [
            ("pageserver-metadata-v1.hex", PageserverVersion::V1),
            (
                "pageserver-metadata-v4-pg14.hex",
                PageserverVersion::V4 { pg_version: 14 },
            ),
        ] {
            let bytes = golden(name);
            assert_eq!(bytes.len(), 512);
            assert_eq!(
                parse_pageserver(&bytes).unwrap(),
                (sample(), version),
                "{name}"
            );
            assert_eq!(encode_pageserver(&sample(), version), bytes, "{name}");
            let md = MetadataFormat::Auto.parse(&bytes).unwrap();
            assert_eq!(md.file.as_deref(), Some(&bytes[..]), "kept verbatim");
            assert_eq!(md.to_file_bytes(), bytes);
        }
    }

    #[test]
    fn damaged_pageserver_files_are_rejected_with_the_reason() {
        let good = golden("pageserver-metadata-v1.hex");
        let reason = |b: &[u8]| parse_pageserver(b).unwrap_err().to_string();
        assert!(reason(&good[..511]).contains("512"));
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert!(reason(&flipped).contains("checksum"));
        let mut v2 = good.clone();
        v2[7] = 2;
        assert!(reason(&v2).contains("format_version 2"));
        let mut big = good.clone();
        big[4..6].copy_from_slice(&513u16.to_be_bytes());
        assert!(reason(&big).contains("size 513"));
        let mut tag = sample();
        tag.prev_record_lsn = None;
        let mut bad_tag = encode_pageserver(&tag, PageserverVersion::V3);
        bad_tag[16] = 7; // the option tag, checksum fixed below
        let size = u16::from_be_bytes([bad_tag[4], bad_tag[5]]) as usize;
        let sum = crc32c(&bad_tag[8..size]);
        bad_tag[..4].copy_from_slice(&sum.to_be_bytes());
        assert!(reason(&bad_tag).contains("option tag 7"));
        // A version-1 header over a version-4 body: 4 bytes too many.
        let mut long = golden("pageserver-metadata-v4-pg14.hex");
        long[7] = 1;
        assert!(reason(&long).contains("after the version-1 body"));
    }

    #[test]
    fn recorded_file_bytes_survive_the_manifest_encoding_and_are_bounded() {
        let mut md = sample();
        let plain = envelope::encode_msgpack(&md);
        md.file = Some(golden("pageserver-metadata-v1.hex"));
        let with_file = envelope::encode_msgpack(&md);
        assert_eq!(&with_file[1..plain.len()], &plain[1..], "six fields first");
        let back: TimelineMetadata = envelope::decode_msgpack("m", &with_file).unwrap();
        assert_eq!(back, md);
        md.file = Some(vec![0; MAX_FILE_BYTES + 1]);
        let huge = envelope::encode_msgpack(&md);
        assert!(envelope::decode_msgpack::<TimelineMetadata>("m", &huge).is_err());
    }
}
