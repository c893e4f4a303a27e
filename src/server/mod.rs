//! The server: the tables this node serves (`catalog`: the coordinator's
//! catalog opened into engines and registered with DataFusion; `ddl`), the
//! statement executor (`execute`, `insert`, `mutations`), background merges,
//! the ClickHouse HTTP interface (`http`, `front`), system tables (`system`,
//! `system_replication`), the query log and the configuration file.

mod admission;
mod catalog;
pub mod config;
mod ddl;
mod execute;
mod front;
pub mod http;
mod insert;
mod mutations;
mod on_cluster;
pub mod query_log;
mod system;
mod system_cluster;
mod system_replication;

pub use catalog::Server;
pub use execute::QueryOutput;
pub use query::session::QueryContext;
