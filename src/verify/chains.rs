//! verify's check of each timeline's `prev_lsn` chain: which manifests are listed, each
//! timeline's newest base and the ranges gc dropped, and where one manifest stands.
//!
//! Owns that judgement only; reporting is the caller's.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::id::{Lsn, TenantId, TimelineId};

/// The listed LSNs and newest base of every timeline, for checking `prev_lsn` chains.
pub(super) struct Chains {
    listed: HashSet<(TenantId, TimelineId, Lsn)>,
    newest_base: HashMap<(TenantId, TimelineId), Lsn>,
    /// Per timeline, the bases recording checkpoints gc dropped (`dropped_from`, base LSN).
    dropped: HashMap<(TenantId, TimelineId), Vec<(Lsn, Lsn)>>,
}

/// Where a manifest stands in its timeline's chain.
pub(super) enum ChainCheck {
    Ok,
    /// Its predecessor exists but is not the preceding manifest (a warning).
    Off(String),
    /// Its predecessor is missing and it lies below the newest base (a warning).
    Superseded(String),
    /// Its predecessor is missing at or above the newest base (an error).
    Broken(String),
}

impl Chains {
    pub(super) fn of(
        results: &[(
            &crate::store::ManifestRef,
            Result<crate::format::manifest::Manifest>,
        )],
    ) -> Chains {
        let mut out = Chains {
            listed: results
                .iter()
                .map(|(r, _)| (r.tenant, r.timeline, r.lsn))
                .collect(),
            newest_base: HashMap::new(),
            dropped: HashMap::new(),
        };
        for m in results
            .iter()
            .filter_map(|(_, m)| m.as_ref().ok())
            .filter(|m| m.base)
        {
            let b = out
                .newest_base
                .entry((m.tenant, m.timeline))
                .or_insert(m.lsn);
            *b = (*b).max(m.lsn);
            if let Some(from) = m.dropped_from {
                let at = out.dropped.entry((m.tenant, m.timeline)).or_default();
                at.push((from, m.lsn));
            }
        }
        out
    }

    pub(super) fn check(
        &self,
        m: &crate::format::manifest::Manifest,
        preceding: Option<Lsn>,
    ) -> ChainCheck {
        let ranges = self.dropped.get(&(m.tenant, m.timeline));
        if let Some((_, base)) = ranges
            .into_iter()
            .flatten()
            .find(|(from, to)| *from <= m.lsn && m.lsn < *to)
        {
            return ChainCheck::Superseded(format!(
                "superseded manifest, a late create of a checkpoint gc dropped (the base at \
                 {base} records it); the next gc removes it"
            ));
        }
        let Some(p) = m.prev_lsn else {
            return ChainCheck::Ok;
        };
        if !m.base && !self.listed.contains(&(m.tenant, m.timeline, p)) {
            let base = self.newest_base.get(&(m.tenant, m.timeline));
            if base.is_some_and(|b| m.lsn < *b) {
                return ChainCheck::Superseded(format!(
                    "superseded manifest, probably a late create of a checkpoint retention \
                     dropped (its predecessor at {p} is gone, a base at {} is newer); the next \
                     gc removes it",
                    base.expect("some")
                ));
            }
            return ChainCheck::Broken(format!(
                "manifest chain broken: its predecessor, the manifest at LSN {p}, is missing"
            ));
        }
        if Some(p) != preceding {
            return ChainCheck::Off(format!(
                "previous lsn {:?} is not the preceding manifest",
                Some(p.to_string())
            ));
        }
        ChainCheck::Ok
    }
}
