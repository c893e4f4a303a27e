//! Tables as the statement executor sees them: [`TableEngine`] is the
//! interface a table offers (insert, read, merge, mutate); [`LocalTable`] is the
//! single-node implementation over the storage engine. The replicated table
//! (issue 5) implements the same interface through Raft.

mod local;
mod provider;
mod replicated;

use std::sync::Arc;

use arrow::array::RecordBatch;
use storage::Part;
use storage::mutation::MutationCommand;

pub use local::LocalTable;
pub use provider::EngineProvider;
pub use replicated::ReplicatedTable;

use crate::error::QueryError;
use crate::parse::CreateTable;

/// `OPTIMIZE TABLE` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptimizeOptions {
    /// A partition id; `None` is every partition.
    pub partition_id: Option<String>,
    pub final_: bool,
    pub deduplicate: bool,
    pub cleanup: bool,
}

/// How an insert is deduplicated (`insert_deduplicate`,
/// `insert_deduplication_token`); the table's window decides whether at all.
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
}

impl Default for InsertOptions {
    fn default() -> Self {
        InsertOptions { deduplicate: true, token: None, index: 0, quorum: "0".into(), quorum_timeout_ms: 600_000 }
    }
}

/// A merge in progress (`system.merges`).
#[derive(Debug, Clone)]
pub struct MergeInfo {
    pub partition_id: String,
    pub result_part_name: String,
    pub source_part_names: Vec<String>,
    pub is_mutation: bool,
    pub total_size_bytes_compressed: u64,
    pub total_rows: u64,
    pub started: std::time::Instant,
}

/// A mutation (`system.mutations`).
#[derive(Debug, Clone)]
pub struct MutationInfo {
    pub mutation_id: String,
    /// The commands, as ClickHouse shows them (`UPDATE … WHERE …`).
    pub command: String,
    pub create_time: i64,
    pub block_number: i64,
    pub parts_to_do: u64,
    pub is_done: bool,
    pub latest_fail_reason: String,
}

/// What a table offers the statement executor.
pub trait TableEngine: Send + Sync + std::fmt::Debug {
    /// The parsed CREATE statement the table was made with.
    fn create(&self) -> &CreateTable;
    /// The compiled storage definition.
    fn storage(&self) -> &Arc<storage::Table>;
    /// Inserts a block; returns the rows written (0 when the block was a
    /// duplicate inside the deduplication window).
    fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize, QueryError>;
    /// The active parts, for reads.
    fn snapshot(&self) -> Vec<Arc<Part>>;
    /// Runs one background merge if the selector finds one; true if it merged.
    fn merge_step(&self) -> Result<bool, QueryError>;
    /// `OPTIMIZE TABLE`.
    fn optimize(&self, opts: &OptimizeOptions) -> Result<(), QueryError>;
    /// Runs a mutation to completion; returns its version.
    fn mutate(&self, commands: Vec<MutationCommand>, text: &str) -> Result<i64, QueryError>;
    /// `ALTER TABLE … DROP PARTITION`.
    fn drop_partition(&self, partition_id: &str) -> Result<(), QueryError>;
    /// `TRUNCATE TABLE`.
    fn truncate(&self) -> Result<(), QueryError>;
    /// Stops or restarts background merges.
    fn set_merges_stopped(&self, stopped: bool);
    /// Deletes outdated parts whose grace period is over.
    fn cleanup(&self) -> Result<(), QueryError>;
    /// Outdated parts still on disk (`system.parts` with `active = 0`).
    fn outdated(&self) -> Vec<Arc<Part>>;
    /// Merges running now.
    fn merges(&self) -> Vec<MergeInfo>;
    /// Every mutation the table has recorded, oldest first.
    fn mutations(&self) -> Vec<MutationInfo>;
    /// Waits until this node's copy reflects every write committed before
    /// the call (`select_sequential_consistency = 1`); a local table always does.
    fn read_barrier(&self) -> futures::future::BoxFuture<'_, Result<(), QueryError>> {
        Box::pin(async { Ok(()) })
    }
    /// Waits until this node's copy holds every insert this node
    /// acknowledged (read-your-writes on one node); every read of the
    /// table's parts calls it first. A local table always does.
    fn read_your_writes(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Refuses a read of parts known to be wrong: a replica that found its
    /// parts no longer hold what its log committed stops serving them.
    fn check_readable(&self) -> Result<(), QueryError> {
        Ok(())
    }
}

/// Marks a query that must read through a read barrier, as a DataFusion
/// session-config extension seen by table scans.
#[derive(Debug, Default)]
pub struct SequentialConsistency;
