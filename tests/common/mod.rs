//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod s3server;
