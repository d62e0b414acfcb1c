//! Training the store's compression dictionary (format-spec 5.1) while it has none: a
//! writer's checkpoints add their new chunks to one sample (small checkpoints add up); the
//! checkpoint that fills it claims the training, and the others compress without a dictionary
//! instead of training their own. The claim is given back when the training yields nothing or
//! its checkpoint fails before the dictionary is durable, so that a later checkpoint can train.
//!
//! Owns the sample, the claim and the writer's choice of dictionary. Must not upload anything
//! (the packer sends the dictionary ahead of the packs that use it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;
use crate::format::dict::{self, DictId, Dictionary};
use crate::store::Store;

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

/// Where a checkpoint claims the right to train the store's dictionary, and the dictionary the
/// writer compresses with once it knows one.
#[derive(Clone, Default)]
pub(crate) struct TrainingRight {
    claimed: Arc<AtomicBool>,
    known: Arc<OnceLock<Arc<Dictionary>>>,
    /// New chunks of the writer's checkpoints, gathered until they fill a sample: a fleet's
    /// checkpoints are mostly far smaller than one.
    samples: Arc<Mutex<Samples>>,
}

impl TrainingRight {
    /// The claim, unless another checkpoint of the writer holds (or held) it.
    pub(crate) fn claim(&self) -> Option<Claim> {
        self.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| Claim {
                right: Some(self.clone()),
                trained: None,
            })
    }

    /// Adds new chunks to the writer's sample, unless it knows a dictionary already. Once the
    /// sample is full, returns it with the claim to train it; while another checkpoint holds
    /// the claim, the full sample waits for the next try.
    pub(crate) fn sample<'a>(
        &self,
        new: impl Iterator<Item = &'a [u8]>,
    ) -> Option<(Samples, Claim)> {
        if self.known.get().is_some() {
            return None;
        }
        let mut sample = self.samples.lock().expect("samples lock");
        if !sample.add(new) {
            return None;
        }
        let claim = self.claim()?;
        Some((std::mem::take(&mut *sample), claim))
    }

    /// The dictionary to compress with ([`Store::load_dictionaries`]). Once one is known, no
    /// checkpoint lists `dicts/` again: a dictionary another writer trains meanwhile changes
    /// nothing, since each blob names the dictionary that decodes it (format-spec 5.1).
    pub(crate) async fn dictionary(&self, store: &Store) -> Result<Option<Arc<Dictionary>>> {
        if let Some(d) = self.known.get() {
            return Ok(Some(d.clone()));
        }
        Ok(store.load_dictionaries().await?.map(|d| self.know(d)))
    }

    /// Records `d` as the writer's dictionary (the first one recorded stays) and returns it; the
    /// sample's memory goes, since nothing more is trained.
    fn know(&self, d: Arc<Dictionary>) -> Arc<Dictionary> {
        let d = self.known.get_or_init(|| d).clone();
        *self.samples.lock().expect("samples lock") = Samples::default();
        d
    }
}

/// A held training claim: given back when dropped, unless [`Claim::keep`] says the dictionary
/// it trained is durable.
pub(crate) struct Claim {
    right: Option<TrainingRight>,
    trained: Option<DictId>,
}

impl Claim {
    /// Names the dictionary this claim trained.
    pub(crate) fn trained(&mut self, id: DictId) {
        self.trained = Some(id);
    }

    /// The dictionary is in the store: no checkpoint of this writer trains another, and the
    /// writer compresses with it from now on.
    pub(crate) fn keep(mut self) {
        if let Some(right) = self.right.take() {
            if let Some(d) = self.trained.as_ref().and_then(dict::get) {
                right.know(d);
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(right) = self.right.take() {
            right.claimed.store(false, Ordering::Release);
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
    fn checkpoints_fill_one_sample_and_the_one_that_fills_it_claims() {
        let right = TrainingRight::default();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..dict::TRAIN_BYTES >> 20 {
            assert!(right.clone().sample(std::iter::once(&chunk[..])).is_none());
        }
        // While another checkpoint holds the claim, the full sample waits.
        let held = right.claim().expect("free");
        assert!(right.sample(std::iter::once(&chunk[..])).is_none());
        drop(held);
        let (full, claim) = right.sample(std::iter::once(&chunk[..])).expect("full");
        assert_eq!(full.data.len(), dict::TRAIN_BYTES);
        assert!(right.claim().is_none(), "claimed by the filler");
        drop(claim);
        // The next chunks start a new sample.
        assert!(right.sample(std::iter::once(&chunk[..])).is_none());
        assert_eq!(right.samples.lock().unwrap().data.len(), 1 << 20);
    }

    #[test]
    fn a_kept_claim_makes_its_dictionary_known_and_ends_sampling() {
        let right = TrainingRight::default();
        let chunk = vec![7u8; 1 << 20];
        assert!(right.sample(std::iter::once(&chunk[..])).is_none());
        let d = Arc::new(Dictionary::new(DictId::of(b"test"), vec![1u8; 4096]).expect("dict"));
        let id = d.id;
        let mut claim = right.claim().expect("free");
        claim.trained(id);
        assert!(dict::register(d));
        claim.keep();
        assert_eq!(right.known.get().map(|d| d.id), Some(id));
        assert!(
            right.samples.lock().unwrap().data.is_empty(),
            "sample freed"
        );
        assert!(right.sample(std::iter::once(&chunk[..])).is_none());
        assert!(
            right.samples.lock().unwrap().data.is_empty(),
            "no more sampling"
        );
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
