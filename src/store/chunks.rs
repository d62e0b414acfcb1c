//! Reading one chunk by its manifest reference: its blob, and for a delta its base's blob too
//! (format-spec 5.2). For callers that check chunks one at a time (tests, spot checks); a restore
//! plans coalesced reads instead (`restore::reads`).
//!
//! Owns single-chunk reads. Must not plan or batch reads.

use crate::error::{Error, Result};
use crate::format::manifest::ChunkRef;
use crate::format::pack::{self, Compression};
use crate::format::{delta, layout};
use crate::id::ChunkId;
use crate::store::Store;
use crate::store::chunk_index::ChunkIndex;

impl Store {
    /// The raw bytes of the whole blob `index` places under `id`, checked.
    pub async fn read_whole(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Vec<u8>> {
        let (loc, data) = self.read_blob(index, id).await?;
        if loc.compression == Compression::Delta {
            return Err(Error::Integrity(format!("{id} is indexed as a delta blob")));
        }
        let key = layout::pack_key(&loc.pack);
        pack::decode_blob(&loc.entry(*id), &data).map_err(|e| Error::corrupt(key, e))
    }

    /// The raw bytes of the chunk `r` references, checked against its id (through its base when
    /// it is stored as a delta).
    pub async fn read_chunk(&self, index: &ChunkIndex, r: &ChunkRef) -> Result<Vec<u8>> {
        let Some(base) = r.base else {
            return self.read_whole(index, &r.id).await;
        };
        let base_raw = self.read_whole(index, &base).await?;
        let blob = r.blob_id();
        let (loc, data) = self.read_blob(index, &blob).await?;
        let key = layout::pack_key(&loc.pack);
        delta::decode_delta_blob(&loc.entry(blob), &data, &r.id, &base, &base_raw)
            .map_err(|e| Error::corrupt(key, e))
    }

    async fn read_blob(
        &self,
        index: &ChunkIndex,
        id: &ChunkId,
    ) -> Result<(crate::store::chunk_index::Location, bytes::Bytes)> {
        let loc = index
            .get(id)
            .ok_or_else(|| Error::Integrity(format!("blob {id} is in no index object")))?;
        let key = layout::pack_key(&loc.pack);
        let range = loc.offset..loc.offset + loc.stored_len as u64;
        Ok((loc, self.backend().get_range(&key, range).await?))
    }
}
