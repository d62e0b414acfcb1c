//! Loading a store's compression dictionaries (`dicts/`) into the process-wide table that blob
//! decoding consults, and choosing the one writers compress with.
//!
//! Owns reading dictionary objects: bounded, hash-checked, decoded. Must not train or write
//! dictionaries (the writer does) nor decode blobs (`format::pack`).

use std::sync::Arc;

use crate::backend::BackendExt;
use crate::error::{Error, Result};
use crate::format::dict::{self, DictId, Dictionary};
use crate::format::{envelope, layout};
use crate::store::Store;

impl Store {
    /// Loads every dictionary the store holds that this process has not loaded yet, and returns
    /// the one writers use: the smallest id listed (several exist only when writers trained
    /// concurrently; any of them decodes its own blobs). `None` for a store without any.
    pub async fn load_dictionaries(&self) -> Result<Option<Arc<Dictionary>>> {
        let mut ids: Vec<DictId> = self
            .list(&layout::prefix(layout::DICTS))
            .await?
            .iter()
            .filter_map(|m| layout::parse_dict_key(&m.key))
            .collect();
        ids.sort();
        for id in &ids {
            if dict::get(id).is_none() {
                self.load_dictionary(id).await?;
            }
        }
        Ok(ids.first().and_then(dict::get))
    }

    /// Reads, checks and registers dictionary `id`.
    pub async fn load_dictionary(&self, id: &DictId) -> Result<Arc<Dictionary>> {
        let key = layout::dict_key(id);
        let max = (dict::MAX_DICT_LEN + envelope::OVERHEAD) as u64;
        let bytes = self.backend().get_bytes(&key, max).await?;
        let body = dict::decode(id, &bytes).map_err(|e| Error::corrupt(&key, e))?;
        let d = Dictionary::new(*id, body).ok_or_else(|| {
            Error::corrupt(
                &key,
                crate::DecodeError::new("dictionary", "zstd cannot load it"),
            )
        })?;
        let d = Arc::new(d);
        if !dict::register(d.clone()) {
            return Err(Error::InvalidInput(format!(
                "{key}: more than {} dictionaries loaded in one process",
                dict::MAX_LOADED
            )));
        }
        Ok(d)
    }
}
