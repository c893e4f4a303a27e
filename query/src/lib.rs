//! Query: the ClickHouse SQL dialect over DataFusion.
//!
//! * [`parse`] — shardhouse's own parser for DDL and administrative
//!   statements (sqlparser's ClickHouse dialect rejects many), and
//!   ClickHouse's data types mapped onto Arrow; SELECT bodies go to
//!   sqlparser / DataFusion.
//! * [`plan`] — ClickHouse functions and aggregates on DataFusion, the fast
//!   aggregation paths, the `numbers` table function.
//! * [`format`] — every input and output format.
//! * [`table`] — a table as the executor sees it (its CREATE statement and
//!   its `coordinator` engine) and the DataFusion table provider.
//! * [`settings`], [`session`], [`params`] — query settings, sessions and
//!   `{name:Type}` parameters; [`metering`] — a query's CPU, rows and memory.
//!
//! No HTTP and no CLI: the server and the client live in the root package.

pub mod error;
pub mod format;
pub mod metering;
pub mod params;
pub mod parse;
pub mod plan;
pub mod session;
pub mod settings;
pub mod table;

pub use coordinator;
pub use error::QueryError;
