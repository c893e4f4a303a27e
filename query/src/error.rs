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

/// A DataFusion error as a ClickHouse-coded error.
pub fn df(e: datafusion::error::DataFusionError) -> QueryError {
    // Our own errors raised inside DataFusion (a table scan) keep their code.
    if let Some(q) = find_query_error(&e) {
        return q;
    }
    let (code, name) = classify(&e);
    QueryError { code, name, message: e.strip_backtrace() }
}

/// ClickHouse's code for a DataFusion error, by its variant (and the
/// Arrow error inside). Unknown tables and functions are plain `Plan`
/// errors in DataFusion, told apart by the fixed start of their message.
fn classify(e: &datafusion::error::DataFusionError) -> (u32, &'static str) {
    use arrow::error::ArrowError;
    use datafusion::common::SchemaError;
    use datafusion::error::DataFusionError as E;
    match e {
        E::SQL(..) => (62, "SYNTAX_ERROR"),
        E::SchemaError(s, _) if matches!(**s, SchemaError::FieldNotFound { .. }) => (47, "UNKNOWN_IDENTIFIER"),
        E::SchemaError(s, _) if matches!(**s, SchemaError::AmbiguousReference { .. }) => (207, "AMBIGUOUS_IDENTIFIER"),
        E::ResourcesExhausted(_) => (241, "MEMORY_LIMIT_EXCEEDED"),
        E::ArrowError(a, _) => match **a {
            ArrowError::DivideByZero => (153, "ILLEGAL_DIVISION"),
            ArrowError::CastError(_) | ArrowError::ParseError(_) => (6, "CANNOT_PARSE_TEXT"),
            ArrowError::ArithmeticOverflow(_) => (69, "ARGUMENT_OUT_OF_BOUND"),
            _ => (1002, "UNKNOWN_EXCEPTION"),
        },
        E::Plan(m) if m.starts_with("Invalid function") => (46, "UNKNOWN_FUNCTION"),
        E::Plan(m) if m.starts_with("table '") && m.ends_with("not found") => (60, "UNKNOWN_TABLE"),
        E::Plan(m) if m.starts_with("table function '") => (46, "UNKNOWN_FUNCTION"),
        E::Context(_, inner) | E::Diagnostic(_, inner) => classify(inner),
        E::Shared(inner) => classify(inner),
        E::Collection(all) => all.first().map_or((1002, "UNKNOWN_EXCEPTION"), classify),
        _ => (1002, "UNKNOWN_EXCEPTION"),
    }
}

fn find_query_error(e: &datafusion::error::DataFusionError) -> Option<QueryError> {
    match e {
        datafusion::error::DataFusionError::External(b) => b.downcast_ref::<QueryError>().cloned(),
        datafusion::error::DataFusionError::Context(_, inner) => find_query_error(inner),
        datafusion::error::DataFusionError::Shared(inner) => find_query_error(inner),
        _ => None,
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        df(e)
    }
}

#[cfg(test)]
mod classify_tests {
    use datafusion::error::DataFusionError as E;

    use super::classify;

    /// Issue 18: errors were classified by words anywhere in the message
    /// (a column named `table_not_found` made an UNKNOWN_TABLE).
    #[test]
    fn regression_errors_map_by_variant_not_by_words_in_the_message() {
        assert_eq!(classify(&E::Execution("table x not found in column names".into())).1, "UNKNOWN_EXCEPTION");
        assert_eq!(classify(&E::Plan("table 'db.t' not found".into())).1, "UNKNOWN_TABLE");
        let wrapped = E::Context("planning".into(), Box::new(E::Plan("Invalid function 'nope'".into())));
        assert_eq!(classify(&wrapped).1, "UNKNOWN_FUNCTION");
        let div = E::ArrowError(Box::new(arrow::error::ArrowError::DivideByZero), None);
        assert_eq!(classify(&div), (153, "ILLEGAL_DIVISION"));
        assert_eq!(classify(&E::ResourcesExhausted("x".into())).0, 241);
    }
}
