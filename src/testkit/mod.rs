//! Test and demo support, compiled only with the `testkit` feature (which casctl, the tests and
//! the benchmarks enable): a realistic sample workdir generator, the backend conformance suite
//! and an in-memory backend for fast unit tests. The fault-injection layer lives with the other layers in
//! [`crate::backend::layers::fault`], under the same feature.
//!
//! Nothing here is used by the library itself; a pageserver linking layercas without the
//! feature does not compile it.

pub mod conformance;
pub mod manifests;
pub mod memory;
pub mod sample;
