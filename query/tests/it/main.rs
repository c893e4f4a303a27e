//! The query crate's integration tests (one binary).

mod catalog;
mod clients;
mod formats;
mod http;
mod slt;
mod statements;
