//! The on-store format: how every object is encoded and decoded, and which key holds it.
//!
//! Pure encoding: no I/O, no backend calls, no policy. Every decoder is total (bounded lengths,
//! checked hashes, typed errors, never a panic) because its input comes from a store; these are
//! the functions the fuzzers target. `format-spec/README.md` is the normative description.

mod blob;
pub(crate) mod chunker;
pub mod config;
pub mod delta;
pub mod dict;
pub(crate) mod envelope;
pub mod gc_seal;
pub mod gc_state;
pub mod index;
pub mod intent;
pub mod layout;
pub mod manifest;
pub mod manifest_cache;
pub mod metadata;
pub mod pack;
#[cfg(all(test, feature = "testkit"))]
mod rejects;
