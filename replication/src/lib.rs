//! Replication: every partition-shard is a Raft group (openraft) whose log
//! carries insert, merge, mutation and drop commands; part bytes travel beside
//! the log (staged before the proposal, or inline in the entry for a small
//! block; fetched by replicas that lack them). No openraft type leaves this
//! crate (`.ci/layering.py` checks it): what others see of a group is
//! [`status::GroupStatus`].
//!
//! * [`command`] — the log entries and their outcomes, and (`command::inline`)
//!   the codec of a small part riding inside its `Insert`;
//! * [`log_store`] — one RocksDB per node shared by every group, with group commit;
//! * [`replica`] — the applied state of one group over the storage engine:
//!   state and persistence, applying entries (and the block-count
//!   invariant), snapshots, serving parts to peers and cleanup;
//! * `merge_exec` / [`mutation_exec`] / [`merge_jobs`] — merges and part
//!   rewrites running in the background on every replica;
//! * `merge_assign` — the leader's merge and mutation assignment, OPTIMIZE;
//! * [`state_machine`] — openraft's state machine and snapshots around a replica;
//! * [`fetch`] — part bytes from peers: what a command lacks, and merge results
//!   a peer makes (the replica reports what it needs and does no network I/O);
//! * [`transport`] — one tonic service per node multiplexing every group;
//! * [`registry`] — the node: groups created on demand and removed; the
//!   write path (`write_path`: proposals, forwarding, inserts with quorum;
//!   `group_commit`, `forward`) and the read path (`read_path`: read
//!   barriers, read-your-writes, waiting for replicas);
//! * [`meta_group`] — the cluster's metadata group (the catalog's log):
//!   at most five voters, every other node a learner, opaque entries applied
//!   by the layer above;
//! * `hibernate` — quiescing idle groups; [`checkpoint`] — writing inline
//!   parts out; [`dedup`] — the deduplication window; [`status`].

pub mod checkpoint;
pub mod command;
pub mod dedup;
pub mod error;
pub mod fetch;
mod forward;
mod group_commit;
mod hibernate;
pub mod log_store;
mod merge_assign;
mod merge_exec;
pub mod merge_jobs;
pub mod meta_group;
pub mod mutation_exec;
mod read_path;
pub mod registry;
pub mod replica;
pub mod runtime;
pub mod staging;
pub mod state_machine;
pub mod status;
pub mod transport;
mod write_path;

pub use storage;

pub use command::{Command, Response};
pub use error::{ReplicationError, Result};
pub use registry::{GroupSpec, NodeConfig, ReplicationNode, TableResolver};

/// A Raft group's id: unique in the cluster.
pub type GroupId = u64;
/// A node's id: unique in the cluster.
pub type NodeId = u64;

use std::io::Cursor;

openraft::declare_raft_types!(
    /// The one Raft type configuration of every group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        AsyncRuntime = runtime::GridRuntime,
);

/// A running Raft group.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error for our types.
pub type StorageError = openraft::StorageError<NodeId>;
