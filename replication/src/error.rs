//! Errors of the replication layer; the query layer maps them to ClickHouse codes.

use crate::NodeId;

/// What went wrong replicating or applying a command.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("RocksDB error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Corrupted replication state: {0}")]
    Corrupted(String),
    /// Fewer replicas are reachable than the write needs (ClickHouse's TOO_FEW_LIVE_REPLICAS).
    #[error("Number of alive replicas ({alive}) is less than requested quorum ({needed})")]
    TooFewLiveReplicas { alive: usize, needed: usize },
    /// The outcome of a write is not known: it may or may not have committed
    /// (ClickHouse's UNKNOWN_STATUS_OF_INSERT). Retrying it is safe.
    #[error("Unknown status of insert: {0}")]
    UnknownStatus(String),
    #[error("No leader for group {group}: {reason}")]
    NoLeader { group: u64, reason: String },
    #[error("Node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("Node {node} has no part {part} nor one covering it")]
    PartNotFound { node: NodeId, part: String },
    #[error("Group {0} does not exist on this node")]
    NoSuchGroup(u64),
    #[error("Table {0} does not exist on this node")]
    NoSuchTable(String),
    #[error("Raft error: {0}")]
    Raft(String),
    #[error("Node is shutting down")]
    ShuttingDown,
    /// A metadata (catalog) entry was not committed or applied in time: no
    /// quorum of the catalog group's voters. Whether it will still commit
    /// is unknown (ClickHouse's distributed DDL timeout).
    #[error("Catalog change not done within {seconds} s: {reason}")]
    MetaTimeout { seconds: u64, reason: String },
    /// A group's queue of blocks waiting to commit is full (it cannot commit
    /// as fast as blocks arrive, or has no quorum): retry later.
    #[error("Too many bytes ({bytes}) of inserts wait to commit in group {group} (limit {limit}): retry later")]
    QueueFull { group: u64, bytes: usize, limit: usize },
    /// A replica's parts no longer hold what its log committed: the group
    /// stopped on this node rather than serve wrong rows (ClickHouse's
    /// LOGICAL_ERROR).
    #[error("Replica invariant violated: {0}")]
    InvariantViolated(String),
}

/// Results of this crate.
pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

impl ReplicationError {
    /// Whether applying a log entry failed because of the entry itself, so
    /// that every replica, on every retry, fails the same way.
    pub fn deterministic_apply_error(&self) -> bool {
        matches!(
            self,
            ReplicationError::Storage(storage::StorageError::BadPartName(_)) | ReplicationError::Corrupted(_)
        )
    }

    /// A copy for each of several waiters on one failed operation (a group
    /// commit). Variants holding foreign errors keep their message and, for
    /// I/O, the error kind (a full disk stays a full disk).
    pub(crate) fn duplicate(&self) -> Self {
        use ReplicationError as E;
        match self {
            E::Corrupted(s) => E::Corrupted(s.clone()),
            E::TooFewLiveReplicas { alive, needed } => E::TooFewLiveReplicas { alive: *alive, needed: *needed },
            E::UnknownStatus(s) => E::UnknownStatus(s.clone()),
            E::NoLeader { group, reason } => E::NoLeader { group: *group, reason: reason.clone() },
            E::Unreachable { node, reason } => E::Unreachable { node: *node, reason: reason.clone() },
            E::PartNotFound { node, part } => E::PartNotFound { node: *node, part: part.clone() },
            E::NoSuchGroup(g) => E::NoSuchGroup(*g),
            E::NoSuchTable(t) => E::NoSuchTable(t.clone()),
            E::Raft(s) => E::Raft(s.clone()),
            E::ShuttingDown => E::ShuttingDown,
            E::MetaTimeout { seconds, reason } => E::MetaTimeout { seconds: *seconds, reason: reason.clone() },
            E::QueueFull { group, bytes, limit } => E::QueueFull { group: *group, bytes: *bytes, limit: *limit },
            E::InvariantViolated(s) => E::InvariantViolated(s.clone()),
            E::Io { path, source } => {
                E::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            E::Storage(storage::StorageError::Io { path, source }) => E::Storage(storage::StorageError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            }),
            E::Storage(e) => E::Raft(e.to_string()),
            E::Rocks(e) => E::Rocks(e.clone()),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ReplicationError::Io { path: path.to_path_buf(), source }
    }
}
