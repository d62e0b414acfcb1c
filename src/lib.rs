//! layercas: a content-addressed, deduplicating archive store for pageserver timelines.
pub mod backend;
pub mod envelope;
pub mod error;
pub mod id;
pub mod metadata;
pub mod sample;

pub use error::{DecodeError, Error, Result};
