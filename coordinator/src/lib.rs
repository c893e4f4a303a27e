//! Coordinator: the cluster — its configuration and this node's identity
//! ([`config`]) and where groups' replicas live ([`placement`]). Issue 18
//! moves the catalog and the table engines over groups here next; the
//! catalog group and the Distributed engine (issue 19) follow.

pub mod config;
pub mod placement;

pub use replication;
