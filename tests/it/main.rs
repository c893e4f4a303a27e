//! The server's integration tests (one binary): the HTTP interface, real
//! clients, the catalog on disk, and SQL behaviour as sqllogictest files.

mod catalog;
mod clients;
mod http;
mod slt;
mod topology;
