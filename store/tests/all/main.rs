//! Integration tests of `sojourn-store`: one binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod keyed;
mod keyfile;
mod memfile;
mod model;
mod roundtrip;
mod tamper;
