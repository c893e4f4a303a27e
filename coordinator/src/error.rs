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
