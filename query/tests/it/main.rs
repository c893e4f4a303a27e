//! The query crate's integration tests (one binary): statements as parsed
//! and formats as read and written.

mod formats;
mod statements;
