//! The storage crate's integration tests (one binary: each links the whole stack).

mod common;
mod engines;
mod merges;
mod mutations;
mod parts;
mod scans;
