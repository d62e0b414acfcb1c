//! gc's objects: decoding an intent (kind 7), a gc state (kind 6), a manifest cache shard
//! (kind 9) or a gc seal (kind 10) never panics; what decodes keeps the rules readers rely on (intent packs strictly
//! ascending, condemned packs sorted, cache keys strictly ascending),
//! round-trips through its encoding, and the writers' checks over it do not panic either.
#![no_main]

use layercas::format::gc_seal::GcSeal;
use layercas::format::gc_state::GcState;
use layercas::format::intent::Intent;
use layercas::format::manifest_cache::CacheShard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(seal) = GcSeal::decode(data) {
        assert_eq!(seal.options.len(), 64);
        assert_eq!(GcSeal::decode(&seal.encode()).unwrap(), seal);
    }
    if let Ok(shard) = CacheShard::decode(data) {
        assert!(shard.entries.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(CacheShard::decode(&shard.encode()).unwrap(), shard);
    }
    if let Ok(intent) = Intent::decode(data) {
        assert!(intent.packs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Intent::decode(&intent.encode()).unwrap(), intent);
    }
    if let Ok(state) = GcState::decode(data) {
        assert!(state.condemned.is_sorted());
        assert_eq!(GcState::decode(&state.encode()).unwrap(), state);
        for since in [0, 1, state.history_from, state.generation, u64::MAX] {
            let unusable = state.unusable_since(since);
            assert!(state.condemned.iter().all(|p| unusable.contains(p)));
            let _ = state.lists_deletions_since(since);
        }
        let mut next = state.clone();
        next.generation = next.generation.wrapping_add(1);
        next.record_deleted(state.condemned.clone());
        assert!(
            next.deleted.len()
                <= layercas::format::gc_state::DELETED_HISTORY.max(state.deleted.len())
        );
    }
});
