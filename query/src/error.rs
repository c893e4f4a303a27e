//! Errors of the query layer with their stable ClickHouse codes, printed the
//! way ClickHouse prints them: `Code: N. DB::Exception: message (NAME)`.

/// A query-layer error with a ClickHouse error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Code: {code}. DB::Exception: {message} ({name})")]
pub struct QueryError {
    pub code: u32,
    pub name: &'static str,
    pub message: String,
}

impl QueryError {
    fn new(code: u32, name: &'static str, message: impl Into<String>) -> Self {
        QueryError { code, name, message: message.into() }
    }

    /// `SYNTAX_ERROR` (62).
    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(62, "SYNTAX_ERROR", message)
    }

    /// `UNKNOWN_TYPE` (50).
    pub fn unknown_type(name: &str) -> Self {
        Self::new(50, "UNKNOWN_TYPE", format!("Unknown data type family: {name}"))
    }

    /// `UNKNOWN_STORAGE` (56).
    pub fn unknown_engine(name: &str) -> Self {
        Self::new(56, "UNKNOWN_STORAGE", format!("Unknown table engine {name}"))
    }

    /// `UNKNOWN_SETTING` (115).
    pub fn unknown_setting(name: &str) -> Self {
        Self::new(115, "UNKNOWN_SETTING", format!("Unknown setting '{name}'"))
    }

    /// `BAD_ARGUMENTS` (36).
    pub fn bad_arguments(message: impl Into<String>) -> Self {
        Self::new(36, "BAD_ARGUMENTS", message)
    }

    /// `NUMBER_OF_ARGUMENTS_DOESNT_MATCH` (42).
    pub fn arguments(message: impl Into<String>) -> Self {
        Self::new(42, "NUMBER_OF_ARGUMENTS_DOESNT_MATCH", message)
    }

    /// An error from a table engine or the cluster, with its code.
    pub fn engine(e: &coordinator::EngineError) -> Self {
        let (code, name) = e.code();
        Self::new(code, name, e.to_string())
    }

    /// An error from the storage engine, with its code.
    pub fn storage(e: &storage::StorageError) -> Self {
        let (code, name) = e.code();
        Self::new(code, name, e.to_string())
    }
}

impl From<coordinator::EngineError> for QueryError {
    fn from(e: coordinator::EngineError) -> Self {
        QueryError::engine(&e)
    }
}

impl From<coordinator::replication::ReplicationError> for QueryError {
    fn from(e: coordinator::replication::ReplicationError) -> Self {
        QueryError::engine(&coordinator::EngineError::Replication(e))
    }
}
