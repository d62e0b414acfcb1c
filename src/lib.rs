//! layercas: a content-addressed, deduplicating archive store for pageserver timelines.
pub mod backend;
pub mod chunker;
pub mod config;
pub mod envelope;
pub mod error;
pub mod id;
pub mod index;
pub mod inspect;
pub mod ingest;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod pack;
pub mod progress;
pub mod restore;
pub mod store;
pub mod verify;

pub use error::{DecodeError, Error, Result};
