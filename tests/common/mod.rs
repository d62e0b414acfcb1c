//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part of it

#[cfg(feature = "s3")]
pub mod s3server;
