//! Compression dictionaries (`dicts/<id>`, envelope kind 8): a zstd dictionary trained once per
//! store on the first chunks written, named by the blake3 of the object's bytes, and the
//! process-wide table of dictionaries loaded so far, which blob decoding consults.
//!
//! ```text
//! object = envelope(kind 8, version 1, body = a zstd dictionary (magic 37 A4 30 EC), <= 112 KiB)
//! ```
//! Owns training, the object's encoding and checks, and the loaded-dictionary table. Must not
//! read or write the store (`store::dicts` loads, the writer creates) nor decide which blobs use
//! a dictionary (`pack`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::DecodeError;
use crate::format::envelope::{self, Kind};

/// Largest dictionary (body) a decoder accepts, and the largest a writer trains.
pub const MAX_DICT_LEN: usize = 112 << 10;
/// The size writers train.
pub const DEFAULT_DICT_LEN: usize = 64 << 10;
/// Raw bytes of new chunks a writer collects to train on.
pub const TRAIN_BYTES: usize = 8 << 20;
/// The magic number a zstd dictionary starts with (little-endian 0xEC30A437).
pub const ZSTD_DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];
/// Most dictionaries one process keeps loaded (each at most [`MAX_DICT_LEN`] plus zstd's tables).
pub const MAX_LOADED: usize = 64;

/// A dictionary's id: the blake3 of its object's bytes (envelope included).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DictId(pub [u8; 32]);

impl DictId {
    /// The id of an object's bytes.
    pub fn of(object: &[u8]) -> DictId {
        DictId(*blake3::hash(object).as_bytes())
    }
}

impl fmt::Display for DictId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DictId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictId({self})")
    }
}

/// Trains a dictionary of at most `size` bytes on the first [`TRAIN_BYTES`] of `samples` (each
/// sample one chunk); `None` when zstd finds nothing worth a dictionary.
pub fn train<'a>(samples: impl IntoIterator<Item = &'a [u8]>, size: usize) -> Option<Vec<u8>> {
    let (mut data, mut sizes) = (Vec::new(), Vec::new());
    for s in samples {
        if data.len() + s.len() > TRAIN_BYTES {
            break;
        }
        data.extend_from_slice(s);
        sizes.push(s.len());
    }
    train_continuous(&data, &sizes, size)
}

/// Trains a dictionary of at most `size` bytes on `data`, the concatenation of samples of
/// `sizes` bytes; `None` when zstd finds nothing worth a dictionary.
pub fn train_continuous(data: &[u8], sizes: &[usize], size: usize) -> Option<Vec<u8>> {
    let dict = zstd::dict::from_continuous(data, sizes, size.min(MAX_DICT_LEN)).ok()?;
    (dict.len() >= 8 && dict[..4] == ZSTD_DICT_MAGIC).then_some(dict)
}

/// The dictionary object holding `dict`.
pub fn encode(dict: &[u8]) -> Vec<u8> {
    envelope::seal(Kind::Dictionary, dict)
}

/// The dictionary inside an object, checked: the object hashes to `id`, its envelope is sound,
/// the body is at most [`MAX_DICT_LEN`] bytes, starts with the zstd dictionary magic and loads.
pub fn decode(id: &DictId, object: &[u8]) -> Result<Vec<u8>, DecodeError> {
    const WHAT: &str = "dictionary";
    if DictId::of(object) != *id {
        return Err(DecodeError::new(WHAT, "content does not hash to its id"));
    }
    let body = envelope::open(Kind::Dictionary, object, MAX_DICT_LEN as u64)?;
    if body.len() < 8 || body[..4] != ZSTD_DICT_MAGIC {
        return Err(DecodeError::new(
            WHAT,
            "body does not start with the zstd dictionary magic",
        ));
    }
    if zstd::zstd_safe::DDict::try_create(body).is_none() {
        return Err(DecodeError::new(WHAT, "zstd cannot load the dictionary"));
    }
    Ok(body.to_vec())
}

/// A loaded dictionary, ready for both directions.
pub struct Dictionary {
    /// The object's id.
    pub id: DictId,
    /// The dictionary bytes (the object's body).
    pub bytes: Vec<u8>,
    ddict: zstd::zstd_safe::DDict<'static>,
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dictionary({}, {} bytes)", self.id, self.bytes.len())
    }
}

impl Dictionary {
    /// A dictionary whose bytes were checked by [`decode`] (or just trained).
    pub fn new(id: DictId, bytes: Vec<u8>) -> Option<Dictionary> {
        let ddict = zstd::zstd_safe::DDict::try_create(&bytes)?;
        Some(Dictionary { id, bytes, ddict })
    }

    /// The prepared decompression tables.
    pub fn ddict(&self) -> &zstd::zstd_safe::DDict<'static> {
        &self.ddict
    }
}

/// A dictionary and the level to compress with it: what a writer holds.
pub struct Encoder {
    /// The dictionary object's id, written in front of every blob compressed with it.
    pub id: DictId,
    /// The zstd level.
    pub level: i32,
    dict: Arc<Dictionary>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoder({})", self.id)
    }
}

impl Encoder {
    /// Compresses with `d` at `level`.
    pub fn new(d: &Arc<Dictionary>, level: i32) -> Option<Encoder> {
        Some(Encoder {
            id: d.id,
            level,
            dict: d.clone(),
        })
    }

    /// The dictionary's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.dict.bytes
    }
}

type Table = RwLock<HashMap<DictId, Arc<Dictionary>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::default)
}

/// The loaded dictionary `id`, if any. Ids are content hashes, so one table serves every store.
pub fn get(id: &DictId) -> Option<Arc<Dictionary>> {
    table().read().expect("dict table").get(id).cloned()
}

/// Adds a checked dictionary to the table; false when the table is full.
pub fn register(d: Arc<Dictionary>) -> bool {
    let mut t = table().write().expect("dict table");
    if t.len() >= MAX_LOADED && !t.contains_key(&d.id) {
        return false;
    }
    t.entry(d.id).or_insert(d);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        (0..400u32)
            .map(|i| {
                let mut s = format!("row {i:06} status=active balance=").into_bytes();
                s.extend((0..2000u32).map(|j| b"abcdefgh"[((i * 31 + j * 7) % 8) as usize]));
                s
            })
            .collect()
    }

    #[test]
    fn trained_dictionaries_round_trip_and_are_checked() {
        let s = samples();
        let dict = train(s.iter().map(Vec::as_slice), 4096).expect("trained");
        let object = encode(&dict);
        let id = DictId::of(&object);
        assert_eq!(decode(&id, &object).unwrap(), dict);
        let mut other = id;
        other.0[0] ^= 1;
        assert!(decode(&other, &object).unwrap_err().reason.contains("hash"));
        let not_dict = encode(b"plain bytes, no magic");
        let e = decode(&DictId::of(&not_dict), &not_dict).unwrap_err();
        assert!(e.reason.contains("magic"), "{e}");
        let big = encode(&vec![0u8; MAX_DICT_LEN + 1]);
        assert!(decode(&DictId::of(&big), &big).is_err());
    }
}
