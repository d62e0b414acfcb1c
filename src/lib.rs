//! layercas: a content-addressed, deduplicating archive store for pageserver timelines.
pub mod backend;
pub mod id;
