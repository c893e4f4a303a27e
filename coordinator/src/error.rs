//! Errors of the table engines and the cluster, with the ClickHouse code
//! each maps to at the protocol boundary ([`EngineError::code`]).

use replication::ReplicationError;
use storage::StorageError;

/// What a table engine or the cluster can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("Setting {setting} cannot take the value '{value}'")]
    BadSetting { setting: String, value: String },
    #[error("insert_quorum = {0}")]
    BadQuorum(String),
    #[error("bad cluster configuration: {0}")]
    BadConfig(String),
    #[error(
        "Exception happened during execution of mutation '{id}' with part '{part}' reason: '{reason}'. \
         The mutation is retried in the background until it succeeds or KILL MUTATION stops it"
    )]
    MutationFailed { id: String, part: String, reason: String },
    #[error("Mutation {id} was killed")]
    MutationKilled { id: String },
    #[error("Cannot read with select_sequential_consistency = 1: {0}")]
    NotInQuorum(String),
    #[error("This replica stopped serving the table: invariant violated: {0}")]
    Broken(String),
    /// A task the engine ran its work on failed (panicked or was cancelled).
    #[error("engine task failed: {0}")]
    Task(String),
    /// A shard's replica refused a Distributed table's statement.
    #[error("Shard {shard}: {message}")]
    Shard { shard: usize, code: u32, message: String },
    /// No replica of a shard could be reached.
    #[error("All connection tries failed for shard {shard} of cluster {cluster}: {tried}")]
    ShardUnreachable { shard: usize, cluster: String, tried: String },
    #[error(
        "Method write is not supported by storage Distributed with more than one shard and no sharding key \
         provided (cluster {cluster}; set insert_distributed_one_random_shard = 1 to pick one per block)"
    )]
    NoShardingKey { cluster: String },
    #[error("{0} is not supported")]
    NotSupported(String),
}

/// A name that lives as long as the process: the few distinct error names
/// other nodes answer with are kept once each.
fn static_name(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

impl EngineError {
    /// ClickHouse's error code and name for this error.
    pub fn code(&self) -> (u32, &'static str) {
        match self {
            EngineError::Storage(s) => s.code(),
            EngineError::Replication(r) => replication_code(r),
            EngineError::BadSetting { .. } | EngineError::BadConfig(_) => (36, "BAD_ARGUMENTS"),
            EngineError::BadQuorum(_) => (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
            EngineError::MutationFailed { .. } | EngineError::MutationKilled { .. } => (341, "UNFINISHED"),
            EngineError::NotInQuorum(_) => (289, "REPLICA_IS_NOT_IN_QUORUM"),
            EngineError::Broken(_) | EngineError::Task(_) => (49, "LOGICAL_ERROR"),
            // The shard's own code; its name is in its message's tail.
            EngineError::Shard { code, message, .. } => {
                let name = message
                    .rsplit_once('(')
                    .and_then(|(_, n)| n.strip_suffix(')'))
                    .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                    .unwrap_or("UNKNOWN_EXCEPTION");
                (*code, static_name(name.to_string()))
            }
            EngineError::ShardUnreachable { .. } => (279, "ALL_CONNECTION_TRIES_FAILED"),
            EngineError::NoShardingKey { .. } => (55, "STORAGE_REQUIRES_PARAMETER"),
            EngineError::NotSupported(_) => (48, "NOT_IMPLEMENTED"),
        }
    }
}

/// ClickHouse's code for a replication error.
fn replication_code(e: &ReplicationError) -> (u32, &'static str) {
    match e {
        ReplicationError::Storage(s) => s.code(),
        ReplicationError::TooFewLiveReplicas { .. } | ReplicationError::NoLeader { .. } => {
            (285, "TOO_FEW_LIVE_REPLICAS")
        }
        ReplicationError::UnknownStatus(_) => (319, "UNKNOWN_STATUS_OF_INSERT"),
        // ClickHouse's distributed DDL timeout.
        ReplicationError::MetaTimeout { .. } => (159, "TIMEOUT_EXCEEDED"),
        ReplicationError::NoSuchTable(_) => (60, "UNKNOWN_TABLE"),
        ReplicationError::Unreachable { .. } => (210, "NETWORK_ERROR"),
        ReplicationError::QueueFull { .. } => (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
        ReplicationError::InvariantViolated(_) => (49, "LOGICAL_ERROR"),
        ReplicationError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) =>
        {
            (243, "NOT_ENOUGH_SPACE")
        }
        _ => (1002, "UNKNOWN_EXCEPTION"),
    }
}

/// Results of the engines.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
