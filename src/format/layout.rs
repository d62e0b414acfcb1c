//! Where each kind of object lives in a store: the key layout.
//!
//! ```text
//! config                                        the store configuration
//! packs/<first 2 hex of id>/<pack id, 64 hex>    pack objects
//! index/<index id, 64 hex>                       index objects of the legacy domain
//! index/t/<tenant, 32 hex>/<level>/<id, 64 hex>   index objects of a tenant's domain
//! manifests/<tenant>/<timeline>/<lsn, 16 HEX>    one manifest per checkpoint
//! gc/state                                      the gc state (the fence between gc and writers)
//! intents/<id, 64 hex>                          packs a writer's commit is about to reference
//! dicts/<dictionary id, 64 hex>                 compression dictionaries (never deleted)
//! gc/cache/manifests/<2 hex>                    gc's copies of manifests (a cache; may vanish)
//! gc/cache/indexes/<2 hex>                      gc's copies of index objects (likewise)
//! ```
//! Owns key construction and parsing only.

use crate::backend::{Key, Prefix};
use crate::id::{IndexId, Lsn, PackId, TenantId, TimelineId};

/// Key of the store configuration.
pub const CONFIG: &str = "config";
/// Key of the gc state object.
pub const GC_STATE: &str = "gc/state";
/// Key of gc's seal (format-spec 13.8).
pub const GC_SEAL: &str = "gc/seal";
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
/// Prefix of gc's cache shards of manifest copies.
pub const MANIFEST_CACHE: &str = "gc/cache/manifests/";
/// Prefix of gc's cache shards of index object copies.
pub const INDEX_CACHE: &str = "gc/cache/indexes/";

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

/// Prefix of every tenant's index domain.
pub const TENANT_INDEX: &str = "index/t/";

/// Levels a tenant domain's keys may carry (one decimal digit; format-spec section 2).
pub const MAX_INDEX_LEVEL: u8 = 9;

/// Where an index object lives: the legacy domain every reader reads, or a tenant's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexDomain {
    /// `index/<id>`: read by every writer and reader.
    Legacy,
    /// `index/t/<tenant>/<level>/<id>`: read only for that tenant's checkpoints and restores.
    Tenant(TenantId, u8),
}

impl IndexDomain {
    /// The tenant of a tenant domain.
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            IndexDomain::Legacy => None,
            IndexDomain::Tenant(t, _) => Some(*t),
        }
    }
}

/// Key of an index object in the legacy domain.
pub fn index_key(id: &IndexId) -> Key {
    key(format!("{INDEX}{id}"))
}

/// Key of shard `shard` of the gc cache under `prefix` ([`MANIFEST_CACHE`] or [`INDEX_CACHE`]).
pub fn cache_key(prefix: &str, shard: u8) -> Key {
    key(format!("{prefix}{shard:02x}"))
}

/// The shard number of a gc cache key under `prefix`, if it is one (two lower-case hex digits).
pub fn parse_cache_key(prefix: &str, key: &Key) -> Option<u8> {
    let hex = key.as_str().strip_prefix(prefix)?;
    let shard = u8::from_str_radix(hex, 16).ok()?;
    (hex == format!("{shard:02x}")).then_some(shard)
}

/// Key of an index object of `tenant`'s domain at `level` (at most [`MAX_INDEX_LEVEL`]).
pub fn tenant_index_key(tenant: &TenantId, level: u8, id: &IndexId) -> Key {
    let level = level.min(MAX_INDEX_LEVEL);
    key(format!("{TENANT_INDEX}{tenant}/{level}/{id}"))
}

/// Key of an index object in `domain`.
pub fn domain_index_key(domain: IndexDomain, id: &IndexId) -> Key {
    match domain {
        IndexDomain::Legacy => index_key(id),
        IndexDomain::Tenant(t, level) => tenant_index_key(&t, level, id),
    }
}

/// Prefix listing every index object of `tenant`'s domain (all levels).
pub fn tenant_index_prefix(tenant: &TenantId) -> Prefix {
    Prefix::new(format!("{TENANT_INDEX}{tenant}/")).expect("valid prefix")
}

/// Whether `key` has the form of some object of the layout (section 2 of the format spec).
pub fn is_layout_key(key: &Key) -> bool {
    let s = key.as_str();
    s == CONFIG
        || s == GC_STATE
        || s == GC_SEAL
        || is_intent_key(key)
        || parse_pack_key(key).is_some()
        || parse_index_key(key).is_some()
        || parse_dict_key(key).is_some()
        || parse_manifest_key(key).is_some()
        || parse_cache_key(MANIFEST_CACHE, key).is_some()
        || parse_cache_key(INDEX_CACHE, key).is_some()
}

/// The key of gc's seal.
pub fn gc_seal_key() -> Key {
    key(GC_SEAL.into())
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

/// The domain and index id of an index key of either form, if it is one. Total and strict:
/// lower-case hex of the exact lengths, one level digit, nothing else (the key printed back
/// from the result must be the key given).
pub fn parse_index_key(key: &Key) -> Option<(IndexDomain, IndexId)> {
    let rest = key.as_str().strip_prefix(INDEX)?;
    let domain = match rest.strip_prefix("t/") {
        None => IndexDomain::Legacy,
        Some(rest) => {
            let (tenant, rest) = rest.split_once('/')?;
            let (level, _) = rest.split_once('/')?;
            let level = match level.as_bytes() {
                [d] if d.is_ascii_digit() => d - b'0',
                _ => return None,
            };
            IndexDomain::Tenant(tenant.parse().ok()?, level)
        }
    };
    let hex = key.as_str().rsplit('/').next()?;
    let id: IndexId = hex.parse().ok()?;
    (domain_index_key(domain, &id) == *key).then_some((domain, id))
}

/// Whether `key` is an index key of either form.
pub fn is_index_key(key: &Key) -> bool {
    parse_index_key(key).is_some()
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
        assert_eq!(
            parse_index_key(&index_key(&i)),
            Some((IndexDomain::Legacy, i))
        );
        let t = TenantId([0xab; 16]);
        let k = tenant_index_key(&t, 3, &i);
        assert_eq!(k.as_str(), format!("index/t/{t}/3/{i}"));
        assert_eq!(parse_index_key(&k), Some((IndexDomain::Tenant(t, 3), i)));
        assert!(k.as_str().starts_with(tenant_index_prefix(&t).as_str()));
        for bad in [
            format!("index/t/{t}/10/{i}"),
            format!("index/t/{t}/x/{i}"),
            format!("index/t/{t}/3/{i}/x"),
            format!("index/t/{t}/3/{}", i.to_hex().to_uppercase()),
            format!("index/t/{}/3/{i}", t.to_hex().to_uppercase()),
            format!("index/t/{t}/{i}"),
            format!("index/t/{t}/3/{}", &i.to_hex()[1..]),
            format!("index/x/{t}/3/{i}"),
            format!("index/t/{i}"),
        ] {
            let k = Key::new(bad.clone()).unwrap();
            assert!(parse_index_key(&k).is_none(), "{bad}");
        }
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
