//! Tables as the statement executor sees them: [`TableEngine`] is the
//! interface every engine offers. [`LocalEngine`] is the one-node MergeTree
//! (storage's `local` engine, its work kept off async runtimes);
//! [`ReplicatedTable`] puts each partition in a Raft group. The Distributed
//! engine (issue 19) implements the same trait over shards.
//!
//! The trait is async: an engine's calls may be network round trips (Raft
//! proposals, a Distributed table's remote shards) and never block a
//! runtime thread. The two background calls (`merge_step`, `cleanup`) are
//! the exception: the server calls them on its merge thread, never on a
//! runtime worker, and they may block.

pub mod distributed;
mod local;
mod replicated;

use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use storage::Part;
use storage::mutation::MutationCommand;

pub use local::LocalEngine;
pub use replicated::{ReplicatedTable, ShardPlacement};
pub use storage::local::{MergeInfo, MutationInfo, OptimizeOptions};

use crate::error::Result;

/// How a table is stored: decided once, when its CREATE is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// A MergeTree-family table on this node.
    Local,
    /// `Replicated*MergeTree`: its partitions are Raft groups.
    Replicated,
    /// `Distributed`: no data here; inserts and reads go to a cluster's shards.
    Distributed,
}

/// How an insert is deduplicated (`insert_deduplicate`,
/// `insert_deduplication_token`) and acknowledged (`insert_quorum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertOptions {
    pub deduplicate: bool,
    pub token: Option<String>,
    /// The block's index within its insert (with a token, the id is token + index).
    pub index: usize,
    /// `insert_quorum` of a replicated table: `0` majority commit, `auto`,
    /// `all` or a number of replicas that must have applied the block.
    pub quorum: String,
    pub quorum_timeout_ms: u64,
    /// `insert_distributed_one_random_shard`: a Distributed table without a
    /// sharding key sends each block to one shard.
    pub distributed_one_random_shard: bool,
}

impl Default for InsertOptions {
    fn default() -> Self {
        InsertOptions {
            deduplicate: true,
            token: None,
            index: 0,
            quorum: "0".into(),
            quorum_timeout_ms: 600_000,
            distributed_one_random_shard: false,
        }
    }
}

/// `mutations_sync` (and `lightweight_deletes_sync`): whether a mutation's
/// statement waits for its rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutationSync {
    /// Return once the mutation is recorded (ClickHouse's default).
    Async,
    /// Wait until this replica has rewritten every part.
    ThisReplica,
    /// Wait until every live replica has.
    AllReplicas,
}

impl MutationSync {
    /// The setting's value: 0, 1, or 2 (and above).
    pub fn from_setting(v: u64) -> MutationSync {
        match v {
            0 => MutationSync::Async,
            1 => MutationSync::ThisReplica,
            _ => MutationSync::AllReplicas,
        }
    }
}

/// What a table offers the statement executor.
#[async_trait]
pub trait TableEngine: Send + Sync + std::fmt::Debug {
    /// How the table is stored.
    fn kind(&self) -> EngineKind;
    /// The compiled storage definition.
    fn storage(&self) -> &Arc<storage::Table>;
    /// Inserts a block; returns the rows written (0 when the block was a
    /// duplicate inside the deduplication window).
    async fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize>;
    /// The active parts, for reads.
    fn snapshot(&self) -> Vec<Arc<Part>>;
    /// Runs one background merge if the selector finds one; true if it
    /// merged. Called on the merge thread, never on a runtime worker.
    fn merge_step(&self) -> Result<bool>;
    /// `OPTIMIZE TABLE`.
    async fn optimize(&self, opts: &OptimizeOptions) -> Result<()>;
    /// Records a mutation, whose parts are then rewritten in the
    /// background, and waits for it as `sync` says.
    async fn mutate(&self, commands: Vec<MutationCommand>, text: &str, sync: MutationSync) -> Result<()>;
    /// `KILL MUTATION`: stops mutation `id` (parts already rewritten stay
    /// rewritten). False when the table has no such live mutation.
    async fn kill_mutation(&self, id: &str) -> Result<bool>;
    /// `ALTER TABLE … DROP PARTITION`.
    async fn drop_partition(&self, partition_id: &str) -> Result<()>;
    /// `TRUNCATE TABLE`.
    async fn truncate(&self) -> Result<()>;
    /// Stops or restarts background merges.
    fn set_merges_stopped(&self, stopped: bool);
    /// Deletes outdated parts whose grace period is over. Called on the
    /// merge thread, never on a runtime worker.
    fn cleanup(&self) -> Result<()>;
    /// Outdated parts still on disk (`system.parts` with `active = 0`).
    fn outdated(&self) -> Vec<Arc<Part>>;
    /// Merges running now.
    fn merges(&self) -> Vec<MergeInfo>;
    /// The table's live (not killed) mutations, oldest first.
    fn mutations(&self) -> Vec<MutationInfo>;
    /// Waits until this node's copy reflects every write committed before
    /// the call (`select_sequential_consistency = 1`); a local table always does.
    async fn read_barrier(&self) -> Result<()> {
        Ok(())
    }
    /// Waits until this node's copy holds every insert this node
    /// acknowledged (read-your-writes on one node); every read of the
    /// table's parts calls it first. A local table always does.
    async fn read_your_writes(&self) {}
    /// Refuses a read of parts known to be wrong: a replica that found its
    /// parts no longer hold what its log committed stops serving them.
    fn check_readable(&self) -> Result<()> {
        Ok(())
    }
    /// The Distributed table this is, if it is one (its reads go to shards).
    fn distributed(&self) -> Option<&distributed::DistributedTable> {
        None
    }
}
