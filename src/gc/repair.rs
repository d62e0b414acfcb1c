//! `repair index` (`casctl repair index`): rebuilds index objects from pack tables for every
//! listed pack no readable index object names, so that the chunks of a store whose index object
//! was lost resolve again. A rebuilt section goes to the domain of every tenant whose manifests
//! reference a chunk of its pack, to the legacy domain when none does.
//!
//! The packs exist already, so the normal write order holds: only the index object naming them
//! is created (content-addressed, `Create`; an identical object already there is fine). A pack
//! whose own table cannot be read is skipped and reported. Index objects that cannot be read are
//! reported and their packs treated as unnamed. Listing index objects before packs means a
//! writer's pack whose index object is not yet created may be adopted too: it is then named
//! twice, which readers accept. Must not delete or rewrite anything.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::Result;
use crate::format::layout;
use crate::format::pack::BlobEntry;
use crate::id::PackId;
use crate::store::Store;

/// A pack that could not be adopted.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The object's key.
    pub pack: String,
    /// Why it was left out.
    pub error: String,
}

/// What a repair did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Planned only; nothing was written.
    pub dry_run: bool,
    /// Packs listed, and those some readable index object names.
    pub packs: usize,
    /// Of those, the packs some readable index object names.
    pub packs_indexed: usize,
    /// Packs adopted into new index objects (their keys).
    pub packs_adopted: Vec<String>,
    /// Chunk entries the adopted packs hold.
    pub entries_adopted: usize,
    /// Damaged packs left out.
    pub packs_skipped: Vec<Skipped>,
    /// Index objects that could not be read (their packs count as unnamed).
    pub index_objects_unreadable: Vec<Skipped>,
    /// Keys of the index objects created for the adopted packs.
    pub index_objects_written: Vec<String>,
}

/// Rebuilds index objects for unnamed packs. With `dry_run`, reads tables but writes nothing.
pub async fn repair_index(store: &Store, dry_run: bool) -> Result<RepairReport> {
    let mut report = RepairReport {
        dry_run,
        ..Default::default()
    };
    let named = named_packs(store, &mut report).await?;
    let listed = store.list(&layout::prefix(layout::PACKS)).await?;
    let mut adopt: Vec<(PackId, Vec<BlobEntry>)> = Vec::new();
    for m in &listed {
        let Some(id) = layout::parse_pack_key(&m.key) else {
            continue;
        };
        report.packs += 1;
        if named.contains(&id) {
            report.packs_indexed += 1;
            continue;
        }
        match store.read_pack_table(id, m.size).await {
            Ok(table) => adopt.push((id, table)),
            Err(e) => report.packs_skipped.push(Skipped {
                pack: m.key.to_string(),
                error: e.to_string(),
            }),
        }
    }
    report.packs_adopted = adopt
        .iter()
        .map(|(p, _)| layout::pack_key(p).to_string())
        .collect();
    report.entries_adopted = adopt.iter().map(|(_, es)| es.len()).sum();
    if !dry_run {
        // Each adopted pack goes to the domains of the tenants whose manifests reference its
        // chunks, the legacy domain when none does (format-spec section 6).
        let manifests = store
            .read_manifests(&store.list_all_manifests().await?)
            .await?;
        let owned = super::domains::owned(&manifests);
        let (keys, _) = super::domains::create_for_owners(store, &adopt, &owned).await?;
        report.index_objects_written = keys.iter().map(|k| k.to_string()).collect();
        if !keys.is_empty() {
            // gc must see the packs now named (format-spec 13.8).
            store.backend().delete(&layout::gc_seal_key()).await?;
        }
    }
    Ok(report)
}

/// The packs named by some readable index object; unreadable ones are recorded in `report`.
async fn named_packs(store: &Store, report: &mut RepairReport) -> Result<BTreeSet<PackId>> {
    let mut named = BTreeSet::new();
    for m in store.list(&layout::prefix(layout::INDEX)).await? {
        if layout::parse_index_key(&m.key).is_none() {
            continue;
        }
        match store.read_index(&m.key).await {
            Ok(obj) => named.extend(obj.packs.iter().map(|(p, _)| *p)),
            Err(e) if e.is_not_found() => {}
            Err(e) => report.index_objects_unreadable.push(Skipped {
                pack: m.key.to_string(),
                error: e.to_string(),
            }),
        }
    }
    Ok(named)
}
