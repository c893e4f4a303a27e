//! The query crate's integration tests (one binary).

mod formats;
mod http;
mod statements;
