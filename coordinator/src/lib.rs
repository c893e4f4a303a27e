//! Coordinator: the cluster and the tables over it.
//!
//! * [`config`] — the cluster's configuration and this node's identity;
//! * [`placement`] — where a group's replicas live;
//! * [`topology`] — logical clusters of weighted shards (`remote_servers`),
//!   the slot rule a Distributed insert routes by, and the `{shard}` /
//!   `{replica}` macros;
//! * [`cluster`] — this node's replication node, started on first use;
//! * [`catalog`] — databases and table definitions behind the [`catalog::Catalog`]
//!   trait (on disk today; a Raft group next, issue 19);
//! * [`ddl_log`] — `ON CLUSTER` statements through the metadata Raft group:
//!   every host of the cluster runs each one in log order;
//! * [`engine`] — the async [`engine::TableEngine`] interface and the engines:
//!   one-node MergeTree, and `ReplicatedMergeTree` over Raft groups (the
//!   Distributed engine goes here next).
//!
//! Below it: `replication` (Raft groups) and `storage` (parts). Above it:
//! `query` (SQL) and the server. No openraft type is used here: what the
//! groups show comes as `replication::status` values.

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod ddl_log;
pub mod engine;
pub mod error;
pub mod placement;
pub mod remote;
pub mod topology;

pub use error::EngineError;
pub use replication;
