//! verify's check of packs: each indexed pack exists and its own table agrees with the index;
//! with `read_data`, every blob is decompressed and re-hashed and the pack re-hashed against
//! its key.
//!
//! Owns the pack reads of a verify run. Must not modify the store.

use std::collections::BTreeMap;

use futures::StreamExt;

use crate::backend::{BackendExt, ObjectMeta};
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{self, BlobEntry};
use crate::id::{ChunkId, IdMap, PackId};
use crate::progress::DynProgress;
use crate::store::{READ_CONCURRENCY, Store};

use super::{VerifyOptions, VerifyReport, in_subset};

/// Checks each indexed pack exists and agrees with the index; with `read_data`, re-hashes it all.
pub(super) async fn check_pack_tables(
    store: &Store,
    packs: &IdMap<PackId, ObjectMeta>,
    by_pack: &BTreeMap<PackId, Vec<BlobEntry>>,
    opts: VerifyOptions,
    report: &mut VerifyReport,
    progress: DynProgress,
) {
    let mut targets: Vec<(PackId, u64)> = by_pack
        .keys()
        .filter_map(|id| packs.get(id).map(|m| (*id, m.size)))
        .collect();
    if opts.read_data {
        // Unindexed packs are read too: their damage matters once gc or a writer adopts them.
        targets.extend(
            packs
                .iter()
                .filter(|(id, _)| !by_pack.contains_key(*id))
                .map(|(id, m)| (*id, m.size)),
        );
    }
    if let Some(subset) = opts.subset.filter(|_| opts.read_data) {
        targets.retain(|(id, _)| in_subset(id, subset));
    }
    progress.set_total(if opts.read_data {
        targets.iter().map(|t| t.1).sum()
    } else {
        targets.len() as u64
    });
    let results: Vec<_> = futures::stream::iter(targets.into_iter().map(|(id, size)| {
        let progress = progress.clone();
        async move {
            let r = check_pack(store, id, size, opts.read_data).await;
            progress.advance(if opts.read_data { size } else { 1 });
            (id, r)
        }
    }))
    .buffer_unordered(READ_CONCURRENCY / 2)
    .collect()
    .await;
    for (id, result) in results {
        let key = layout::pack_key(&id);
        match result {
            Err(e) => report.error(&key, e.to_string()),
            Ok(checked) => {
                if let Some(indexed) = by_pack.get(&id) {
                    if *indexed != checked.table {
                        report.error(&key, "pack table differs from what the index object says");
                    }
                }
                report.packs_read += opts.read_data as usize;
                report.blobs_checked += checked.blobs_checked;
                for (chunk, why) in checked.bad_blobs {
                    report.error(&key, format!("chunk {chunk}: {why}"));
                }
            }
        }
    }
}

struct PackCheck {
    table: Vec<BlobEntry>,
    blobs_checked: usize,
    bad_blobs: Vec<(ChunkId, String)>,
}

/// Reads a pack's table (from its tail) or, with `read_data`, the whole pack.
async fn check_pack(store: &Store, id: PackId, size: u64, read_data: bool) -> Result<PackCheck> {
    if !read_data {
        return Ok(PackCheck {
            table: store.read_pack_table(id, size).await?,
            blobs_checked: 0,
            bad_blobs: Vec::new(),
        });
    }
    let key = layout::pack_key(&id);
    let corrupt = move |e| Error::corrupt(layout::pack_key(&id), e);
    let bytes = store
        .backend()
        .get_bytes(&key, crate::format::config::MAX_PACK_TARGET * 2)
        .await?;
    tokio::task::spawn_blocking(move || {
        let table = pack::decode_pack_table(&bytes).map_err(corrupt)?;
        let (offsets, _) = pack::offsets(&table);
        let mut bad = Vec::new();
        for (e, off) in table.iter().zip(offsets) {
            let data = &bytes[off as usize..(off + e.stored_len as u64) as usize];
            if let Err(why) = pack::check_blob(e, data) {
                bad.push((e.chunk, why.reason));
            }
        }
        // A damaged blob is named above; damage elsewhere (the table's own bytes are checksummed)
        // still shows as a hash mismatch.
        if bad.is_empty() && PackId::of(&bytes) != id {
            return Err(corrupt(crate::DecodeError::new(
                "pack",
                "content does not hash to its key",
            )));
        }
        Ok(PackCheck {
            blobs_checked: table.len(),
            table,
            bad_blobs: bad,
        })
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("verify worker failed: {e}")))?
}
