//! The server: a catalog of databases and tables on disk (`catalog`, `ddl`),
//! the statement executor (`execute`, `insert`, `mutations`), background
//! merges, the cluster's replication node (`cluster`), the ClickHouse HTTP
//! interface (`http`, `front`), settings and sessions, system tables
//! (`system`, `system_replication`) and the query log.

mod catalog;
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
