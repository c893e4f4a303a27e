//! Query: the ClickHouse SQL dialect over DataFusion, the table engines and,
//! until issue 18 moves them to the root package, the front ends.
//!
//! * [`parse`] — shardhouse's own parser for DDL and administrative
//!   statements (sqlparser's ClickHouse dialect rejects many), and
//!   ClickHouse's data types mapped onto Arrow; SELECT bodies go to
//!   sqlparser / DataFusion.
//! * [`plan`] — ClickHouse functions and aggregates on DataFusion, and the
//!   fast aggregation paths.
//! * [`format`] — every input and output format.
//! * [`table`] — the `TableEngine` interface: `LocalTable` (one node) and
//!   `ReplicatedTable` (Raft groups), and the DataFusion table provider.
//! * [`server`] — the catalog on disk, statement execution, the HTTP
//!   interface, settings and sessions, system tables, the query log.
//! * [`client`] — `shardhouse client` and `shardhouse benchmark`.

pub mod client;
pub mod error;
pub mod format;
pub mod parse;
pub mod plan;
pub mod server;
pub mod table;

pub use coordinator;
pub use error::QueryError;
