//! Training the store's compression dictionary (format-spec 5.1) while it has none: each
//! checkpoint samples its new chunks; the first of a writer's checkpoints whose sample is full
//! claims the training, and the others compress without a dictionary instead of training their
//! own. The claim is given back when the training yields nothing or its checkpoint fails before
//! the dictionary is durable, so that a later checkpoint can train.
//!
//! Owns the sample and the claim. Must not upload anything (the packer sends the dictionary
//! ahead of the packs that use it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::dict::{self, DictId};

/// New chunks gathered for training a dictionary.
#[derive(Default)]
pub(crate) struct Samples {
    data: Vec<u8>,
    sizes: Vec<usize>,
}

impl Samples {
    /// Adds chunks while they fit in [`dict::TRAIN_BYTES`]; true once one did not (the sample
    /// is full).
    pub(crate) fn add<'a>(&mut self, chunks: impl Iterator<Item = &'a [u8]>) -> bool {
        for c in chunks {
            if self.data.len() + c.len() > dict::TRAIN_BYTES {
                return true;
            }
            self.data.extend_from_slice(c);
            self.sizes.push(c.len());
        }
        false
    }

    /// Trains the dictionary; returns its object and an encoder (registered for decoding too).
    pub(crate) fn train(self, level: i32) -> Option<(Vec<u8>, dict::Encoder)> {
        let trained = dict::train_continuous(&self.data, &self.sizes, dict::DEFAULT_DICT_LEN)?;
        let object = dict::encode(&trained);
        let d = Arc::new(dict::Dictionary::new(DictId::of(&object), trained)?);
        let encoder = dict::Encoder::new(&d, level)?;
        dict::register(d).then_some((object, encoder))
    }
}

/// Where a checkpoint claims the right to train the store's dictionary.
#[derive(Clone, Default)]
pub(crate) struct TrainingRight(Arc<AtomicBool>);

impl TrainingRight {
    /// The claim, unless another checkpoint of the writer holds (or held) it.
    pub(crate) fn claim(&self) -> Option<Claim> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| Claim(Some(self.0.clone())))
    }
}

/// A held training claim: given back when dropped, unless [`Claim::keep`] says the dictionary
/// it trained is durable.
pub(crate) struct Claim(Option<Arc<AtomicBool>>);

impl Claim {
    /// The dictionary is in the store: no checkpoint of this writer trains another.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_given_back_unless_kept() {
        let right = TrainingRight::default();
        let first = right.claim().expect("free");
        assert!(right.claim().is_none(), "held");
        drop(first);
        let second = right.claim().expect("given back on drop");
        second.keep();
        assert!(right.clone().claim().is_none(), "kept for good");
    }

    #[test]
    fn a_sample_is_full_once_a_chunk_does_not_fit() {
        let mut s = Samples::default();
        let chunk = vec![7u8; 1 << 20];
        let fits = dict::TRAIN_BYTES >> 20;
        assert!(!s.add(std::iter::repeat_n(&chunk[..], fits)));
        assert!(s.add(std::iter::once(&chunk[..])));
    }
}
