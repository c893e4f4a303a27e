//! The single-node server: a catalog of databases and tables on disk, the
//! statement executor, background merges, and the ClickHouse HTTP interface.

mod catalog;
mod execute;
pub mod http;
mod system;

pub use catalog::Server;
pub use execute::QueryOutput;
