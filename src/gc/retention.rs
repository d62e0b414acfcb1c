//! Retention: which checkpoints of each timeline gc keeps.
//!
//! A policy per timeline (from a per-tenant table with a default, optionally read from TOML):
//! keep all, keep the newest N, or keep every checkpoint at or after an LSN. Whatever the policy,
//! the newest checkpoint of a timeline is kept, and so is, for every child timeline branched from
//! it (`metadata.ancestor_timeline` / `ancestor_lsn` of the child's newest checkpoint), the
//! parent's newest checkpoint at or before the branch LSN.
//!
//! Owns the decision only; must not read or write a store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::format::metadata::TimelineMetadata;
use crate::id::{Lsn, TenantId, TimelineId};

/// What to keep of one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every checkpoint.
    KeepAll,
    /// The newest N checkpoints (N >= 1).
    KeepLast(usize),
    /// Every checkpoint at or after this LSN.
    KeepSince(Lsn),
}

/// Policies per tenant, with a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The policy for tenants not listed in `tenants`.
    pub default: Policy,
    /// Policies that override the default for single tenants.
    pub tenants: HashMap<TenantId, Policy>,
}

/// One policy as written in TOML: exactly one of the keys.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    keep_all: Option<bool>,
    keep_last: Option<usize>,
    keep_since: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionToml {
    default: Option<PolicyToml>,
    #[serde(default)]
    tenants: BTreeMap<String, PolicyToml>,
}

impl PolicyToml {
    fn policy(&self, what: &str) -> Result<Policy> {
        let bad = |m: &str| Error::InvalidInput(format!("retention {what}: {m}"));
        match (self.keep_all, self.keep_last, &self.keep_since) {
            (Some(true), None, None) => Ok(Policy::KeepAll),
            (None, Some(0), None) => Err(bad("keep_last must be at least 1")),
            (None, Some(n), None) => Ok(Policy::KeepLast(n)),
            (None, None, Some(l)) => l
                .parse()
                .map(Policy::KeepSince)
                .map_err(|_| bad("keep_since is not an LSN like 16/B374D848")),
            _ => Err(bad(
                "give exactly one of keep_all = true, keep_last = N, keep_since = \"X/Y\"",
            )),
        }
    }
}

impl Retention {
    /// The same policy for every tenant.
    pub fn uniform(policy: Policy) -> Retention {
        Retention {
            default: policy,
            tenants: HashMap::new(),
        }
    }

    /// Parses a retention file:
    /// ```toml
    /// [default]
    /// keep_last = 3
    /// [tenants.00112233445566778899aabbccddeeff]
    /// keep_since = "16/0"
    /// ```
    /// Without `[default]`, unlisted tenants keep everything.
    pub fn from_toml(text: &str) -> Result<Retention> {
        let raw: RetentionToml = toml::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("retention file: {e}")))?;
        let default = match &raw.default {
            Some(p) => p.policy("[default]")?,
            None => Policy::KeepAll,
        };
        let mut tenants = HashMap::new();
        for (t, p) in &raw.tenants {
            let id: TenantId = t
                .parse()
                .map_err(|_| Error::InvalidInput(format!("retention: bad tenant id {t:?}")))?;
            tenants.insert(id, p.policy(&format!("[tenants.{t}]"))?);
        }
        Ok(Retention { default, tenants })
    }

    /// The policy of `tenant`.
    pub fn policy(&self, tenant: &TenantId) -> Policy {
        *self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// A timeline as retention sees it: its checkpoint LSNs (ascending) and its newest metadata.
#[derive(Clone, Debug)]
pub struct TimelineCheckpoints {
    /// Every recorded checkpoint LSN, oldest first.
    pub lsns: Vec<Lsn>,
    /// The newest checkpoint's metadata: its ancestor fields say which parent checkpoint a branch needs.
    pub newest: TimelineMetadata,
}

/// The LSNs to keep of every timeline.
pub fn kept(
    retention: &Retention,
    timelines: &BTreeMap<(TenantId, TimelineId), TimelineCheckpoints>,
) -> BTreeMap<(TenantId, TimelineId), BTreeSet<Lsn>> {
    let mut out: BTreeMap<_, BTreeSet<Lsn>> = timelines
        .iter()
        .map(|(k, t)| (*k, by_policy(retention.policy(&k.0), &t.lsns)))
        .collect();
    for ((tenant, _), child) in timelines {
        let Some(parent) = child.newest.ancestor_timeline else {
            continue;
        };
        let at = child.newest.ancestor_lsn;
        let Some(p) = timelines.get(&(*tenant, parent)) else {
            continue;
        };
        if let Some(l) = p.lsns.iter().rev().find(|l| **l <= at) {
            out.entry((*tenant, parent)).or_default().insert(*l);
        }
    }
    out
}

fn by_policy(policy: Policy, lsns: &[Lsn]) -> BTreeSet<Lsn> {
    let mut keep: BTreeSet<Lsn> = match policy {
        Policy::KeepAll => lsns.iter().copied().collect(),
        Policy::KeepLast(n) => lsns.iter().rev().take(n.max(1)).copied().collect(),
        Policy::KeepSince(since) => lsns.iter().filter(|l| **l >= since).copied().collect(),
    };
    keep.extend(lsns.last().copied());
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(lsns: &[u64], ancestor: Option<(TimelineId, u64)>) -> TimelineCheckpoints {
        let mut newest = TimelineMetadata::at(Lsn(*lsns.last().unwrap()));
        if let Some((p, at)) = ancestor {
            newest.ancestor_timeline = Some(p);
            newest.ancestor_lsn = Lsn(at);
        }
        TimelineCheckpoints {
            lsns: lsns.iter().map(|l| Lsn(*l)).collect(),
            newest,
        }
    }

    #[test]
    fn policies_keep_the_newest_and_branch_points() {
        let t = TenantId([1; 16]);
        let (parent, child) = (TimelineId([2; 16]), TimelineId([3; 16]));
        let mut tls = BTreeMap::new();
        tls.insert((t, parent), tl(&[10, 20, 30, 40, 50], None));
        tls.insert((t, child), tl(&[35, 60], Some((parent, 35))));
        let kept = kept(&Retention::uniform(Policy::KeepLast(1)), &tls);
        let lsns = |k: &BTreeSet<Lsn>| k.iter().map(|l| l.0).collect::<Vec<_>>();
        // 30 is the parent's checkpoint at or before the branch LSN 35.
        assert_eq!(lsns(&kept[&(t, parent)]), vec![30, 50]);
        assert_eq!(lsns(&kept[&(t, child)]), vec![60]);
        let since = kept_for(Policy::KeepSince(Lsn(100)), &[10, 20]);
        assert_eq!(since, vec![20], "the newest survives any policy");
        assert_eq!(kept_for(Policy::KeepAll, &[1, 2]), vec![1, 2]);
        assert_eq!(kept_for(Policy::KeepLast(2), &[1, 2, 3]), vec![2, 3]);
    }

    fn kept_for(p: Policy, lsns: &[u64]) -> Vec<u64> {
        let v: Vec<Lsn> = lsns.iter().map(|l| Lsn(*l)).collect();
        by_policy(p, &v).iter().map(|l| l.0).collect()
    }

    #[test]
    fn toml_sets_policies_per_tenant_and_rejects_ambiguity() {
        let r = Retention::from_toml(
            "[default]\nkeep_last = 3\n[tenants.00112233445566778899aabbccddeeff]\nkeep_since = \"16/0\"\n",
        )
        .unwrap();
        assert_eq!(r.default, Policy::KeepLast(3));
        let t: TenantId = "00112233445566778899aabbccddeeff".parse().unwrap();
        assert_eq!(r.policy(&t), Policy::KeepSince(Lsn(0x16_0000_0000)));
        assert_eq!(r.policy(&TenantId([9; 16])), Policy::KeepLast(3));
        for bad in [
            "[default]\nkeep_last = 0\n",
            "[default]\nkeep_last = 1\nkeep_all = true\n",
            "[tenants.xyz]\nkeep_all = true\n",
            "[default]\nkeep_since = \"nope\"\n",
        ] {
            assert!(Retention::from_toml(bad).is_err(), "{bad}");
        }
    }
}
