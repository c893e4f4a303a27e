//! The single-node server: a catalog of databases and tables on disk, the
//! statement executor, background merges, and the ClickHouse HTTP interface.

mod catalog;
pub mod cluster;
pub mod config;
mod ddl;
mod execute;
mod front;
pub mod http;
mod insert;
pub mod metering;
mod mutations;
mod numbers;
mod params;
pub mod query_log;
pub mod session;
pub mod settings;
mod system;
mod system_replication;

pub use catalog::Server;
pub use execute::QueryOutput;
pub use session::QueryContext;
