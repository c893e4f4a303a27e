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

/// A mutation (`system.mutations`), as this replica sees it.
#[derive(Debug, Clone, Default)]
pub struct MutationInfo {
    pub mutation_id: String,
    /// The commands, as ClickHouse shows them (`UPDATE … WHERE …`).
    pub command: String,
    pub create_time: i64,
    pub block_number: i64,
    /// Parts this replica still has to rewrite.
    pub parts_to_do_names: Vec<String>,
    pub parts_to_do: u64,
    pub is_done: bool,
    /// The part whose rewrite failed last, when, and why (empty: none).
    pub latest_failed_part: String,
    pub latest_fail_time: i64,
    pub latest_fail_reason: String,
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

/// The error a waiting mutation statement gets when a part's rewrite failed
/// (ClickHouse's UNFINISHED, 341).
pub(crate) fn mutation_failed(id: &str, info: &MutationInfo) -> QueryError {
    QueryError {
        code: 341,
        name: "UNFINISHED",
        message: format!(
            "Exception happened during execution of mutation '{id}' with part '{}' reason: '{}'. \
             The mutation is retried in the background until it succeeds or KILL MUTATION stops it",
            info.latest_failed_part, info.latest_fail_reason
        ),
    }
}

/// The error a waiting mutation statement gets when the mutation was killed.
pub(crate) fn mutation_killed(id: &str) -> QueryError {
    QueryError { code: 341, name: "UNFINISHED", message: format!("Mutation {id} was killed") }
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
    /// Records a mutation, whose parts are then rewritten in the
    /// background, and waits for it as `sync` says.
    fn mutate(&self, commands: Vec<MutationCommand>, text: &str, sync: MutationSync) -> Result<(), QueryError>;
    /// `KILL MUTATION`: stops mutation `id` (parts already rewritten stay
    /// rewritten). False when the table has no such live mutation.
    fn kill_mutation(&self, id: &str) -> Result<bool, QueryError>;
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
    /// The table's live (not killed) mutations, oldest first.
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
