//! Benchmark support: the deterministic "hits-like" events table of
//! `../shared/bench/README.md`, and measurement helpers.

pub mod hits;
pub mod measure;
