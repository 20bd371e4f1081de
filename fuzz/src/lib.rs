//! The fuzz targets' work, one module per target, each a `run` that takes the fuzzer's bytes
//! and returns `Err` naming a broken promise (a panic is a finding too). The targets in
//! `fuzz_targets/` call these, and the main crate's `cargo test` (`tests/fuzz_corpus.rs`)
//! includes this file to replay the seed corpora in `corpus/<target>/`. Only the public API
//! of `imt-gateway` is used.

pub mod frames;
pub mod input;
pub mod outbox;
pub mod roundtrip;
pub mod session;
