//! shardhouse: the server (the ClickHouse HTTP interface over the query
//! layer, the catalog, system tables, the query log, the configuration
//! file) and the client (`shardhouse client`, `shardhouse benchmark`,
//! `INFILE`). `main.rs` only parses arguments.

pub mod client;
pub mod server;
