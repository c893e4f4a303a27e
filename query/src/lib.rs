//! Query: the ClickHouse SQL dialect, DataFusion integration and the front ends.
//!
//! So far: [`parse`], shardhouse's own statement-level parser for the DDL and
//! administrative statements sqlparser's ClickHouse dialect rejects, with
//! ClickHouse's data types mapped onto Arrow. SELECT and INSERT bodies are
//! handed to sqlparser / DataFusion (issue 4).

pub mod client;
pub mod cpu;
pub mod error;
pub mod format;
pub mod parse;
pub mod plan;
pub mod server;
pub mod table;

pub use coordinator;
pub use error::QueryError;
