//! Where each kind of object lives in a store: the key layout.
//!
//! ```text
//! config                                        the store configuration
//! packs/<first 2 hex of id>/<pack id, 64 hex>    pack objects
//! index/<index id, 64 hex>                       index objects
//! manifests/<tenant>/<timeline>/<lsn, 16 HEX>    one manifest per checkpoint
//! gc/state                                      the gc state (the fence between gc and writers)
//! intents/<id, 64 hex>                          packs a writer's commit is about to reference
//! dicts/<dictionary id, 64 hex>                 compression dictionaries (never deleted)
//! gc/cache/manifests/<2 hex>                    gc's copies of manifests (a cache; may vanish)
//! ```
//! Owns key construction and parsing only.

use crate::backend::{Key, Prefix};
use crate::id::{IndexId, Lsn, PackId, TenantId, TimelineId};

/// Key of the store configuration.
pub const CONFIG: &str = "config";
/// Key of the gc state object.
pub const GC_STATE: &str = "gc/state";
/// Prefix of all packs.
pub const PACKS: &str = "packs/";
/// Prefix of all index objects.
pub const INDEX: &str = "index/";
/// Prefix of all manifests.
pub const MANIFESTS: &str = "manifests/";
/// Prefix of all intents.
pub const INTENTS: &str = "intents/";
/// Prefix of all compression dictionaries.
pub const DICTS: &str = "dicts/";
/// Prefix of gc's manifest cache shards.
pub const MANIFEST_CACHE: &str = "gc/cache/manifests/";

fn key(s: String) -> Key {
    Key::new(s).expect("layout keys are valid by construction")
}

/// The config key.
pub fn config_key() -> Key {
    key(CONFIG.into())
}

/// The gc state key.
pub fn gc_state_key() -> Key {
    key(GC_STATE.into())
}

/// Key of a pack.
pub fn pack_key(id: &PackId) -> Key {
    let hex = id.to_hex();
    key(format!("{PACKS}{}/{hex}", &hex[..2]))
}

/// Key of an index object.
pub fn index_key(id: &IndexId) -> Key {
    key(format!("{INDEX}{id}"))
}

/// Key of manifest cache shard `shard`.
pub fn manifest_cache_key(shard: u8) -> Key {
    key(format!("{MANIFEST_CACHE}{shard:02x}"))
}

/// The shard number of a manifest cache key, if it is one (two lower-case hex digits).
pub fn parse_manifest_cache_key(key: &Key) -> Option<u8> {
    let hex = key.as_str().strip_prefix(MANIFEST_CACHE)?;
    let shard = u8::from_str_radix(hex, 16).ok()?;
    (hex == format!("{shard:02x}")).then_some(shard)
}

/// Key of a compression dictionary.
pub fn dict_key(id: &crate::format::dict::DictId) -> Key {
    key(format!("{DICTS}{id}"))
}

/// The dictionary id of a dictionary key, if it is one.
pub fn parse_dict_key(key: &Key) -> Option<crate::format::dict::DictId> {
    let hex = key.as_str().strip_prefix(DICTS)?;
    let mut id = [0u8; 32];
    hex::decode_to_slice(hex, &mut id).ok()?;
    let id = crate::format::dict::DictId(id);
    (hex == id.to_string()).then_some(id)
}

/// Key of the manifest of a timeline's checkpoint at `lsn`.
pub fn manifest_key(tenant: &TenantId, timeline: &TimelineId, lsn: Lsn) -> Key {
    key(format!(
        "{MANIFESTS}{tenant}/{timeline}/{}",
        lsn.to_key_component()
    ))
}

/// Prefix listing every manifest of a timeline.
pub fn timeline_prefix(tenant: &TenantId, timeline: &TimelineId) -> Prefix {
    Prefix::new(format!("{MANIFESTS}{tenant}/{timeline}/")).expect("valid prefix")
}

/// Prefix listing every manifest of a tenant.
pub fn tenant_prefix(tenant: &TenantId) -> Prefix {
    Prefix::new(format!("{MANIFESTS}{tenant}/")).expect("valid prefix")
}

/// A prefix constant as a [`Prefix`].
pub fn prefix(p: &str) -> Prefix {
    Prefix::new(p).expect("valid prefix")
}

/// The key of the intent with this id (32 random bytes chosen by the writer).
pub fn intent_key(id: &[u8; 32]) -> Key {
    key(format!("{INTENTS}{}", hex::encode(id)))
}

/// Whether `key` is an intent key: `intents/` and 64 lower-case hex digits.
pub fn is_intent_key(key: &Key) -> bool {
    key.as_str().strip_prefix(INTENTS).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The pack id of a pack key, if it is one.
pub fn parse_pack_key(key: &Key) -> Option<PackId> {
    let rest = key.as_str().strip_prefix(PACKS)?;
    let (dir, hex) = rest.split_once('/')?;
    let id: PackId = hex.parse().ok()?;
    (dir == &hex[..2] && hex == id.to_hex()).then_some(id)
}

/// The index id of an index key, if it is one.
pub fn parse_index_key(key: &Key) -> Option<IndexId> {
    let hex = key.as_str().strip_prefix(INDEX)?;
    let id: IndexId = hex.parse().ok()?;
    (hex == id.to_hex()).then_some(id)
}

/// Tenant, timeline and LSN of a manifest key, if it is one.
pub fn parse_manifest_key(key: &Key) -> Option<(TenantId, TimelineId, Lsn)> {
    let rest = key.as_str().strip_prefix(MANIFESTS)?;
    let mut parts = rest.split('/');
    let (t, tl, lsn) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (tenant, timeline): (TenantId, TimelineId) = (t.parse().ok()?, tl.parse().ok()?);
    let lsn = Lsn::from_key_component(lsn)?;
    (manifest_key(&tenant, &timeline, lsn) == *key).then_some((tenant, timeline, lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_foreign_keys_do_not() {
        let p = PackId::of(b"x");
        assert_eq!(parse_pack_key(&pack_key(&p)), Some(p));
        let i = IndexId::of(b"y");
        assert_eq!(parse_index_key(&index_key(&i)), Some(i));
        let (t, tl) = (TenantId([1; 16]), TimelineId([2; 16]));
        let k = manifest_key(&t, &tl, Lsn(0x16_B374_D848));
        assert_eq!(k.as_str(), format!("manifests/{t}/{tl}/00000016B374D848"));
        assert_eq!(parse_manifest_key(&k), Some((t, tl, Lsn(0x16_B374_D848))));
        for foreign in ["packs/zz/abc", "index/ABC", "manifests/x/y/z", "config"] {
            let k = Key::new(foreign).unwrap();
            assert!(
                parse_pack_key(&k).is_none()
                    && parse_index_key(&k).is_none()
                    && parse_manifest_key(&k).is_none()
            );
        }
    }
}
