//! Reading a pack's own table from its tail (two ranged reads), for callers that need to know
//! what a pack holds without an index object: verify, and gc when it must not delete a pack
//! whose chunks no index names.
//!
//! Owns the tail read and its bounds checks. Must not read blobs.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{self, BlobEntry};
use crate::id::PackId;
use crate::store::Store;

impl Store {
    /// The table of pack `id` of `size` bytes (as listed), checked against the space before it.
    pub async fn read_pack_table(&self, id: PackId, size: u64) -> Result<Vec<BlobEntry>> {
        let key = layout::pack_key(&id);
        let corrupt = move |e| Error::corrupt(layout::pack_key(&id), e);
        if size < pack::TRAILER_LEN as u64 {
            return Err(corrupt(crate::DecodeError::new(
                "pack",
                format!("{size} bytes is too short"),
            )));
        }
        let table_end = size - pack::TRAILER_LEN as u64;
        let trailer = self.backend().get_range(&key, table_end..size).await?;
        let table_len = pack::table_len_from_trailer(&trailer).map_err(corrupt)? as u64;
        let start = table_end.checked_sub(table_len).ok_or_else(|| {
            corrupt(crate::DecodeError::new(
                "pack",
                format!("table length {table_len} exceeds the pack"),
            ))
        })?;
        let table = self.backend().get_range(&key, start..table_end).await?;
        let entries = pack::decode_table(&table).map_err(corrupt)?;
        pack::check_blobs_fill(&entries, start).map_err(corrupt)?;
        Ok(entries)
    }
}
